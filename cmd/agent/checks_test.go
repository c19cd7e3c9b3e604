package main

import (
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/expertsniper/expertsniper/modelgen/testmodels"
)

// TestOutputPathsAreCheckedBeforeTheWork: an output that cannot be written fails before the model is
// loaded, not after the whole run, and a failed run leaves nothing under the output's name.
func TestOutputPathsAreCheckedBeforeTheWork(t *testing.T) {
	model := testmodels.Path(t, "qwen3moe-q8_0")
	dir := t.TempDir()
	missing := filepath.Join(dir, "no-such-dir", "out.bin")
	for _, flag := range []string{"--logits-out", "--stats-json"} {
		for _, path := range []string{missing, dir} {
			_, errOut, code := runAgentForTest(t, "run", "-m", model, "-p", "Hi", "-n", "4", flag, path)
			if code == exitOK || !strings.Contains(errOut, flag) {
				t.Errorf("run %s %s: exit %d, stderr %q; want an error naming the flag", flag, path, code, errOut)
			}
			if strings.Contains(errOut, "loaded") {
				t.Errorf("run %s %s: the model was loaded before the output was checked:\n%s", flag, path, errOut)
			}
		}
	}
	// A run that fails after its outputs were opened (here the model is missing) leaves no file behind.
	out := filepath.Join(dir, "logits.bin")
	if _, errOut, code := runAgentForTest(t, "run", "-m", filepath.Join(dir, "missing.gguf"), "-p", "Hi", "--logits-out", out); code == exitOK {
		t.Fatalf("run on a missing model succeeded: %s", errOut)
	}
	if names := listDir(t, dir); len(names) != 0 {
		t.Fatalf("a failed run left %q", names)
	}
}

// TestMkmodelRefusesAModelBiggerThanTheDisk: a mistyped --layers must not start a write of terabytes.
func TestMkmodelRefusesAModelBiggerThanTheDisk(t *testing.T) {
	dir := t.TempDir()
	start := time.Now()
	_, errOut, code := runAgentForTest(t, "mkmodel", "--shape", "qwen35-35b-a3b", "--layers", "20000", "--type", "q4_0",
		"-o", filepath.Join(dir, "huge.gguf"))
	if code == exitOK || !strings.Contains(errOut, "needs") || !strings.Contains(errOut, "free") {
		t.Fatalf("exit %d, stderr %q; want a refusal naming the size and the free space", code, errOut)
	}
	if names := listDir(t, dir); len(names) != 0 {
		t.Fatalf("mkmodel left %q", names)
	}
	t.Logf("refused in %s: %s", time.Since(start).Round(time.Millisecond), strings.TrimSpace(errOut))
	if _, err := os.Stat(filepath.Join(dir, "huge.gguf")); err == nil {
		t.Fatal("huge.gguf exists")
	}
}

// TestPullFailsAtOnceOnAnUnusableHub: a mistyped HF_ENDPOINT or a hub that refuses connections is an
// error in well under a second of work, not half a minute of silent retries.
func TestPullFailsAtOnceOnAnUnusableHub(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	refused := "http://" + ln.Addr().String()
	ln.Close()
	for endpoint, want := range map[string]string{
		"127.0.0.1:1": "HF_ENDPOINT \"127.0.0.1:1\" is not an http:// or https:// URL",
		refused:       "connection refused",
	} {
		t.Setenv("HF_ENDPOINT", endpoint)
		t.Setenv("EXPERTSNIPER_MODELS", t.TempDir())
		start := time.Now()
		_, errOut, code := runAgentForTest(t, "pull", "org/Model-GGUF:Q4_0")
		if code != exitError || !strings.Contains(errOut, want) || strings.Contains(errOut, "retrying") {
			t.Errorf("HF_ENDPOINT=%s: exit %d, stderr %q; want %q at once", endpoint, code, errOut, want)
		}
		if el := time.Since(start); el > 20*time.Second {
			t.Errorf("HF_ENDPOINT=%s: took %s", endpoint, el)
		}
	}
}

// TestStreamModeDoesNotTalkAboutExperts: a dense model streamed layer by layer has no experts; the
// load line names what its cache holds.
func TestStreamModeDoesNotTalkAboutExperts(t *testing.T) {
	model := testmodels.Path(t, "qwen3-q8_0")
	_, errOut, code := runAgentForTest(t, "run", "-m", model, "-p", "Hi", "-n", "2", "--mode", "stream", "--cache", "1MiB")
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	if strings.Contains(errOut, "expert cache") || !strings.Contains(errOut, "FFN weight cache") {
		t.Fatalf("stream mode's status:\n%s", errOut)
	}
}

// TestLogitsOutIsCheckedAgainstFreeDisk: --logits-out writes every position's logits; a run whose
// logits cannot fit on the disk is refused before it generates anything.
func TestLogitsOutIsCheckedAgainstFreeDisk(t *testing.T) {
	model := testmodels.Path(t, "qwen3moe-q8_0")
	dir := t.TempDir()
	_, errOut, code := runAgentForTest(t, "run", "-m", model, "-p", "Hi", "-n", "2000000000", "--logits-out", filepath.Join(dir, "l.bin"))
	if code == exitOK || !strings.Contains(errOut, "--logits-out needs") || !strings.Contains(errOut, "free") {
		t.Fatalf("exit %d, stderr %q; want a refusal naming the size and the free space", code, errOut)
	}
	if names := listDir(t, dir); len(names) != 0 {
		t.Fatalf("left %q", names)
	}
}
