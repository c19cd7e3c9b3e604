package main

import (
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/expertsniper/expertsniper/modelgen/testmodels"
	"github.com/expertsniper/expertsniper/remote/s3test"
)

// TestREPLConversationTravelsInTmux: /save and /push in one REPL; a fresh REPL with an empty data
// directory lists the remote, pulls, loads, and its next answer reuses the KV state (cached tokens).
func TestREPLConversationTravelsInTmux(t *testing.T) {
	if _, err := exec.LookPath("tmux"); err != nil {
		t.Fatal("tmux is not installed; this test drives the REPL in a terminal. Install it (apt-get install tmux; ./build.sh tools does it in the build root)")
	}
	srv := s3test.Start(t)
	model := testmodels.Path(t, "qwen3moe-q8_0")
	bin := buildAgent(t)

	home := t.TempDir()
	cfgDir := filepath.Join(home, "config", "expertsniper")
	if err := os.MkdirAll(cfgDir, 0o755); err != nil {
		t.Fatal(err)
	}
	// The first machine names the remote in config.json, the second with EXPERTSNIPER_REMOTE.
	cfg := map[string]any{"models": map[string]any{"tiny": map[string]any{"path": model, "mode": "ram", "context": 2048}},
		"remote": "s3://contexts/team"}
	data, _ := json.Marshal(cfg)
	if err := os.WriteFile(filepath.Join(cfgDir, "config.json"), data, 0o644); err != nil {
		t.Fatal(err)
	}
	s := &tmuxSession{t: t, socket: fmt.Sprintf("es-remote-test-%d", os.Getpid())}
	t.Cleanup(func() { s.tmux("kill-server") })
	start := func(name, dataDir, extraEnv string) {
		s.name = name
		shell := fmt.Sprintf("cd %q && env HOME=%q XDG_CONFIG_HOME=%q XDG_DATA_HOME=%q XDG_STATE_HOME=%q NO_COLOR=1 %s %s %q -m tiny --raw --temp 0 --max-tokens 8 --no-shell",
			home, home, filepath.Join(home, "config"), dataDir, filepath.Join(home, "state-"+name), strings.Join(srv.Env(), " "), extraEnv, bin)
		if out, err := s.tmux("new-session", "-d", "-s", name, "-x", "160", "-y", "50", shell); err != nil {
			t.Fatalf("tmux new-session: %v: %s", err, out)
		}
		s.tmux("set-option", "-t", name, "remain-on-exit", "on")
		s.waitFor("raw@tiny>", 1, 60*time.Second)
	}

	start("first", filepath.Join(home, "data-first"), "")
	s.typeLine("Remember the word zebra, please.")
	s.waitFor(" tokens · ", 1, 60*time.Second)
	s.typeLine("/save zebra")
	s.waitFor("saved zebra", 1, 30*time.Second)
	s.typeLine("/push zebra")
	scr := s.waitFor("pushed zebra", 1, 60*time.Second)
	if !strings.Contains(scr, "100% of") {
		t.Errorf("no progress shown for the push:\n%s", scr)
	}
	s.typeLine("/quit")

	// The second machine: nothing saved, the remote given by the environment variable.
	fresh := filepath.Join(home, "data-second")
	os.WriteFile(filepath.Join(cfgDir, "config.json"), []byte(`{"models":{"tiny":{"path":"`+model+`","mode":"ram","context":2048}}}`), 0o644)
	start("second", fresh, "EXPERTSNIPER_REMOTE=s3://contexts/team")
	s.typeLine("/load")
	s.waitFor("no saved conversations yet", 1, 10*time.Second)
	s.typeLine("/ls-remote")
	s.waitFor("zebra ", 1, 30*time.Second)
	s.typeLine("/pull zebra")
	s.waitFor("pulled zebra", 1, 60*time.Second)
	s.typeLine("/load zebra")
	scr = s.waitFor("loaded zebra", 1, 30*time.Second)
	if !regexp.MustCompile(`KV state of \d+ tokens restored`).MatchString(scr) {
		t.Fatalf("the pulled KV state was not restored:\n%s", scr)
	}
	s.typeLine("Which word?")
	scr = s.waitFor(" tokens · ", 1, 60*time.Second)
	if !regexp.MustCompile(`\(\+[1-9]\d* cached\)`).MatchString(scr) {
		t.Fatalf("the answer after /load did not reuse the pulled context:\n%s", scr)
	}
	s.typeLine("/pull nosuch")
	s.waitFor(`no context "nosuch"`, 1, 30*time.Second)
	s.typeLine("/quit")
	t.Logf("the second REPL's screen:\n%s", s.screen())
}

// TestContextCommand: `agent context push|pull|ls|rm` on the server's context directory, and the
// errors a script sees (exit code and message).
func TestContextCommand(t *testing.T) {
	srv := s3test.Start(t)
	bin := buildAgent(t)
	home := t.TempDir()
	run := func(env []string, args ...string) (string, error) {
		cmd := exec.Command(bin, append([]string{"context"}, args...)...)
		cmd.Env = append(append(os.Environ(), "HOME="+home, "XDG_CONFIG_HOME="+filepath.Join(home, "config"),
			"XDG_DATA_HOME="+filepath.Join(home, "data"), "EXPERTSNIPER_REMOTE=s3://contexts/ci"), srv.Env()...)
		cmd.Env = append(cmd.Env, env...)
		out, err := cmd.CombinedOutput()
		return string(out), err
	}
	// A saved context as `agent serve` leaves it.
	dir1, dir2 := t.TempDir(), t.TempDir()
	state := bytes.Repeat([]byte("kv state "), 100000)
	os.WriteFile(filepath.Join(dir1, "doc.state"), state, 0o600)
	os.WriteFile(filepath.Join(dir1, "doc.json"), []byte(`{"name":"doc","model":"m.gguf","model_fingerprint":"sha256:m","prompt":"a document","tokens":3,"state_bytes":900000}`), 0o600)

	if out, err := run(nil, "push", "--context-dir", dir1, "doc"); err != nil || !strings.Contains(out, "pushed doc to s3://contexts/ci/") || !strings.Contains(out, "100% of") {
		t.Fatalf("push: %v\n%s", err, out)
	}
	if out, err := run(nil, "ls"); err != nil || !regexp.MustCompile(`doc\s+3\s+\S+ \S+\s+m\.gguf`).MatchString(out) {
		t.Fatalf("ls: %v\n%s", err, out)
	}
	if out, err := run(nil, "pull", "--context-dir", dir2, "doc"); err != nil || !strings.Contains(out, "pulled doc into") {
		t.Fatalf("pull: %v\n%s", err, out)
	}
	if got, _ := os.ReadFile(filepath.Join(dir2, "doc.state")); !bytes.Equal(got, state) {
		t.Fatal("the pulled state differs from the pushed one")
	}
	var meta map[string]any
	if data, err := os.ReadFile(filepath.Join(dir2, "doc.json")); err != nil || json.Unmarshal(data, &meta) != nil || meta["model_fingerprint"] != "sha256:m" || meta["prompt"] != "a document" {
		t.Fatalf("pulled metadata: %v %v", err, meta)
	}

	for _, c := range []struct {
		env  []string
		args []string
		want string
	}{
		{[]string{"AWS_SECRET_ACCESS_KEY=wrong"}, []string{"ls"}, "refused the credentials"},
		{[]string{"EXPERTSNIPER_REMOTE=s3://no-such-bucket"}, []string{"ls"}, `no bucket "no-such-bucket"`},
		{[]string{"AWS_ENDPOINT_URL=http://127.0.0.1:1"}, []string{"ls"}, "cannot be reached"},
		{nil, []string{"pull", "--context-dir", dir2, "nosuch"}, `no context "nosuch"`},
		{[]string{"EXPERTSNIPER_REMOTE="}, []string{"ls"}, "no remote is configured"},
		{[]string{"EXPERTSNIPER_REMOTE=s3://Bad_Bucket"}, []string{"ls"}, "not a valid S3 bucket name"},
	} {
		out, err := run(c.env, c.args...)
		if err == nil || !strings.Contains(out, c.want) {
			t.Errorf("%v %v: want a failure saying %q; got %v\n%s", c.env, c.args, c.want, err, out)
		}
	}

	if out, err := run(nil, "rm", "doc"); err != nil || !strings.Contains(out, "removed doc") {
		t.Fatalf("rm: %v\n%s", err, out)
	}
	if out, err := run(nil, "ls"); err != nil || strings.Contains(out, "doc") {
		t.Fatalf("ls after rm: %v\n%s", err, out)
	}
}
