package isolated

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/expertsniper/expertsniper/engine"
)

// The test binary is also the child: with childEnv set, TestMain serves a fake engine instead of
// running the tests.
const childEnv = "ISOLATED_TEST_CHILD"

func TestMain(m *testing.M) {
	if os.Getenv(childEnv) == "1" {
		conn, err := ChildConn()
		if err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		if err := Serve(fakeEngine{}, conn); err != nil {
			fmt.Fprintln(os.Stderr, err)
			os.Exit(2)
		}
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// fakeEngine echoes the prompt's words as tokens. Prompts starting with "crash" end the process
// mid-completion as llama.cpp's abort would; "full" fails with ErrContextFull; "slow" waits for
// cancellation.
type fakeEngine struct{}

func (fakeEngine) Info() engine.ModelInfo {
	return engine.ModelInfo{Name: "fake.gguf", Mode: "ram", Slots: 2}
}
func (fakeEngine) Tokenize(text string, _, _ bool) ([]int32, error) {
	return make([]int32, len(strings.Fields(text))), nil
}
func (fakeEngine) Detokenize(t []int32) (string, error) { return strings.Repeat("x", len(t)), nil }
func (fakeEngine) ApplyTemplate(m []engine.Message, _ bool) (string, error) {
	return m[len(m)-1].Content, nil
}
func (fakeEngine) Embed(ctx context.Context, text string) ([]float32, error) {
	if path, ok := strings.CutPrefix(text, "slow:"); ok {
		return nil, slowState(ctx, path)
	}
	return nil, engine.ErrNotSupported
}
func (fakeEngine) SaveState(ctx context.Context, _ int, _, path string) (engine.StateInfo, error) {
	return engine.StateInfo{}, slowState(ctx, path)
}
func (fakeEngine) LoadState(ctx context.Context, _ int, path string) (engine.StateInfo, error) {
	return engine.StateInfo{}, slowState(ctx, path)
}
func (fakeEngine) SaveSlot(ctx context.Context, slot int, path string) (engine.StateInfo, error) {
	if strings.HasSuffix(path, ".slow") {
		return engine.StateInfo{}, slowState(ctx, path)
	}
	return engine.StateInfo{Slot: slot}, fmt.Errorf("slot %d: %w", slot, engine.ErrSlotEmpty)
}

// slowState is the state calls' fake work: none for most paths, "no state" for SaveState and
// LoadState; a path ending in ".slow" waits until the call's context ends and then writes
// path+".cancelled", so that the test sees the cancellation reached the child.
func slowState(ctx context.Context, path string) error {
	if !strings.HasSuffix(path, ".slow") {
		return errors.New("no state")
	}
	select {
	case <-ctx.Done():
		if err := os.WriteFile(path+".cancelled", nil, 0o600); err != nil {
			return err
		}
		return ctx.Err()
	case <-time.After(2 * time.Minute):
		return errors.New("the call was never cancelled")
	}
}
func (fakeEngine) EraseSlot(context.Context, int) (int, error) { return 3, nil }
func (fakeEngine) Slots() engine.SlotsReport {
	return engine.SlotsReport{Slots: []engine.SlotState{{ID: 0, Tokens: []int32{1, 2}, Task: 4}}, Queued: 1}
}
func (fakeEngine) Stats() engine.Stats { return engine.Stats{GeneratedTokens: 7} }
func (fakeEngine) Close() error        { return nil }
func (fakeEngine) Complete(ctx context.Context, req engine.Request, on func(engine.Token) error) (engine.Result, error) {
	words := strings.Fields(req.Prompt)
	if len(words) > 0 && words[0] == "full" {
		return engine.Result{}, fmt.Errorf("prompt of 9999 tokens: %w", engine.ErrContextFull)
	}
	var text strings.Builder
	for i, w := range words {
		if w == "crash" && i > 0 {
			fmt.Fprintln(os.Stderr, "ggml-rpc.cpp:123: GGML_ABORT: Remote RPC server crashed or returned malformed response")
			os.Exit(134)
		}
		if w == "slow" {
			<-ctx.Done()
			return engine.Result{}, ctx.Err()
		}
		if err := on(engine.Token{ID: int32(i), Text: w, Slot: 1}); err != nil {
			return engine.Result{}, err
		}
		text.WriteString(w)
	}
	return engine.Result{Text: text.String(), FinishReason: "stop", Slot: 1}, nil
}

func openFake(t *testing.T, diagnose func(context.Context, bool) error) *Engine {
	t.Helper()
	exe, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	e, err := Open(context.Background(), Options{Command: []string{exe}, Env: []string{childEnv + "=1"}, Diagnose: diagnose})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	return e
}

func TestCallsCrossToTheChild(t *testing.T) {
	e := openFake(t, nil)
	if e.Info().Name != "fake.gguf" {
		t.Fatalf("info %+v", e.Info())
	}
	var got []string
	res, err := e.Complete(context.Background(), engine.Request{Prompt: "one two three"}, func(tk engine.Token) error {
		got = append(got, fmt.Sprintf("%s@%d", tk.Text, tk.Slot))
		return nil
	})
	if err != nil || res.Text != "onetwothree" || res.Slot != 1 || strings.Join(got, ",") != "one@1,two@1,three@1" {
		t.Fatalf("complete: %+v %v, tokens %v", res, err, got)
	}
	// The child's engine owns the slots: what it reports, and its slot calls, cross the pipe.
	if r := e.Slots(); r.Queued != 1 || len(r.Slots) != 1 || r.Slots[0].Task != 4 || len(r.Slots[0].Tokens) != 2 {
		t.Fatalf("slots: %+v", r)
	}
	if _, err := e.SaveSlot(context.Background(), 1, "x"); !errors.Is(err, engine.ErrSlotEmpty) {
		t.Fatalf("saving an empty slot must stay ErrSlotEmpty across the pipe: %v", err)
	}
	if n, err := e.EraseSlot(context.Background(), 0); n != 3 || err != nil {
		t.Fatalf("erase: %d %v", n, err)
	}
	if toks, err := e.Tokenize("a b", true, false); err != nil || len(toks) != 2 {
		t.Fatalf("tokenize: %v %v", toks, err)
	}
	if _, err := e.Complete(context.Background(), engine.Request{Prompt: "full"}, func(engine.Token) error { return nil }); !errors.Is(err, engine.ErrContextFull) {
		t.Fatalf("a full context must stay ErrContextFull across the pipe: %v", err)
	}
	if _, err := e.Embed(context.Background(), "x"); !errors.Is(err, engine.ErrNotSupported) || !strings.Contains(err.Error(), "not supported") {
		t.Fatalf("embed: %v", err)
	}
	if e.Stats().GeneratedTokens != 7 {
		t.Fatalf("stats %+v", e.Stats())
	}
	// A caller that goes away stops its completion, and the child serves the next one.
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	if _, err := e.Complete(ctx, engine.Request{Prompt: "a slow one"}, func(engine.Token) error { return nil }); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("cancelled completion: %v", err)
	}
	stop := errors.New("enough")
	if _, err := e.Complete(context.Background(), engine.Request{Prompt: "a b c"}, func(engine.Token) error { return stop }); !errors.Is(err, stop) {
		t.Fatalf("onToken's error: %v", err)
	}
	if res, err := e.Complete(context.Background(), engine.Request{Prompt: "again"}, func(engine.Token) error { return nil }); err != nil || res.Text != "again" {
		t.Fatalf("after cancellations: %+v %v", res, err)
	}
}

// A caller that gives up on a state call (or an embedding) cancels it in the child (the call's work there stops and
// is over when the parent's call returns), and the child serves the next call.
func TestCancellingAStateCallReachesTheChild(t *testing.T) {
	e := openFake(t, nil)
	dir := t.TempDir()
	for name, call := range map[string]func(context.Context, string) error{
		"save state": func(ctx context.Context, p string) error { _, err := e.SaveState(ctx, 0, "prompt", p); return err },
		"load state": func(ctx context.Context, p string) error { _, err := e.LoadState(ctx, 0, p); return err },
		"save slot":  func(ctx context.Context, p string) error { _, err := e.SaveSlot(ctx, 0, p); return err },
		"embed":      func(ctx context.Context, p string) error { _, err := e.Embed(ctx, "slow:"+p); return err },
	} {
		path := filepath.Join(dir, strings.ReplaceAll(name, " ", "-")+".slow")
		ctx, cancel := context.WithCancel(context.Background())
		time.AfterFunc(100*time.Millisecond, cancel)
		err := call(ctx, path)
		cancel()
		if !errors.Is(err, context.Canceled) || !strings.Contains(err.Error(), name) {
			t.Fatalf("%s, cancelled: %v", name, err)
		}
		if _, err := os.Stat(path + ".cancelled"); err != nil {
			t.Fatalf("%s: the child's call did not see the cancellation end it: %v", name, err)
		}
	}
	if n, err := e.EraseSlot(context.Background(), 0); n != 3 || err != nil {
		t.Fatalf("erase after cancellations: %d %v", n, err)
	}
	if e.Restarts() != 0 {
		t.Fatalf("%d child restarts: cancelling must not take the child down", e.Restarts())
	}
}

func TestACrashFailsTheRequestAndTheNextStartsAChild(t *testing.T) {
	workerDown := true
	var crashedCalls int
	e := openFake(t, func(_ context.Context, crashed bool) error {
		if crashed {
			crashedCalls++
			if workerDown {
				return errors.New("rpc worker 10.0.0.2:50052 lost mid-request")
			}
		}
		return nil
	})
	// (The token before the crash may or may not reach us before the child is gone.)
	_, err := e.Complete(context.Background(), engine.Request{Prompt: "before the crash now"}, func(engine.Token) error { return nil })
	if err == nil || !strings.Contains(err.Error(), "10.0.0.2:50052 lost mid-request") || !strings.Contains(err.Error(), "Remote RPC server crashed") {
		t.Fatalf("the crashed request's error should name the cause and carry the child's last words: %v", err)
	}
	if crashedCalls != 1 {
		t.Fatalf("diagnosed %d times", crashedCalls)
	}
	workerDown = false
	res, err := e.Complete(context.Background(), engine.Request{Prompt: "next request"}, func(engine.Token) error { return nil })
	if err != nil || res.Text != "nextrequest" || e.Restarts() != 1 {
		t.Fatalf("after the crash: %+v %v, restarts %d", res, err, e.Restarts())
	}
}

func TestARefusedRestartIsTheCallsError(t *testing.T) {
	down := false
	e := openFake(t, func(context.Context, bool) error {
		if down {
			return errors.New("rpc worker h:1 unreachable")
		}
		return nil
	})
	down = true
	if _, err := e.Complete(context.Background(), engine.Request{Prompt: "a crash"}, func(engine.Token) error { return nil }); err == nil {
		t.Fatal("the crash was not reported")
	}
	if _, err := e.Tokenize("x", false, false); err == nil || !strings.Contains(err.Error(), "h:1 unreachable") {
		t.Fatalf("a call while the worker is down: %v", err)
	}
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Tokenize("x", false, false); err == nil {
		t.Fatal("a closed engine answered")
	}
}
