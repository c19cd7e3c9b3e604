package local

import (
	"context"
	"math"
	"strings"
	"sync"
	"testing"

	"github.com/expertsniper/expertsniper/engine"
	"github.com/expertsniper/expertsniper/modelgen/testmodels"
)

// A conversation's next turn on a hybrid model (qwen35moe: recurrent layers and attention):
// the template renders the previous answer differently from how it was generated, so the new
// prompt diverges from the slot near the end of the previous prompt. With checkpoints it resumes
// from the one taken checkpointBack tokens before that prompt's end; without, it starts over.
func TestCheckpointLetsADivergingPromptResume(t *testing.T) {
	for _, checkpoints := range []int{0, DefaultCheckpoints} {
		e := openRecurrent(t, checkpoints, nil)
		first := longPrompt(t, e, "")
		complete(t, e, engine.Request{PromptTokens: first, MaxTokens: 3, Slot: -1})
		next := append(append([]int32(nil), first[:len(first)-4]...), longPrompt(t, e, "a different ending")[:8]...)
		r := complete(t, e, engine.Request{PromptTokens: next, MaxTokens: 3, Slot: -1})
		want := 0
		if checkpoints > 0 {
			want = len(first) - checkpointBack
		}
		if r.Timings.CachedTokens != want {
			t.Fatalf("%d checkpoints: the next turn reused %d tokens, want %d", checkpoints, r.Timings.CachedTokens, want)
		}
		if checkpoints > 0 && (e.checkpointsTaken.Load() != 2 || e.checkpointsRestored.Load() != 1) {
			t.Fatalf("%d checkpoints taken and %d restored: want 2 (one per prompt) and 1", e.checkpointsTaken.Load(), e.checkpointsRestored.Load())
		}
		// A prompt that diverges before every checkpoint starts over and drops them.
		other := chatPrompt(t, e, strings.Repeat("Something else entirely, about mountains and the snow on them. ", 3))
		if r := complete(t, e, engine.Request{PromptTokens: other, MaxTokens: 3, Slot: -1}); r.Timings.CachedTokens != 0 {
			t.Fatalf("%d checkpoints: an unrelated prompt reused %d tokens", checkpoints, r.Timings.CachedTokens)
		}
		for _, c := range e.slots[0].checkpoints {
			if c.n > len(e.slots[0].tokens) {
				t.Fatalf("a checkpoint of %d tokens outlived a sequence of %d", c.n, len(e.slots[0].tokens))
			}
		}
	}
}

// Restoring a checkpoint and evaluating the rest of the prompt computes exactly what the step after
// the checkpoint computed: the same prompt again gives bit-identical logits, in RAM and with the
// experts streamed (sniper mode, which equals RAM mode's numbers for the same batches).
func TestCheckpointRestoreIsExact(t *testing.T) {
	var outputs [][]float32
	for _, mode := range []Mode{ModeRAM, ModeSniper} {
		var mu sync.Mutex
		var got [][]float32
		e := openRecurrent(t, DefaultCheckpoints, func(_ int, logits []float32) {
			mu.Lock()
			defer mu.Unlock()
			got = append(got, append([]float32(nil), logits...))
		}, func(o *Options) { o.Mode, o.Cache = mode, "0" })
		p := longPrompt(t, e, "")
		complete(t, e, engine.Request{PromptTokens: p, MaxTokens: 1, Slot: -1})
		r := complete(t, e, engine.Request{PromptTokens: p, MaxTokens: 1, Slot: -1})
		if r.Timings.CachedTokens != len(p)-checkpointBack {
			t.Fatalf("%s: the same prompt again reused %d tokens, want %d (from the checkpoint)", mode, r.Timings.CachedTokens, len(p)-checkpointBack)
		}
		mu.Lock()
		outputs = append(outputs, got...)
		mu.Unlock()
		if len(got) != 2 {
			t.Fatalf("%s: %d outputs sampled, want 2", mode, len(got))
		}
	}
	for o := 1; o < len(outputs); o++ {
		for i := range outputs[0] {
			if math.Float32bits(outputs[0][i]) != math.Float32bits(outputs[o][i]) {
				t.Fatalf("output %d, logit %d: %v, against %v after evaluating the prompt in RAM", o, i, outputs[o][i], outputs[0][i])
			}
		}
	}
}

func openRecurrent(t *testing.T, checkpoints int, logits func(int, []float32), adjust ...func(*Options)) *Engine {
	t.Helper()
	o := Options{Context: 512, Threads: 2, NoRepack: true, Checkpoints: checkpoints}
	for _, f := range adjust {
		f(&o)
	}
	e, err := Open(context.Background(), testmodels.Path(t, "qwen35moe-f32"), o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { e.Close() })
	if !e.recurrent {
		t.Fatal("qwen35moe is not recurrent to the engine")
	}
	e.logitsHook = logits
	return e
}

// longPrompt is a chat prompt of a few dozen tokens: its user message is about the sea, then says
// ending.
func longPrompt(t *testing.T, e *Engine, ending string) []int32 {
	t.Helper()
	return chatPrompt(t, e, strings.Repeat("Tell me about the sea and the ships on it. ", 4)+ending)
}

// chatPrompt is a chat prompt whose user message is message.
func chatPrompt(t *testing.T, e *Engine, message string) []int32 {
	t.Helper()
	text := "<|im_start|>user\n" + message + "<|im_end|>\n<|im_start|>assistant\n"
	toks, err := e.Tokenize(text, true, true)
	if err != nil {
		t.Fatal(err)
	}
	if len(toks) < 3*checkpointBack {
		t.Fatalf("the prompt has %d tokens: too short for a checkpoint", len(toks))
	}
	return toks
}

// An agent's routing call asks for a checkpoint where its prompt parts from the answer's that follows
// (Request.KeepPrefix, before its instruction): the answer then resumes there. Without it the
// routing call's only checkpoint lies inside the instruction, past the parting, and the answer
// starts over.
func TestKeepPrefixLetsTheNextRequestResume(t *testing.T) {
	for _, keep := range []bool{false, true} {
		e := openRecurrent(t, DefaultCheckpoints, nil)
		base := "<|im_start|>user\n" + strings.Repeat("Tell me about the sea and the ships on it. ", 4) + "<|im_end|>\n<|im_start|>"
		routing := base + "user\nIs that a question for a web search, a shell command or a chat? Answer in one word.<|im_end|>\n<|im_start|>assistant\n"
		req := engine.Request{Prompt: routing, MaxTokens: 2, Slot: -1}
		if keep {
			req.KeepPrefix = base
		}
		complete(t, e, req)
		r := complete(t, e, engine.Request{Prompt: base + "assistant\n", MaxTokens: 2, Slot: -1})
		baseToks, err := e.Tokenize(base, true, true)
		if err != nil {
			t.Fatal(err)
		}
		want := 0
		if keep {
			want = len(baseToks)
		}
		if r.Timings.CachedTokens != want {
			t.Fatalf("keep prefix %v: the answer reused %d tokens, want %d", keep, r.Timings.CachedTokens, want)
		}
	}
	e := openRecurrent(t, DefaultCheckpoints, nil)
	_, err := e.Complete(context.Background(), engine.Request{Prompt: "<|im_start|>user\nhello<|im_end|>\n", KeepPrefix: "something else", MaxTokens: 1, Slot: -1}, nil)
	if err == nil || !strings.Contains(err.Error(), "not a prefix of the prompt") {
		t.Fatalf("a KeepPrefix that is not the prompt's: %v", err)
	}
}
