package main

import (
	"bytes"
	"context"
	"io"
	"net/http"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/expertsniper/expertsniper/agentmode/scripted"
	"github.com/expertsniper/expertsniper/engine"
	"github.com/expertsniper/expertsniper/modelgen/testmodels"
)

// syncBuffer is a bytes.Buffer safe for the server's goroutines.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}
func (s *syncBuffer) String() string { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

// withScriptedEngine makes serve load a scripted engine with -np slots instead of a model.
func withScriptedEngine(t *testing.T) *[]*scripted.Engine {
	t.Helper()
	var opened []*scripted.Engine
	var mu sync.Mutex
	prev := serveEngineOpener
	serveEngineOpener = func(ctx context.Context, o *serveOptions) (engine.Engine, error) {
		e := &scripted.Engine{TokenDelay: time.Millisecond, ModelInfo: engine.ModelInfo{Name: filepath.Base(o.Model), Slots: o.Parallel, Mode: "sniper"},
			Reply: func(engine.Request) string { return "a scripted answer with several words" }}
		mu.Lock()
		opened = append(opened, e)
		mu.Unlock()
		return e, nil
	}
	t.Cleanup(func() { serveEngineOpener = prev })
	return &opened
}

// fakeModelFile is a real (generated) model file: serve reads and analyses it before listening, even
// when the scripted engine stands in for llama.cpp.
func fakeModelFile(t *testing.T) string {
	return testmodels.Path(t, "qwen3moe-q8_0")
}

func TestServeRejectsBadFlags(t *testing.T) {
	withScriptedEngine(t)
	model := fakeModelFile(t)
	for _, args := range [][]string{
		{"serve"},
		{"serve", "-m", model, "-np", "0"},
		{"serve", "-m", model, "--cache-type-k", "q9_9"},
		{"serve", "-m", model, "-fa", "sometimes"},
		{"serve", "-m", model, "--mode", "turbo"},
		{"serve", "-m", model, "--ram", "lots"},
		{"serve", "-m", model, "--port", "70000"},
		{"serve", "-m", model, "extra"},
	} {
		var errOut bytes.Buffer
		code := run(context.Background(), append([]string{"agent"}, args...), &IOStreams{In: strings.NewReader(""), Out: io.Discard, ErrOut: &errOut})
		if code != exitUsage {
			t.Errorf("%q: exit %d, want %d (usage); stderr %s", args, code, exitUsage, errOut.String())
		}
	}
	var errOut bytes.Buffer
	code := run(context.Background(), []string{"agent", "serve", "-m", "/nonexistent/model.gguf"}, &IOStreams{Out: io.Discard, ErrOut: &errOut})
	// A model that is not there is a usage error in every command (exit 2, as the REPL's -m).
	if code != exitUsage || !strings.Contains(errOut.String(), "/nonexistent/model.gguf") {
		t.Errorf("missing model: exit %d, stderr %s", code, errOut.String())
	}
}

func TestServeAnswersWithTheKeyAndStopsOnCancel(t *testing.T) {
	opened := withScriptedEngine(t)
	model := fakeModelFile(t)
	errOut := &syncBuffer{}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	exit := make(chan exitCode, 1)
	go func() {
		exit <- run(ctx, []string{"agent", "serve", "-m", model, "--port", "0", "-np", "2", "--api-key", "k",
			"--context-dir", t.TempDir()}, &IOStreams{Out: io.Discard, ErrOut: errOut})
	}()
	addrRE := regexp.MustCompile(`listening on http://(\S+)`)
	var base string
	deadline := time.Now().Add(10 * time.Second)
	for base == "" {
		if m := addrRE.FindStringSubmatch(errOut.String()); m != nil {
			base = "http://" + m[1]
		} else if time.Now().After(deadline) {
			t.Fatalf("serve did not start: %s", errOut.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	for {
		if code, err := httpGet(ctx, base+"/health"); err == nil && code == 200 {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("serve never became healthy: %s", errOut.String())
		}
		time.Sleep(10 * time.Millisecond)
	}
	body := `{"messages":[{"role":"user","content":"hi"}]}`
	resp, err := http.Post(base+"/v1/chat/completions", "application/json", strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != 401 {
		t.Fatalf("without the key: %d", resp.StatusCode)
	}
	req, _ := http.NewRequest("POST", base+"/v1/chat/completions", strings.NewReader(body))
	req.Header.Set("Authorization", "Bearer k")
	req.Header.Set("Content-Type", "application/json")
	resp, err = http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	data, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || !strings.Contains(string(data), "a scripted answer") {
		t.Fatalf("chat: %d %s", resp.StatusCode, data)
	}
	cancel()
	select {
	case code := <-exit:
		if code != exitOK {
			t.Fatalf("exit %d after cancel; stderr %s", code, errOut.String())
		}
	case <-time.After(15 * time.Second):
		t.Fatal("serve did not stop after its context was cancelled")
	}
	if len(*opened) != 1 || !(*opened)[0].Closed() || !strings.Contains(errOut.String(), "server stopped") {
		t.Fatalf("engine not closed or no stop message; stderr %s", errOut.String())
	}
}

func TestServeBenchRunsAgainstAnInProcessServer(t *testing.T) {
	withScriptedEngine(t)
	model := fakeModelFile(t)
	var out, errOut bytes.Buffer
	code := run(context.Background(), []string{"agent", "serve-bench", "-m", model, "--clients", "8", "--requests", "5",
		"--max-tokens", "4"}, &IOStreams{Out: &out, ErrOut: &errOut})
	if code != exitOK {
		t.Fatalf("exit %d: %s%s", code, out.String(), errOut.String())
	}
	if !strings.Contains(out.String(), "ok / failed            40 / 0") || !strings.Contains(out.String(), "server RSS") {
		t.Fatalf("report:\n%s", out.String())
	}
	t.Logf("\n%s", out.String())
}
