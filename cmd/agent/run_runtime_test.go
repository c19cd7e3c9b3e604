package main

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/expertsniper/expertsniper/modelgen/testmodels"
	"github.com/expertsniper/expertsniper/plan"
)

// writeConfig puts config.json where the isolated user directories (isolateUserDirs) look for it.
func writeConfig(t *testing.T, cfg map[string]any) {
	t.Helper()
	dir := filepath.Join(os.Getenv("XDG_CONFIG_HOME"), "expertsniper")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	data, _ := json.Marshal(cfg)
	if err := os.WriteFile(filepath.Join(dir, "config.json"), data, 0o600); err != nil {
		t.Fatal(err)
	}
}

// TestRunResolvesModelsLikeTheREPL: run takes config.json's names and default_model, as the REPL
// and ask do (it used to take only paths, so a shared EXPERTSNIPER_MODEL=NAME broke it), and the
// model's configured mode applies unless a flag says otherwise.
func TestRunResolvesModelsLikeTheREPL(t *testing.T) {
	isolateUserDirs(t)
	model := testmodels.Path(t, "qwen3moe-q8_0")
	writeConfig(t, map[string]any{"models": map[string]any{"tiny": map[string]any{"path": model, "mode": "sniper"}}, "default_model": "tiny"})
	for _, args := range [][]string{
		{"run", "-m", "tiny", "-p", "hi", "-n", "2"},
		{"run", "-p", "hi", "-n", "2"},
	} {
		stdout, stderr, code := runAgentForTest(t, args...)
		if code != exitOK || stdout == "" || !strings.Contains(stderr, "sniper mode") {
			t.Fatalf("agent %s: exit %d\nstdout: %s\nstderr: %s", strings.Join(args, " "), code, stdout, stderr)
		}
	}
	t.Setenv("EXPERTSNIPER_MODEL", "tiny")
	if _, stderr, code := runAgentForTest(t, "run", "-p", "hi", "-n", "2", "--mode", "ram"); code != exitOK || !strings.Contains(stderr, "ram mode") {
		t.Fatalf("EXPERTSNIPER_MODEL=tiny --mode ram: exit %d\n%s", code, stderr)
	}
}

// TestMissingModelIsAUsageErrorEverywhere: the same missing file gives the same exit code (2) in the
// REPL, run, serve and inspect (run used to exit 1 where the REPL exited 2).
func TestMissingModelIsAUsageErrorEverywhere(t *testing.T) {
	isolateUserDirs(t)
	missing := filepath.Join(t.TempDir(), "nope.gguf")
	for _, args := range [][]string{
		{"-m", missing}, {"run", "-m", missing, "-p", "hi"}, {"serve", "-m", missing, "--port", "0"}, {"inspect", missing},
	} {
		if _, stderr, code := runAgentForTest(t, args...); code != exitUsage || !strings.Contains(stderr, "nope.gguf") {
			t.Errorf("agent %s: exit %d, want %d\n%s", strings.Join(args, " "), code, exitUsage, stderr)
		}
	}
}

// TestRunOptionsThatDoNotApplyWarn: a knob that does not apply to the mode that runs is named in a
// warning whichever way the mode was chosen, and the warning shows under -q too; -q silences the
// status lines in every mode alike.
func TestRunOptionsThatDoNotApplyWarn(t *testing.T) {
	isolateUserDirs(t)
	model := testmodels.Path(t, "qwen3moe-q8_0")
	for _, c := range []struct {
		args []string
		want string
	}{
		{[]string{"--ram", "1GiB", "--cache", "64MiB"}, "warning: --cache applies to sniper and stream modes, not to ram mode (auto"},
		{[]string{"--mode", "ram", "--policy", "lru"}, "warning: --policy applies to sniper and stream modes"},
	} {
		args := append([]string{"run", "-q", "-m", model, "-p", "hi", "-n", "2"}, c.args...)
		_, stderr, code := runAgentForTest(t, args...)
		// Under -q the warning is all there is on stderr.
		if got := strings.TrimSpace(stderr); code != exitOK || !strings.HasPrefix(got, c.want) || strings.Contains(got, "\n") {
			t.Errorf("agent %s: exit %d, want only %q on stderr:\n%s", strings.Join(args, " "), code, c.want, stderr)
		}
	}
	for _, mode := range []string{"ram", "sniper"} {
		_, stderr, code := runAgentForTest(t, "run", "-m", model, "-p", "hi", "-n", "2", "--mode", mode)
		if code != exitOK || !strings.Contains(stderr, mode+": prompt ") {
			t.Errorf("--mode %s without -q: exit %d, no summary line:\n%s", mode, code, stderr)
		}
	}
}

// TestRunContextSize: -c applies to a plain run (it used to apply only to --doc): a prompt and -n
// that do not fit are a usage error before anything is generated; going past the trained context
// warns.
func TestRunContextSize(t *testing.T) {
	isolateUserDirs(t)
	model := testmodels.Path(t, "qwen3moe-q8_0")
	_, stderr, code := runAgentForTest(t, "run", "-m", model, "-p", runTestPrompt, "-n", "64", "-c", "32")
	if code != exitUsage || !strings.Contains(stderr, "-c gives 32") {
		t.Fatalf("-c 32: exit %d\n%s", code, stderr)
	}
	if _, stderr, code := runAgentForTest(t, "run", "-m", model, "-p", "hi", "-n", "4", "-c", "64"); code != exitOK {
		t.Fatalf("-c 64: exit %d\n%s", code, stderr)
	}
	train := trainedContext(t, model)
	_, stderr, code = runAgentForTest(t, "run", "-m", model, "-p", "hi", "-n", fmt.Sprint(train), "-q", "--mode", "ram")
	if code != exitOK || !strings.Contains(stderr, fmt.Sprintf("go past the %d tokens the model was trained on", train)) {
		t.Fatalf("-n %d: exit %d, no warning:\n%s", train, code, stderr)
	}
}

func trainedContext(t *testing.T, model string) int {
	t.Helper()
	pm, err := plan.Open(model)
	if err != nil || pm.ContextLength == 0 {
		t.Fatalf("trained context of %s: %d, %v", model, pm.ContextLength, err)
	}
	return pm.ContextLength
}

// TestRunSaysItReadsATerminal: run without -p on a terminal says it is reading the prompt there
// (it used to wait silently), and runs what is typed.
func TestRunSaysItReadsATerminal(t *testing.T) {
	if _, err := exec.LookPath("tmux"); err != nil {
		t.Fatal("tmux is not installed (apt-get install tmux; ./build.sh tools does it in the build root)")
	}
	model := testmodels.Path(t, "qwen3moe-q8_0")
	bin := buildAgent(t)
	home := t.TempDir()
	s := &tmuxSession{t: t, socket: fmt.Sprintf("es-run-tty-%d", os.Getpid()), name: "run"}
	t.Cleanup(func() { s.tmux("kill-server") })
	shell := fmt.Sprintf("env HOME=%q XDG_CONFIG_HOME=%q NO_COLOR=1 %q run -m %q -n 2 --mode ram; echo EXIT=$?; sleep 60",
		home, filepath.Join(home, "config"), bin, model)
	if out, err := s.tmux("new-session", "-d", "-s", s.name, "-x", "160", "-y", "40", shell); err != nil {
		t.Fatalf("tmux new-session: %v: %s", err, out)
	}
	s.waitFor("reading the prompt from the terminal", 1, 2*time.Minute)
	s.typeLine("hello")
	s.send("C-d")
	if scr := s.waitFor("EXIT=", 1, 3*time.Minute); !strings.Contains(scr, "EXIT=0") {
		t.Fatalf("run on a terminal did not finish cleanly:\n%s", scr)
	}
}

// TestRunShowsProgressOnALongPrompt: a long prompt reports its evaluation micro-batch by micro-batch
// (it used to print one line and then nothing until the first token), and evaluating it that way
// changes no logit: the run with progress equals the quiet one, which evaluates it in one call.
func TestRunShowsProgressOnALongPrompt(t *testing.T) {
	isolateUserDirs(t)
	model := testmodels.Path(t, "qwen3moe-q8_0")
	prompt := strings.Repeat("The quick brown fox jumps over the lazy dog. ", 40) // 921 tokens
	dir := t.TempDir()
	withProgress, quiet := filepath.Join(dir, "progress.bin"), filepath.Join(dir, "quiet.bin")
	base := []string{"run", "-m", model, "-p", prompt, "-n", "2", "-c", "4096", "--mode", "sniper", "--cache", "0"}
	_, stderr, code := runAgentForTest(t, append(base, "--logits-out", withProgress)...)
	if code != exitOK || !strings.Contains(stderr, "evaluating the prompt: 512 of 921 tokens done") {
		t.Fatalf("exit %d, want a progress line after the first micro-batch of 512 tokens:\n%s", code, stderr)
	}
	if _, stderr, code := runAgentForTest(t, append(base, "-q", "--logits-out", quiet)...); code != exitOK || strings.Contains(stderr, "of 921 tokens") {
		t.Fatalf("-q: exit %d, want no progress:\n%s", code, stderr)
	}
	a, errA := os.ReadFile(withProgress)
	b, errB := os.ReadFile(quiet)
	if errA != nil || errB != nil || len(a) == 0 || string(a) != string(b) {
		t.Fatalf("logits with progress (%d bytes, %v) differ from the quiet run's (%d bytes, %v)", len(a), errA, len(b), errB)
	}
}
