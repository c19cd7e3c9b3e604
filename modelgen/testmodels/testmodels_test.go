package testmodels

import (
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"

	"github.com/expertsniper/expertsniper/gguf"
	"github.com/expertsniper/expertsniper/modelgen"
)

// TestConcurrentEnsure asks for one model from several goroutines and several processes at once:
// everyone gets the same complete file and no temporary file is left behind.
func TestConcurrentEnsure(t *testing.T) {
	dir := t.TempDir()
	t.Setenv(EnvDir, dir)
	const name = "qwen3-q8_0"

	var procs []*exec.Cmd
	for i := 0; i < 3; i++ {
		cmd := exec.Command(os.Args[0])
		cmd.Env = append(os.Environ(), "TESTMODELS_HELPER="+name)
		if err := cmd.Start(); err != nil {
			t.Fatal(err)
		}
		procs = append(procs, cmd)
	}
	var wg sync.WaitGroup
	paths := make([]string, 4)
	errs := make([]error, 4)
	for i := range paths {
		wg.Add(1)
		go func() {
			defer wg.Done()
			paths[i], errs[i] = Ensure(context.Background(), name)
		}()
	}
	wg.Wait()
	for _, p := range procs {
		if err := p.Wait(); err != nil {
			t.Errorf("helper process: %v", err)
		}
	}
	for i := range paths {
		if errs[i] != nil {
			t.Fatal(errs[i])
		}
		if paths[i] != paths[0] {
			t.Fatalf("paths differ: %q %q", paths[i], paths[0])
		}
	}
	f, err := gguf.Open(paths[0])
	if err != nil {
		t.Fatal(err)
	}
	if f.Architecture() != "qwen3" {
		t.Fatalf("architecture %q", f.Architecture())
	}
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if strings.Contains(e.Name(), ".tmp") {
			t.Errorf("left behind: %s", e.Name())
		}
	}
	// The cached file is what a fresh generation writes.
	shape, _ := modelgen.Tiny("qwen3")
	fresh := filepath.Join(t.TempDir(), "fresh.gguf")
	if err := modelgen.Write(context.Background(), fresh, modelgen.Options{Shape: shape, Type: gguf.TypeQ8_0, Seed: Seed}); err != nil {
		t.Fatal(err)
	}
	a, _ := os.ReadFile(fresh)
	b, _ := os.ReadFile(paths[0])
	if string(a) != string(b) {
		t.Fatal("cached model differs from a fresh generation")
	}
}

// TestMain doubles as the helper process of TestConcurrentEnsure: with TESTMODELS_HELPER set it
// only ensures that model and exits.
func TestMain(m *testing.M) {
	if name := os.Getenv("TESTMODELS_HELPER"); name != "" {
		if _, err := Ensure(context.Background(), name); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(1)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

func TestKQuantWithoutQuantizerFailsClearly(t *testing.T) {
	t.Setenv(EnvDir, t.TempDir())
	t.Setenv("PATH", t.TempDir())
	_, err := Ensure(context.Background(), "qwen3-q4_k_m")
	if !errors.Is(err, modelgen.ErrNoQuantizer) || !strings.Contains(err.Error(), "llama-quantize") {
		t.Fatalf("want a clear llama-quantize error, got %v", err)
	}
}

func TestParse(t *testing.T) {
	for _, n := range Names() {
		if _, _, err := Parse(n); err != nil {
			t.Errorf("%s: %v", n, err)
		}
	}
	for _, bad := range []string{"qwen3moe", "llama-f32", "qwen3moe-q9_9", ""} {
		if _, _, err := Parse(bad); err == nil {
			t.Errorf("%q accepted", bad)
		}
	}
	if a, typ, err := Parse("qwen35moe-Q4_K_M"); err != nil || a != "qwen35moe" || typ != "q4_k_m" {
		t.Errorf("Parse: %s %s %v", a, typ, err)
	}
}

func TestDirDefaultsToRepo(t *testing.T) {
	t.Setenv(EnvDir, "")
	d, err := Dir()
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasSuffix(d, filepath.Join("testdata", "models")) {
		t.Fatalf("Dir() = %q", d)
	}
	if _, err := os.Stat(filepath.Join(filepath.Dir(filepath.Dir(d)), "go.mod")); err != nil {
		t.Fatalf("Dir() %q is not under the repository root: %v", d, err)
	}
}
