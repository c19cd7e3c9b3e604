package local

import (
	"context"
	"errors"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/expertsniper/expertsniper/engine"
	"github.com/expertsniper/expertsniper/modelgen/testmodels"
)

const prompt = "<|im_start|>user\nhello there, tell me about the cat<|im_end|>\n<|im_start|>assistant\n"

func open(t *testing.T, o Options) *Engine {
	t.Helper()
	if o.Context == 0 {
		o.Context = 512
	}
	if o.Threads == 0 {
		o.Threads = 2
	}
	o.NoRepack = true
	e, err := Open(context.Background(), testmodels.Path(t, "qwen3moe-f32"), o)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() {
		if err := e.Close(); err != nil {
			t.Errorf("Close: %v", err)
		}
	})
	return e
}

func complete(t *testing.T, e engine.Engine, req engine.Request) engine.Result {
	t.Helper()
	var streamed strings.Builder
	r, err := e.Complete(context.Background(), req, func(tok engine.Token) error {
		streamed.WriteString(tok.Text)
		return nil
	})
	if err != nil {
		t.Fatalf("Complete: %v", err)
	}
	if streamed.String() != r.Text {
		t.Fatalf("streamed %q but result text %q", streamed.String(), r.Text)
	}
	return r
}

func TestInfoTemplateAndTokenize(t *testing.T) {
	e := open(t, Options{Slots: 2})
	info := e.Info()
	if info.Architecture != "qwen3moe" || info.Slots != 2 || info.Context < 512 || info.Vocab == 0 || info.Mode != "ram" || !info.HasChatTemplate {
		t.Fatalf("info %+v", info)
	}
	p, err := e.ApplyTemplate([]engine.Message{{Role: "user", Content: "hello there, tell me about the cat"}}, true)
	if err != nil || p != prompt {
		t.Fatalf("template %q %v", p, err)
	}
	toks, err := e.Tokenize(prompt, true, true)
	if err != nil {
		t.Fatal(err)
	}
	back, err := e.Detokenize(toks)
	if err != nil || back != prompt {
		t.Fatalf("detokenize %q %v", back, err)
	}
}

func TestPrefixReuseGivesSameText(t *testing.T) {
	e := open(t, Options{})
	first := complete(t, e, engine.Request{Prompt: prompt, MaxTokens: 8, Slot: -1})
	if first.Timings.CachedTokens != 0 || first.Timings.PromptTokens == 0 || first.Timings.PredictedTokens == 0 {
		t.Fatalf("first timings %+v", first.Timings)
	}
	// The same prompt again: everything but the last token comes from the cache.
	again := complete(t, e, engine.Request{Prompt: prompt, MaxTokens: 8, Slot: -1})
	if again.Timings.PromptTokens != 1 || again.Text != first.Text {
		t.Fatalf("repeat: %+v %q vs %q", again.Timings, again.Text, first.Text)
	}
	// A follow-up that extends the conversation evaluates only the new part.
	follow := prompt + first.Text + "<|im_end|>\n<|im_start|>user\nand the dog?<|im_end|>\n<|im_start|>assistant\n"
	reused := complete(t, e, engine.Request{Prompt: follow, MaxTokens: 8, Slot: -1})
	if reused.Timings.CachedTokens < first.Timings.PromptTokens-1 {
		t.Fatalf("follow-up reused %d tokens, want at least %d", reused.Timings.CachedTokens, first.Timings.PromptTokens-1)
	}
	fresh := complete(t, open(t, Options{}), engine.Request{Prompt: follow, MaxTokens: 8, Slot: -1})
	if fresh.Text != reused.Text {
		t.Fatalf("with cache reuse %q, from scratch %q", reused.Text, fresh.Text)
	}
	st := e.Stats()
	if st.RSSBytes <= 0 || st.GeneratedTokens != int64(first.Timings.PredictedTokens+again.Timings.PredictedTokens+reused.Timings.PredictedTokens) {
		t.Fatalf("stats %+v", st)
	}
}

func TestStopStringAndLimits(t *testing.T) {
	e := open(t, Options{})
	base := complete(t, e, engine.Request{Prompt: prompt, MaxTokens: 16, Slot: -1})
	if base.FinishReason != "length" && base.FinishReason != "stop" {
		t.Fatalf("finish %q", base.FinishReason)
	}
	if len(base.Text) >= 6 {
		stop := base.Text[3:6]
		r := complete(t, e, engine.Request{Prompt: prompt, MaxTokens: 16, Slot: -1, Stop: []string{stop}})
		if r.Text != base.Text[:strings.Index(base.Text, stop)] || r.StoppingWord != stop || r.FinishReason != "stop" {
			t.Fatalf("stop %q: %+v", stop, r)
		}
	}
	_, err := e.Complete(context.Background(), engine.Request{Prompt: strings.Repeat("cat ", 2000), Slot: -1}, nil)
	if !errors.Is(err, engine.ErrContextFull) {
		t.Fatalf("huge prompt: %v", err)
	}
	if _, err := e.Complete(context.Background(), engine.Request{Prompt: prompt, Slot: 5}, nil); err == nil || !strings.Contains(err.Error(), "slot 5") {
		t.Fatalf("bad slot: %v", err)
	}
}

func TestQueueAndCancel(t *testing.T) {
	e := open(t, Options{Slots: 1})
	// Hold the only slot from a request that blocks in its token callback.
	started, unblock := make(chan struct{}), make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		n := 0
		// More tokens than the engine generates ahead of a consumer (maxBacklog): it keeps the slot.
		e.Complete(context.Background(), engine.Request{Prompt: prompt, MaxTokens: maxBacklog + 16, Slot: -1}, func(engine.Token) error {
			if n++; n == 1 {
				close(started)
				<-unblock
			}
			return nil
		})
	}()
	<-started
	ctx, cancel := context.WithTimeout(context.Background(), 100*time.Millisecond)
	defer cancel()
	if _, err := e.Complete(ctx, engine.Request{Prompt: prompt, MaxTokens: 4, Slot: -1}, nil); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("queued request with a deadline: %v", err)
	}
	done := make(chan engine.Result)
	go func() {
		r, _ := e.Complete(context.Background(), engine.Request{Prompt: prompt, MaxTokens: 4, Slot: -1}, nil)
		done <- r
	}()
	time.Sleep(50 * time.Millisecond)
	close(unblock)
	wg.Wait()
	if r := <-done; r.Timings.PredictedTokens == 0 {
		t.Fatalf("queued request got %+v", r)
	}
	// Cancelling during generation stops within one token and frees the slot.
	cctx, ccancel := context.WithCancel(context.Background())
	n := 0
	_, err := e.Complete(cctx, engine.Request{Prompt: prompt, MaxTokens: 64, Slot: -1}, func(engine.Token) error {
		if n++; n == 2 {
			ccancel()
		}
		return nil
	})
	if !errors.Is(err, context.Canceled) || n != 2 {
		t.Fatalf("cancel: err %v after %d tokens", err, n)
	}
	complete(t, e, engine.Request{Prompt: prompt, MaxTokens: 2, Slot: -1})
}

func TestParallelSlots(t *testing.T) {
	e := open(t, Options{Slots: 2})
	want := complete(t, e, engine.Request{Prompt: prompt, MaxTokens: 8, Slot: 0})
	var wg sync.WaitGroup
	errs := make(chan error, 6)
	for i := 0; i < 6; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, err := e.Complete(context.Background(), engine.Request{Prompt: prompt, MaxTokens: 8, Slot: -1}, nil)
			if err == nil && r.Text != want.Text {
				err = errors.New("different text: " + r.Text)
			}
			errs <- err
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}
}

func TestSaveLoadState(t *testing.T) {
	e := open(t, Options{})
	path := filepath.Join(t.TempDir(), "ctx.state")
	saved, err := e.SaveState(context.Background(), 0, prompt, path)
	n := saved.Tokens
	if err != nil || n == 0 || saved.Slot != 0 {
		t.Fatalf("SaveState: %+v %v", saved, err)
	}
	want := complete(t, open(t, Options{}), engine.Request{Prompt: prompt, MaxTokens: 8, Slot: -1})
	e2 := open(t, Options{Slots: 2})
	got, err := e2.LoadState(context.Background(), 1, path)
	if err != nil || got.Tokens != n || got.Slot != 1 {
		t.Fatalf("LoadState: %+v %v (saved %d)", got, err, n)
	}
	// Any free slot: the engine picks the one holding the prompt.
	r := complete(t, e2, engine.Request{Prompt: prompt, MaxTokens: 8, Slot: -1})
	if r.Timings.CachedTokens != n-1 || r.Text != want.Text {
		t.Fatalf("after load: %+v %q, want %d cached and %q", r.Timings, r.Text, n-1, want.Text)
	}
	if _, err := e2.LoadState(context.Background(), 0, filepath.Join(t.TempDir(), "missing")); err == nil {
		t.Fatal("loading a missing state file succeeded")
	}
}

func TestEmbed(t *testing.T) {
	e := open(t, Options{})
	a, err := e.Embed(context.Background(), "the cat")
	if err != nil {
		t.Fatal(err)
	}
	if len(a) != e.Info().Embedding {
		t.Fatalf("embedding of %d, want %d", len(a), e.Info().Embedding)
	}
	b, _ := e.Embed(context.Background(), "the cat")
	c, _ := e.Embed(context.Background(), "a dog")
	if !equal(a, b) || equal(a, c) {
		t.Fatal("embeddings not deterministic or not text-dependent")
	}
}

func equal(a, b []float32) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestOpenErrorsAndClose(t *testing.T) {
	if _, err := Open(context.Background(), filepath.Join(t.TempDir(), "none.gguf"), Options{}); err == nil {
		t.Fatal("opening a missing model succeeded")
	}
	if _, err := Open(context.Background(), testmodels.Path(t, "qwen3moe-f32"), Options{Mode: "warp"}); err == nil {
		t.Fatal("unknown mode accepted")
	}
	if _, err := Open(context.Background(), testmodels.Path(t, "qwen3moe-f32"), Options{FlashAttn: "sometimes"}); err == nil {
		t.Fatal("bad flash attention value accepted")
	}
	e, err := Open(context.Background(), testmodels.Path(t, "qwen3moe-f32"), Options{CacheTypeK: "q4_0", CacheTypeV: "q4_0", Context: 256})
	if err != nil {
		t.Fatalf("q4_0 KV cache: %v", err)
	}
	e.Close()
	if err := e.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := e.Complete(context.Background(), engine.Request{Prompt: prompt}, nil); err == nil {
		t.Fatal("Complete after Close succeeded")
	}
}

func TestSniperModeMatchesRAM(t *testing.T) {
	want := complete(t, open(t, Options{}), engine.Request{Prompt: prompt, MaxTokens: 8, Slot: -1})
	e := open(t, Options{Mode: ModeSniper, Cache: "0"})
	if e.Info().Mode != "sniper" {
		t.Fatalf("mode %q", e.Info().Mode)
	}
	got := complete(t, e, engine.Request{Prompt: prompt, MaxTokens: 8, Slot: -1})
	if got.Text != want.Text {
		t.Fatalf("sniper %q, ram %q", got.Text, want.Text)
	}
	if st := e.Stats(); st.BytesRead == 0 || st.CacheMisses == 0 || len(st.LayerExpertActivations) == 0 {
		t.Fatalf("sniper stats not filled: %+v", st)
	}
}

// TestSniperSlotsDecodeConcurrentlyWithPrefetch: four slots of one sniper-mode engine (prefetch on,
// a cache too small to hold what they use) answer different prompts at the same time; every answer
// equals the in-RAM engine's.
func TestSniperSlotsDecodeConcurrentlyWithPrefetch(t *testing.T) {
	prompts := []string{prompt,
		"<|im_start|>user\nname three colours<|im_end|>\n<|im_start|>assistant\n",
		"<|im_start|>user\nwhy is the sea salty?<|im_end|>\n<|im_start|>assistant\n",
		"<|im_start|>user\ncount to five<|im_end|>\n<|im_start|>assistant\n"}
	ram := open(t, Options{})
	want := make([]string, len(prompts))
	for i, p := range prompts {
		want[i] = complete(t, ram, engine.Request{Prompt: p, MaxTokens: 8, Slot: -1}).Text
	}
	e := open(t, Options{Mode: ModeSniper, Cache: "256KiB", Slots: len(prompts)})
	got := make([]string, len(prompts))
	var wg sync.WaitGroup
	for i, p := range prompts {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r, err := e.Complete(context.Background(), engine.Request{Prompt: p, MaxTokens: 8, Slot: -1}, func(engine.Token) error { return nil })
			if err != nil {
				t.Errorf("slot request %d: %v", i, err)
			}
			got[i] = r.Text
		}()
	}
	wg.Wait()
	for i := range prompts {
		if got[i] != want[i] {
			t.Errorf("prompt %d: sniper %q, ram %q", i, got[i], want[i])
		}
	}
}

// TestRecurrentModelFallsBackToFullEvaluation: qwen35moe's recurrent layers cannot drop a suffix of
// a sequence, so a prompt that diverges from the slot's cache is evaluated from scratch; the text
// must still equal a fresh engine's.
func TestRecurrentModelFallsBackToFullEvaluation(t *testing.T) {
	path := testmodels.Path(t, "qwen35moe-f32")
	openIt := func() *Engine {
		e, err := Open(context.Background(), path, Options{Context: 512, Threads: 2, NoRepack: true})
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { e.Close() })
		return e
	}
	e := openIt()
	first := complete(t, e, engine.Request{Prompt: prompt, MaxTokens: 6, Slot: -1})
	other := "<|im_start|>user\nsomething else<|im_end|>\n<|im_start|>assistant\n"
	r := complete(t, e, engine.Request{Prompt: other, MaxTokens: 6, Slot: -1})
	fresh := complete(t, openIt(), engine.Request{Prompt: other, MaxTokens: 6, Slot: -1})
	if r.Text != fresh.Text || r.Timings.CachedTokens != 0 {
		t.Fatalf("after another prompt: %q (cached %d), fresh %q", r.Text, r.Timings.CachedTokens, fresh.Text)
	}
	// Extending the cache exactly (no suffix to drop) still reuses it.
	again := complete(t, e, engine.Request{Prompt: prompt, MaxTokens: 6, Slot: -1})
	if again.Text != first.Text {
		t.Fatalf("repeat: %q vs %q", again.Text, first.Text)
	}
}

// TestSlotsReportWhatRequestsLeft checks that the engine alone tracks slots: once Complete returns,
// Slots shows the request's tokens in its slot, and a follow-up asking for any slot (-1) goes to the
// slot holding its conversation, not to the first free one.
func TestSlotsReportWhatRequestsLeft(t *testing.T) {
	e := open(t, Options{Slots: 2})
	first := complete(t, e, engine.Request{Prompt: prompt, MaxTokens: 4, Slot: 1})
	slots := e.Slots().Slots
	if len(slots) != 2 || slots[0].Busy || slots[1].Busy || len(slots[0].Tokens) != 0 {
		t.Fatalf("after one request pinned to slot 1: %+v", slots)
	}
	nPrompt := first.Timings.PromptTokens + first.Timings.CachedTokens
	if n := len(slots[1].Tokens); n < nPrompt || n > nPrompt+first.Timings.PredictedTokens {
		t.Fatalf("slot 1 holds %d tokens, want %d prompt tokens and up to %d generated", n, nPrompt, first.Timings.PredictedTokens)
	}
	follow := prompt + first.Text + "<|im_end|>\n<|im_start|>user\nand the dog?<|im_end|>\n<|im_start|>assistant\n"
	reused := complete(t, e, engine.Request{Prompt: follow, MaxTokens: 4, Slot: -1})
	if reused.Timings.CachedTokens < nPrompt-1 {
		t.Fatalf("follow-up reused %d tokens, want at least %d (it went to another slot)", reused.Timings.CachedTokens, nPrompt-1)
	}
	slots = e.Slots().Slots
	if len(slots[0].Tokens) != 0 || len(slots[1].Tokens) < reused.Timings.PromptTokens+reused.Timings.CachedTokens {
		t.Fatalf("after the follow-up: slot 0 holds %d tokens, slot 1 %d", len(slots[0].Tokens), len(slots[1].Tokens))
	}
}

// TestSlotActions checks the calls that work on a slot's cache as it is: the result and tokens say
// which slot ran, Slots reports the task, SaveSlot writes what the slot holds (a load elsewhere
// resumes it), EraseSlot empties it, and LoadState(-1) takes the least recently used slot.
func TestSlotActions(t *testing.T) {
	e := open(t, Options{Slots: 2})
	var slotsSeen []int
	first, err := e.Complete(context.Background(), engine.Request{Prompt: prompt, MaxTokens: 4, Slot: 1}, func(tok engine.Token) error {
		slotsSeen = append(slotsSeen, tok.Slot)
		return nil
	})
	if err != nil || first.Slot != 1 || len(slotsSeen) == 0 || slotsSeen[0] != 1 {
		t.Fatalf("first: slot %d, tokens' slots %v, %v", first.Slot, slotsSeen, err)
	}
	report := e.Slots()
	s1 := report.Slots[1]
	if report.Queued != 0 || s1.Task != 1 || s1.Busy || s1.Decoded != first.Timings.PredictedTokens || s1.Request.MaxTokens != 4 ||
		s1.PromptTokens != first.Timings.PromptTokens || report.Slots[0].Task != 0 {
		t.Fatalf("slots after the first request: %+v", report)
	}
	held := len(s1.Tokens)

	path := filepath.Join(t.TempDir(), "slot1")
	saved, err := e.SaveSlot(context.Background(), 1, path)
	if err != nil || saved.Tokens != held || saved.Slot != 1 {
		t.Fatalf("SaveSlot: %+v %v, slot held %d", saved, err, held)
	}
	if n, err := e.EraseSlot(context.Background(), 1); err != nil || n != held {
		t.Fatalf("EraseSlot: %d %v, want %d", n, err, held)
	}
	if s := e.Slots().Slots[1]; len(s.Tokens) != 0 || s.Task != 1 || s.Request.MaxTokens != 4 {
		t.Fatalf("slot 1 after erasing: %+v (want no tokens, the last completion's task and settings)", s)
	}
	if _, err := e.SaveSlot(context.Background(), 1, path+".empty"); !errors.Is(err, engine.ErrSlotEmpty) {
		t.Fatalf("saving an empty slot: %v", err)
	}
	if _, err := e.SaveSlot(context.Background(), -1, path); err == nil {
		t.Fatal("SaveSlot(-1) succeeded")
	}
	// Slot 0 was never used, slot 1 was: a load for any slot takes slot 0.
	loaded, err := e.LoadState(context.Background(), -1, path)
	if err != nil || loaded.Slot != 0 || loaded.Tokens != held {
		t.Fatalf("LoadState(-1): %+v %v", loaded, err)
	}
	again := complete(t, e, engine.Request{Prompt: prompt, MaxTokens: 4, Slot: -1})
	if again.Slot != 0 || again.Text != first.Text || again.Timings.CachedTokens != first.Timings.PromptTokens-1 {
		t.Fatalf("after the load: slot %d, %q cached %d; want slot 0, %q cached %d", again.Slot, again.Text,
			again.Timings.CachedTokens, first.Text, first.Timings.PromptTokens-1)
	}
}

// TestQueueIsFIFOAndAPinnedWaitDoesNotBlockOthers checks the queue's contract with the real
// scheduler: requests for any slot are served in arrival order, and one waiting for a busy pinned
// slot lets later ones take another slot.
func TestQueueIsFIFOAndAPinnedWaitDoesNotBlockOthers(t *testing.T) {
	e := open(t, Options{Slots: 2})
	// hold runs a request in slot that blocks on its first token until release is closed.
	hold := func(slot int) (release func(), done chan engine.Result) {
		started, unblock := make(chan struct{}), make(chan struct{})
		done = make(chan engine.Result, 1)
		go func() {
			n := 0
			r, _ := e.Complete(context.Background(), engine.Request{Prompt: prompt, MaxTokens: maxBacklog + 16, Slot: slot}, func(engine.Token) error {
				if n++; n == 1 {
					close(started)
					<-unblock
				}
				return nil
			})
			done <- r
		}()
		<-started
		return func() { close(unblock) }, done
	}
	waitQueued := func(n int) {
		t.Helper()
		for deadline := time.Now().Add(60 * time.Second); e.Slots().Queued != n; time.Sleep(5 * time.Millisecond) {
			if time.Now().After(deadline) {
				t.Fatalf("timed out waiting for %d queued (have %d)", n, e.Slots().Queued)
			}
		}
	}
	release0, held0 := hold(0)
	release1, held1 := hold(1)
	var mu sync.Mutex
	var finished []string
	submit := func(name string, slot int) chan engine.Result {
		ch := make(chan engine.Result, 1)
		go func() {
			r, err := e.Complete(context.Background(), engine.Request{Prompt: prompt, MaxTokens: 2, Slot: slot}, nil)
			if err != nil {
				t.Errorf("%s: %v", name, err)
			}
			mu.Lock()
			finished = append(finished, name)
			mu.Unlock()
			ch <- r
		}()
		return ch
	}
	pinned := submit("pinned", 1)
	waitQueued(1)
	first := submit("first", -1)
	waitQueued(2)
	second := submit("second", -1)
	waitQueued(3)

	release0()
	<-held0
	if r := <-first; r.Slot != 0 {
		t.Fatalf("the first request for any slot ran in slot %d, want 0", r.Slot)
	}
	if r := <-second; r.Slot != 0 {
		t.Fatalf("the second request for any slot ran in slot %d, want 0", r.Slot)
	}
	if q := e.Slots().Queued; q != 1 {
		t.Fatalf("%d queued, want the pinned request still waiting for slot 1", q)
	}
	release1()
	<-held1
	if r := <-pinned; r.Slot != 1 {
		t.Fatalf("the pinned request ran in slot %d", r.Slot)
	}
	mu.Lock()
	defer mu.Unlock()
	if strings.Join(finished, ",") != "first,second,pinned" {
		t.Fatalf("finished in the order %v", finished)
	}
}
