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
)

// tmuxSession drives a program in a detached tmux session on a private server socket, as a person at a
// terminal would: it types keys and reads the screen.
type tmuxSession struct {
	t      *testing.T
	socket string
	name   string
}

func (s *tmuxSession) tmux(args ...string) (string, error) {
	out, err := exec.Command("tmux", append([]string{"-L", s.socket}, args...)...).CombinedOutput()
	return string(out), err
}

// send types keys (tmux key names such as Enter or C-c are understood).
func (s *tmuxSession) send(keys ...string) {
	s.t.Helper()
	if out, err := s.tmux(append([]string{"send-keys", "-t", s.name}, keys...)...); err != nil {
		s.t.Fatalf("tmux send-keys %q: %v: %s", keys, err, out)
	}
}

// typeLine types text literally and presses Enter.
func (s *tmuxSession) typeLine(text string) {
	s.t.Helper()
	if out, err := s.tmux("send-keys", "-t", s.name, "-l", text); err != nil {
		s.t.Fatalf("tmux send-keys %q: %v: %s", text, err, out)
	}
	s.send("Enter")
}

// screen is the visible pane plus its scrollback.
func (s *tmuxSession) screen() string {
	out, _ := s.tmux("capture-pane", "-p", "-J", "-S", "-2000", "-t", s.name)
	return out
}

// waitFor waits until the screen holds want n times in all, and returns the screen.
func (s *tmuxSession) waitFor(want string, n int, timeout time.Duration) string {
	s.t.Helper()
	deadline := time.Now().Add(timeout)
	for {
		scr := s.screen()
		if strings.Count(scr, want) >= n {
			return scr
		}
		if time.Now().After(deadline) {
			s.t.Fatalf("waited %s for %q (×%d); the screen shows:\n%s", timeout, want, n, scr)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func buildAgent(t *testing.T) string {
	t.Helper()
	bin := filepath.Join(t.TempDir(), "agent")
	cmd := exec.Command("go", "build", "-o", bin, ".")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	return bin
}

// TestREPLInTmux runs the real binary on a generated model in a terminal: start, /help, a raw question,
// /model (list and switch), Ctrl-C during an answer, /quit.
func TestREPLInTmux(t *testing.T) {
	if _, err := exec.LookPath("tmux"); err != nil {
		t.Fatal("tmux is not installed; this test drives the REPL in a terminal. Install it (apt-get install tmux; ./build.sh tools does it in the build root)")
	}
	model := testmodels.Path(t, "qwen3moe-q8_0")
	bin := buildAgent(t)

	home := t.TempDir()
	cfgDir := filepath.Join(home, "config", "expertsniper")
	if err := os.MkdirAll(cfgDir, 0o755); err != nil {
		t.Fatal(err)
	}
	cfg := map[string]any{
		"models": map[string]any{
			"tiny":      map[string]any{"path": model, "mode": "ram", "context": 2048},
			"tiny-long": map[string]any{"path": model, "mode": "ram", "context": 4096, "cache_type_k": "q8_0"},
		},
	}
	data, _ := json.Marshal(cfg)
	if err := os.WriteFile(filepath.Join(cfgDir, "config.json"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	work := filepath.Join(home, "work")
	os.MkdirAll(work, 0o755)

	s := &tmuxSession{t: t, socket: fmt.Sprintf("es-repl-test-%d", os.Getpid()), name: "repl"}
	t.Cleanup(func() { s.tmux("kill-server") })
	shell := fmt.Sprintf("cd %q && env HOME=%q XDG_CONFIG_HOME=%q XDG_DATA_HOME=%q XDG_STATE_HOME=%q NO_COLOR=1 %q -m tiny -c 2048 --cache-type-k q4_0 --cache-type-v q4_0 --temp 0 --max-tokens 100000 --no-shell",
		work, home, filepath.Join(home, "config"), filepath.Join(home, "data"), filepath.Join(home, "state"), bin)
	if out, err := s.tmux("new-session", "-d", "-s", s.name, "-x", "160", "-y", "50", shell); err != nil {
		t.Fatalf("tmux new-session: %v: %s", err, out)
	}
	s.tmux("set-option", "-t", s.name, "remain-on-exit", "on")

	// Start: the model loads, the KV cache report shows what q4_0 saves, the prompt appears.
	scr := s.waitFor("agent@tiny>", 1, 60*time.Second)
	if !strings.Contains(scr, "KV cache") || !strings.Contains(scr, "(q4_0/q4_0") || !strings.Contains(scr, "saves") {
		t.Errorf("no KV cache report at start:\n%s", scr)
	}

	s.typeLine("/help")
	s.waitFor("/improve", 1, 10*time.Second)

	s.typeLine("/raw")
	s.waitFor("raw@tiny>", 1, 10*time.Second)
	s.typeLine("Hello, who are you?")
	scr = s.waitFor(" tokens · ", 1, 60*time.Second)
	if !strings.Contains(scr, "[raw]") {
		t.Errorf("the route was not shown:\n%s", scr)
	}

	s.typeLine("/model")
	s.waitFor("tiny-long", 1, 10*time.Second)
	s.typeLine("/model tiny-long")
	s.waitFor("raw@tiny-long>", 1, 60*time.Second)
	scr = s.screen()
	if !strings.Contains(scr, "context 4096") {
		t.Errorf("the switched model does not report its context:\n%s", scr)
	}

	// Ctrl-C while an answer streams stops it, not the program. The answer is limited only by the
	// context (4096 tokens), far more than the tiny model writes before the key arrives.
	s.typeLine("Write a very long story about the sea.")
	s.waitFor("[raw]", 2, 30*time.Second)
	time.Sleep(300 * time.Millisecond)
	if strings.Count(s.screen(), " tokens · ") != 1 {
		t.Fatalf("the answer ended before Ctrl-C could be tested:\n%s", s.screen())
	}
	s.send("C-c")
	scr = s.waitFor("raw@tiny-long>", 2, 30*time.Second)
	if !strings.Contains(scr, "stopped · raw") {
		t.Errorf("Ctrl-C did not stop the answer:\n%s", scr)
	}
	s.typeLine("/stats")
	s.waitFor("session ", 1, 10*time.Second)

	// History keeps whole requests only: not the lines of a multi-line request one by one, and not
	// the answer to a y/N question.
	s.typeLine(`Tell me a long story \`)
	s.typeLine("about the sea and its ships.")
	s.waitFor("[raw]", 3, 30*time.Second)
	time.Sleep(300 * time.Millisecond)
	s.send("C-c")
	s.waitFor("raw@tiny-long>", 3, 30*time.Second)
	s.typeLine("/write story.txt")
	s.waitFor("[y/N]", 1, 10*time.Second)
	s.typeLine("n")
	s.waitFor("raw@tiny-long>", 4, 10*time.Second)

	s.typeLine("/quit")
	deadline := time.Now().Add(15 * time.Second)
	for {
		out, _ := s.tmux("list-panes", "-t", s.name, "-F", "#{pane_dead} #{pane_dead_status}")
		if strings.TrimSpace(out) == "1 0" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("the REPL did not exit with status 0 after /quit (pane: %q):\n%s", out, s.screen())
		}
		time.Sleep(50 * time.Millisecond)
	}
	t.Logf("the screen at the end:\n%s", s.screen())
	history, err := os.ReadFile(filepath.Join(home, "state", "expertsniper", "history"))
	if err != nil {
		t.Fatalf("no line history was kept: %v", err)
	}
	entries := strings.Split(strings.TrimSpace(string(history)), "\n")
	want := []string{"/help", "/raw", "Hello, who are you?", "/model", "/model tiny-long", "Write a very long story about the sea.", "/stats", "/write story.txt", "/quit"}
	if strings.Join(entries, "|") != strings.Join(want, "|") {
		t.Errorf("history:\n%q\nwant:\n%q", entries, want)
	}
}
