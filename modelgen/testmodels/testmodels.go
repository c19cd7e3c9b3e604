// Package testmodels hands tests (and commands) generated GGUF models by name, generating each one
// on first use into a shared cache directory. Several test processes may ask for the same model at
// once: generation happens under a file lock and lands by rename, so nobody sees a partial file.
package testmodels

import (
	"bufio"
	"context"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"sort"
	"strings"
	"testing"

	"github.com/expertsniper/expertsniper/gguf"
	"github.com/expertsniper/expertsniper/modelgen"
)

// Seed is the seed of every test model.
const Seed = 1

// generatorVersion is part of the file names: bump it whenever modelgen's output changes, so caches
// of older models are not used by mistake.
const generatorVersion = 1

// templateModelsVersion is part of WithTemplate's file names: bump it whenever a family's model
// changes (2: gpt-oss's vocabulary has the harmony control tokens).
const templateModelsVersion = 2

// EnvDir names an environment variable that overrides the cache directory.
const EnvDir = "EXPERTSNIPER_TESTMODELS"

// Types lists the type suffixes of the standard test models; K-quants are made by llama-quantize.
var Types = []string{"f32", "f16", "q8_0", "q4_0", "q4_k_m"}

// Names lists every standard test model: each architecture in each type, e.g. "qwen3moe-q8_0".
func Names() []string {
	var out []string
	for _, a := range modelgen.Archs {
		for _, t := range Types {
			out = append(out, a+"-"+t)
		}
	}
	return out
}

// Parse splits a model name into architecture and type ("qwen35moe-q4_k_m" → "qwen35moe", "q4_k_m").
func Parse(name string) (arch, typ string, err error) {
	i := strings.IndexByte(name, '-')
	if i < 0 {
		return "", "", fmt.Errorf("test model name %q is not ARCH-TYPE (e.g. qwen3moe-q8_0)", name)
	}
	arch, typ = name[:i], strings.ToLower(name[i+1:])
	if _, err := modelgen.Tiny(arch); err != nil {
		return "", "", fmt.Errorf("test model %q: %w", name, err)
	}
	if err := modelgen.CheckTypeName(typ); err != nil {
		return "", "", fmt.Errorf("test model %q: %w", name, err)
	}
	return arch, typ, nil
}

// Dir is the cache directory: $EXPERTSNIPER_TESTMODELS, else testdata/models at the repository root
// (found from the working directory), else the user cache directory.
func Dir() (string, error) {
	if d := os.Getenv(EnvDir); d != "" {
		return d, nil
	}
	if root, ok := repoRoot(); ok {
		return filepath.Join(root, "testdata", "models"), nil
	}
	c, err := os.UserCacheDir()
	if err != nil {
		return "", fmt.Errorf("find a directory for test models: %w (set %s)", err, EnvDir)
	}
	return filepath.Join(c, "expertsniper", "testmodels"), nil
}

func repoRoot() (string, bool) {
	dir, err := os.Getwd()
	if err != nil {
		return "", false
	}
	for {
		if f, err := os.Open(filepath.Join(dir, "go.mod")); err == nil {
			sc := bufio.NewScanner(f)
			isOurs := sc.Scan() && strings.TrimSpace(sc.Text()) == "module github.com/expertsniper/expertsniper"
			f.Close()
			if isOurs {
				return dir, true
			}
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return "", false
		}
		dir = parent
	}
}

// FileName is the cache file name of a model.
func FileName(name string) string {
	return fmt.Sprintf("%s.s%d.g%d.gguf", strings.ToLower(name), Seed, generatorVersion)
}

// Ensure returns the path of the named model, generating it first if the cache lacks it.
func Ensure(ctx context.Context, name string) (string, error) {
	arch, typ, err := Parse(name)
	if err != nil {
		return "", err
	}
	dir, err := Dir()
	if err != nil {
		return "", err
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("test model %q: %w", name, err)
	}
	path := filepath.Join(dir, FileName(name))
	if _, err := os.Stat(path); err == nil {
		return path, nil
	}
	unlock, err := lockFile(ctx, path+".lock")
	if err != nil {
		return "", fmt.Errorf("test model %q: %w", name, err)
	}
	defer unlock()
	if _, err := os.Stat(path); err == nil { // another process made it while we waited
		return path, nil
	}

	if modelgen.IsKQuant(typ) {
		base, err := Ensure(ctx, arch+"-f32")
		if err != nil {
			return "", err
		}
		if err := modelgen.Quantize(ctx, base, path, typ, runtime.GOMAXPROCS(0)); err != nil {
			return "", fmt.Errorf("test model %q: %w", name, err)
		}
		return path, nil
	}
	shape, err := modelgen.Tiny(arch)
	if err != nil {
		return "", err
	}
	t, err := gguf.ParseType(typ)
	if err != nil {
		return "", fmt.Errorf("test model %q: %w", name, err)
	}
	if err := modelgen.Write(ctx, path, modelgen.Options{Shape: shape, Type: t, Seed: Seed}); err != nil {
		return "", fmt.Errorf("test model %q: %w", name, err)
	}
	return path, nil
}

// Path returns the path of a generated test model, generating it on first use. It fails the test
// (never skips) if the model cannot be made, e.g. when llama-quantize is missing for a K-quant.
func Path(tb testing.TB, name string) string {
	tb.Helper()
	ctx := context.Background()
	if d, ok := tb.(interface{ Context() context.Context }); ok {
		ctx = d.Context()
	}
	p, err := Ensure(ctx, name)
	if err != nil {
		tb.Fatalf("test model: %v", err)
	}
	return p
}

// All returns the paths of every standard model, sorted by name.
func All(tb testing.TB) map[string]string {
	tb.Helper()
	names := Names()
	sort.Strings(names)
	out := make(map[string]string, len(names))
	for _, n := range names {
		out[n] = Path(tb, n)
	}
	return out
}

// WithTemplate returns the path of a tiny model of arch in type typ whose GGUF carries the chat
// template of family (modelgen.TemplateFamilies), generating it on first use.
func WithTemplate(tb testing.TB, name, family string) string {
	tb.Helper()
	arch, typ, err := Parse(name)
	if err != nil {
		tb.Fatal(err)
	}
	if _, err := modelgen.ChatTemplateOf(family); err != nil {
		tb.Fatal(err)
	}
	dir, err := Dir()
	if err != nil {
		tb.Fatal(err)
	}
	path := filepath.Join(dir, fmt.Sprintf("%s.%s.t%d.gguf", strings.TrimSuffix(FileName(name), ".gguf"), family, templateModelsVersion))
	ctx := context.Background()
	if d, ok := tb.(interface{ Context() context.Context }); ok {
		ctx = d.Context()
	}
	err = func() error {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return err
		}
		if _, err := os.Stat(path); err == nil {
			return nil
		}
		unlock, err := lockFile(ctx, path+".lock")
		if err != nil {
			return err
		}
		defer unlock()
		if _, err := os.Stat(path); err == nil {
			return nil
		}
		shape, err := modelgen.Tiny(arch)
		if err != nil {
			return err
		}
		t, err := gguf.ParseType(typ)
		if err != nil {
			return err
		}
		return modelgen.Write(ctx, path, modelgen.Options{Shape: shape, Type: t, Seed: Seed, ChatTemplate: family})
	}()
	if err != nil {
		tb.Fatalf("test model %s with the %s template: %v", name, family, err)
	}
	return path
}
