package main

import (
	"bytes"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/expertsniper/expertsniper/modelgen/testmodels"
)

// listDir names what is in dir, hidden files included.
func listDir(t *testing.T, dir string) []string {
	t.Helper()
	var names []string
	err := filepath.WalkDir(dir, func(path string, d os.DirEntry, err error) error {
		if err != nil {
			return err
		}
		if !d.IsDir() {
			rel, _ := filepath.Rel(dir, path)
			names = append(names, rel)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return names
}

// TestSignalsEndEveryCommandTheSameWay sends real SIGINT and SIGTERM to the built binary while each
// long command works, and checks the one rule (docs/commands.md): "cancelled" on stderr, exit code
// 130, and nothing left under the output's name or as a hidden temporary file (pull keeps its
// resumable FILE.partial).
func TestSignalsEndEveryCommandTheSameWay(t *testing.T) {
	bin := buildAgent(t)
	model := testmodels.Path(t, "qwen3moe-q8_0")

	// A hub whose file download sends a little and then stalls until the test ends.
	stall := make(chan struct{})
	defer close(stall)
	size := 1 << 20
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/models/org/Slow-GGUF/tree/main", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, `[{"type":"file","path":"Slow-Q8_0.gguf","size":%d,"oid":"%s","lfs":{"oid":"%s","size":%d,"pointerSize":134}}]`,
			size, strings.Repeat("a", 40), strings.Repeat("b", 64), size)
	})
	mux.HandleFunc("GET /org/Slow-GGUF/resolve/main/Slow-Q8_0.gguf", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", fmt.Sprint(size))
		w.Write(make([]byte, 4096))
		w.(http.Flusher).Flush()
		select {
		case <-stall:
		case <-r.Context().Done():
		}
	})
	hub := httptest.NewServer(mux)
	defer hub.Close()

	cases := []struct {
		name string
		args func(dir string) []string
		// ready is printed once the command is well into its work; then the signal is sent.
		ready string
		// readyFile, if set, must exist in dir too before the signal.
		readyFile string
		// kept are the files the command may leave in dir after the signal.
		kept []string
		// signals to test, SIGINT and SIGTERM when nil; openStdin keeps a pipe open on stdin.
		signals   []syscall.Signal
		openStdin bool
	}{
		{name: "run", ready: "loaded", args: func(dir string) []string {
			return []string{"run", "-m", model, "-p", "Once upon a time", "-n", "100000", "--mode", "sniper", "--cache", "0",
				"--logits-out", filepath.Join(dir, "logits.bin"), "--stats-json", filepath.Join(dir, "stats.json")}
		}},
		{name: "mkmodel", ready: "generating", args: func(dir string) []string {
			return []string{"mkmodel", "--shape", "qwen3-30b-a3b", "--layers", "8", "--type", "q4_0", "-o", filepath.Join(dir, "big.gguf")}
		}},
		{name: "pull", ready: "pulling", readyFile: "org/Slow-GGUF/Slow-Q8_0.gguf.partial", kept: []string{"org/Slow-GGUF/Slow-Q8_0.gguf.partial", "org/Slow-GGUF/Slow-Q8_0.gguf.partial.json"},
			args: func(string) []string { return []string{"pull", "org/Slow-GGUF:Q8_0"} }},
		{name: "ask", ready: "page", args: func(dir string) []string {
			doc := filepath.Join(t.TempDir(), "doc.txt")
			if err := os.WriteFile(doc, bytes.Repeat([]byte("The quick brown fox jumps over the lazy dog. "), 4000), 0o644); err != nil {
				t.Fatal(err)
			}
			return []string{"ask", "-m", model, "--doc", doc, "What does the fox do?"}
		}},
		// bench runs each configuration as a child in a memory cgroup: the signal must reach through.
		{name: "bench", ready: "[1/1] ours ram", args: func(string) []string {
			return []string{"bench", "-m", model, "-p", "8", "-n", "20000", "-t", "1", "--configs", "ram", "--caps", "none", "--probe", "200ms"}
		}},
		{name: "rpc-server", ready: "rpc worker on", args: func(string) []string {
			ln, err := net.Listen("tcp", "127.0.0.1:0")
			if err != nil {
				t.Fatal(err)
			}
			port := ln.Addr().(*net.TCPAddr).Port
			ln.Close()
			return []string{"rpc-server", "--port", fmt.Sprint(port), "-t", "1"}
		}},
		// Ctrl-C belongs to the REPL (it stops an answer); SIGTERM ends it, even waiting at the prompt.
		{name: "repl", ready: "type a question", signals: []syscall.Signal{syscall.SIGTERM}, openStdin: true, args: func(string) []string {
			return []string{"-m", model}
		}},
		{name: "serve", ready: "model loaded", args: func(string) []string {
			return []string{"serve", "-m", model, "--port", "0"}
		}},
	}
	for _, tc := range cases {
		signals := tc.signals
		if signals == nil {
			signals = []syscall.Signal{syscall.SIGINT, syscall.SIGTERM}
		}
		for _, sig := range signals {
			t.Run(tc.name+"/"+sig.String(), func(t *testing.T) {
				dir := t.TempDir()
				cmd := exec.Command(bin, tc.args(dir)...)
				cmd.Dir = dir
				cmd.Env = append(os.Environ(), "HF_ENDPOINT="+hub.URL, "EXPERTSNIPER_MODELS="+dir,
					"XDG_CONFIG_HOME="+t.TempDir(), "XDG_STATE_HOME="+t.TempDir(), "XDG_DATA_HOME="+t.TempDir(), "NO_COLOR=1")
				var stdout, stderr syncBuffer
				cmd.Stdout, cmd.Stderr = &stdout, &stderr
				if tc.openStdin {
					stdin, err := cmd.StdinPipe()
					if err != nil {
						t.Fatal(err)
					}
					defer stdin.Close()
				}
				if err := cmd.Start(); err != nil {
					t.Fatal(err)
				}
				deadline := time.Now().Add(3 * time.Minute)
				isReady := func() bool {
					if tc.readyFile != "" {
						if st, err := os.Stat(filepath.Join(dir, tc.readyFile)); err != nil || st.Size() == 0 {
							return false
						}
					}
					return strings.Contains(strings.ToLower(stderr.String()), tc.ready)
				}
				for !isReady() {
					if time.Now().After(deadline) {
						cmd.Process.Kill()
						cmd.Wait()
						t.Fatalf("waited for %q; stderr:\n%s", tc.ready, stderr.String())
					}
					time.Sleep(20 * time.Millisecond)
				}
				time.Sleep(300 * time.Millisecond) // into the work proper
				if err := cmd.Process.Signal(sig); err != nil {
					t.Fatal(err)
				}
				done := make(chan error, 1)
				go func() { done <- cmd.Wait() }()
				select {
				case <-done:
				case <-time.After(2 * time.Minute):
					cmd.Process.Kill()
					<-done
					t.Fatalf("still running 2 minutes after %s; stderr:\n%s", sig, stderr.String())
				}
				if code := cmd.ProcessState.ExitCode(); code != int(exitCancel) {
					t.Errorf("exit code %d, want %d; stderr:\n%s", code, exitCancel, stderr.String())
				}
				if !strings.Contains(stderr.String(), "cancelled") {
					t.Errorf("stderr does not say cancelled:\n%s", stderr.String())
				}
				got := listDir(t, dir)
				if strings.Join(got, ",") != strings.Join(tc.kept, ",") {
					t.Errorf("files left in the output directory: %q, want %q", got, tc.kept)
				}
			})
		}
	}
}
