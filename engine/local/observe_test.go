package local

import (
	"context"
	"fmt"
	"math"
	"slices"
	"strings"
	"testing"

	"github.com/expertsniper/expertsniper/binding"
	"github.com/expertsniper/expertsniper/engine"
	"github.com/expertsniper/expertsniper/modelgen/testmodels"
)

// positionLogits collects the logits of every evaluated position, checking they come in order.
type positionLogits struct {
	pos    []int
	logits [][]float32
}

func (p *positionLogits) add(pos int, l []float32) error {
	p.pos = append(p.pos, pos)
	p.logits = append(p.logits, l)
	return nil
}

func sameBits(t *testing.T, what string, want, got *positionLogits) {
	t.Helper()
	if !slices.Equal(want.pos, got.pos) {
		t.Fatalf("%s: positions %v, want %v", what, got.pos, want.pos)
	}
	for i := range want.logits {
		for j := range want.logits[i] {
			if math.Float32bits(want.logits[i][j]) != math.Float32bits(got.logits[i][j]) {
				t.Fatalf("%s: position %d logit %d = %v, want %v (not bit-exact)", what, want.pos[i], j, got.logits[i][j], want.logits[i][j])
			}
		}
	}
}

// TestObservedRequestsMatchTheDirectRun: a scheduled request that asks for every position's logits
// (what `agent run --logits-out` needs) gets exactly the logits, positions and text of binding's own
// generation on a context of the same shape (GenerateTokens and Eval, in RAM), in RAM and sniper
// mode, with the prompt fed whole or one micro-batch at a time for progress.
func TestObservedRequestsMatchTheDirectRun(t *testing.T) {
	path := testmodels.Path(t, "qwen3moe-q8_0")
	const maxTokens, nCtx, nUBatch = 6, 256, 16
	m, err := binding.LoadModel(context.Background(), path, binding.WithExtraBufts(false))
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	// The engine's context for one slot of nCtx tokens (Open): n_batch is the whole context.
	c, err := m.NewContextWithParams(binding.ContextParams{NCtx: nCtx, NBatch: nCtx, NUBatch: nUBatch, NSeqMax: 1, Threads: 2, ThreadsBatch: 2})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	toks, err := m.Tokenize(strings.Repeat("The quick brown fox jumps over the lazy dog. ", 5), true, true)
	if err != nil {
		t.Fatal(err)
	}
	if len(toks) <= 2*nUBatch {
		t.Fatalf("the prompt has %d tokens: want several micro-batches of %d", len(toks), nUBatch)
	}
	var want, wantEval positionLogits
	res, err := c.GenerateTokens(context.Background(), toks, binding.WithMaxTokens(maxTokens), binding.WithoutCacheReuse(), binding.WithLogits(want.add))
	if err != nil {
		t.Fatal(err)
	}
	if err := c.ClearMemory(); err != nil {
		t.Fatal(err)
	}
	if err := c.Eval(context.Background(), toks, wantEval.add); err != nil {
		t.Fatal(err)
	}
	for _, mode := range []Mode{ModeRAM, ModeSniper} {
		o := Options{Mode: mode, Context: nCtx, UBatch: nUBatch, Threads: 2, NoRepack: true, Cache: "0"}
		if mode == ModeRAM {
			o.Cache = ""
		}
		// A fresh engine for each run: its slot holds nothing, so the whole prompt is evaluated, as
		// in the direct run.
		fresh := func() *Engine {
			e, err := Open(context.Background(), path, o)
			if err != nil {
				t.Fatalf("%s: open: %v", mode, err)
			}
			t.Cleanup(func() { e.Close() })
			return e
		}
		for _, progress := range []bool{false, true} {
			what := fmt.Sprintf("%s, progress %v", mode, progress)
			var got positionLogits
			var steps []int
			promptDone := 0
			obs := Observer{Logits: got.add, PromptDone: func() {
				promptDone++
				if len(got.pos) != len(toks) {
					t.Errorf("%s: prompt done after %d positions' logits, want %d", what, len(got.pos), len(toks))
				}
			}}
			if progress {
				obs.PromptProgress = func(done, total int) {
					if total != len(toks) {
						t.Errorf("%s: progress of %d tokens, want %d", what, total, len(toks))
					}
					steps = append(steps, done)
				}
			}
			r, err := fresh().CompleteObserved(context.Background(), engine.Request{PromptTokens: toks, MaxTokens: maxTokens, Slot: 0}, obs, nil)
			if err != nil {
				t.Fatalf("%s: %v", what, err)
			}
			sameBits(t, what, &want, &got)
			if r.Text != res.Text || promptDone != 1 {
				t.Fatalf("%s: text %q (prompt done %d times), want %q", what, r.Text, promptDone, res.Text)
			}
			if progress {
				var wantSteps []int
				for done := nUBatch; done < len(toks); done += nUBatch {
					wantSteps = append(wantSteps, done)
				}
				if wantSteps = append(wantSteps, len(toks)); !slices.Equal(steps, wantSteps) {
					t.Fatalf("%s: progress %v, want %v", what, steps, wantSteps)
				}
			}
		}
		// Only the prompt, nothing sampled.
		var gotEval positionLogits
		if err := fresh().Evaluate(context.Background(), toks, 0, Observer{Logits: gotEval.add}); err != nil {
			t.Fatalf("%s: evaluate: %v", mode, err)
		}
		sameBits(t, string(mode)+", evaluate", &wantEval, &gotEval)
	}
}
