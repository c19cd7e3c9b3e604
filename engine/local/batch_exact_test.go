package local

import (
	"context"
	"fmt"
	"math"
	"testing"

	"github.com/expertsniper/expertsniper/binding"
	"github.com/expertsniper/expertsniper/engine"
	"github.com/expertsniper/expertsniper/modelgen/testmodels"
	"github.com/expertsniper/expertsniper/sniper"
)

var batchPrompts = []string{
	"<|im_start|>user\nhello there, tell me about the cat<|im_end|>\n<|im_start|>assistant\n",
	"The quick brown fox jumps over the lazy dog",
	"one two",
	"<|im_start|>user\nwrite a long story about a dragon and a knight who became friends<|im_end|>\n",
}

// decodeTogether opens path with o and one slot per prompt, queues one greedy request per prompt at
// once (so the batches are the same in every run: all prompts in the first step, then one token of
// every sequence still generating per step) and returns the logits each slot sampled from, in order,
// and the texts.
func decodeTogether(t *testing.T, path string, o Options, prompts []string, maxTokens int) ([][][]float32, []string) {
	t.Helper()
	o.Slots, o.Context, o.Threads = len(prompts), 256, 2
	e, err := Open(context.Background(), path, o)
	if err != nil {
		t.Fatalf("open %s: %v", o.Mode, err)
	}
	defer func() {
		if err := e.Close(); err != nil {
			t.Errorf("close: %v", err)
		}
	}()
	logits := make([][][]float32, len(prompts))
	e.logitsHook = func(slot int, l []float32) { logits[slot] = append(logits[slot], l) }
	toks := make([][]int32, len(prompts))
	for i, p := range prompts {
		if toks[i], err = e.Tokenize(p, true, true); err != nil {
			t.Fatal(err)
		}
	}
	texts := make([]string, len(prompts))
	for i, j := range runTogether(t, e, toks, maxTokens) {
		texts[i] = j.res.Text
	}
	return logits, texts
}

// runTogether queues one greedy request per prompt on e at once (with every slot free, request i
// runs in slot i, all from the same first step) and waits for them all.
func runTogether(t *testing.T, e *Engine, prompts [][]int32, maxTokens int) []*job {
	t.Helper()
	jobs := make([]*job, len(prompts))
	for i, toks := range prompts {
		req := engine.Request{MaxTokens: maxTokens, Slot: -1}
		smpl, err := binding.NewSampler(e.model, samplerParams(req))
		if err != nil {
			t.Fatal(err)
		}
		jobs[i] = &job{want: -1, prompt: toks, generate: true, req: req, sampler: smpl, stop: binding.NewStopFilter(nil)}
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	if err := e.enqueue(ctx, jobs...); err != nil {
		t.Fatal(err)
	}
	for i, j := range jobs {
		if err := e.await(ctx, cancel, j, nil); err != nil {
			t.Fatalf("%s, request %d: %v", e.info.Mode, i, err)
		}
		if j.slot.id != i {
			t.Fatalf("request %d ran in slot %d: the batch composition is not the fixed one", i, j.slot.id)
		}
	}
	return jobs
}

// TestBatchedStreamingIsBitExact: for a fixed batch composition (1 sequence, and 4 decoded together
// by the scheduler), sniper mode (MoE) and stream mode (dense) compute exactly the in-RAM logits, on
// every test architecture and type (F32, F16, Q8_0, Q4_0, Q4_K_M), with no expert cache and with an unlimited one. (Batching
// changes the floating-point path against single-sequence decoding; the claim is equality between
// modes for the same batches.) Types llama.cpp repacks are compared with its defaults and with
// --no-repack on both sides.
func TestBatchedStreamingIsBitExact(t *testing.T) {
	archs := []string{"qwen3moe", "qwen35moe", "olmoe", "qwen2moe", "qwen3"}
	types := []string{"f32", "f16", "q8_0", "q4_0", "q4_k_m"}
	for _, arch := range archs {
		for _, typ := range types {
			name := arch + "-" + typ
			t.Run(name, func(t *testing.T) {
				t.Parallel() // runs wait on reads and page faults as much as on the 2 cores
				path := testmodels.Path(t, name)
				mode := ModeSniper
				if arch == "qwen3" {
					mode = ModeStream
				}
				repackings := []bool{false}
				if typ == "q4_0" || typ == "q4_k_m" {
					repackings = append(repackings, true)
				}
				for _, n := range []int{1, 4} {
					for _, noRepack := range repackings {
						prompts := batchPrompts[:n]
						want, wantText := decodeTogether(t, path, Options{Mode: "ram", NoRepack: noRepack}, prompts, 6)
						for _, budget := range []string{"0", "unlimited"} {
							got, gotText := decodeTogether(t, path, Options{Mode: mode, Cache: budget, NoRepack: noRepack, Repack: !noRepack}, prompts, 6)
							what := fmt.Sprintf("%s, %d sequences, cache %s, --no-repack=%v", mode, n, budget, noRepack)
							for s := range prompts {
								sameLogits(t, fmt.Sprintf("%s, sequence %d", what, s), want[s], got[s])
								if gotText[s] != wantText[s] {
									t.Fatalf("%s, sequence %d: text %q, in RAM %q", what, s, gotText[s], wantText[s])
								}
							}
						}
					}
				}
			})
		}
	}
}

func sameLogits(t *testing.T, what string, want, got [][]float32) {
	t.Helper()
	if len(want) == 0 || len(want) != len(got) {
		t.Fatalf("%s: %d outputs, in RAM %d", what, len(got), len(want))
	}
	for i := range want {
		if len(want[i]) != len(got[i]) {
			t.Fatalf("%s: output %d has %d logits, in RAM %d", what, i, len(got[i]), len(want[i]))
		}
		for k := range want[i] {
			if math.Float32bits(want[i][k]) != math.Float32bits(got[i][k]) {
				t.Fatalf("%s: output %d logit %d = %v, in RAM %v (not bit-exact)", what, i, k, got[i][k], want[i][k])
			}
		}
	}
}

// TestSniperStepEnsuresOnceForAllSequences: in sniper mode one decode step makes the experts of every
// sequence in it resident together (the hook ensures the union of a ubatch's choices once per layer),
// so four sequences decoded together make as many Ensure calls as one sequence alone, and read at most
// four times its bytes with no cache. The prompts have the same length: llama.cpp splits a batch over
// per-sequence KV buffers into ubatches that take as many tokens of each sequence, so prompts of
// different lengths are evaluated in several ubatches (decode steps, one token each, stay one).
func TestSniperStepEnsuresOnceForAllSequences(t *testing.T) {
	path := testmodels.Path(t, "qwen3moe-q8_0")
	const maxTokens = 4
	run := func(n int) sniper.Stats {
		o := Options{Mode: ModeSniper, Cache: "0", NoPrefetch: true}
		o.Slots, o.Context, o.Threads, o.NoRepack = n, 256, 2, true
		e, err := Open(context.Background(), path, o)
		if err != nil {
			t.Fatal(err)
		}
		defer e.Close()
		outputs := make([]int, n)
		e.logitsHook = func(slot int, _ []float32) { outputs[slot]++ }
		prompts := make([][]int32, n)
		for i := range prompts {
			toks, err := e.Tokenize(batchPrompts[0], true, true)
			if err != nil {
				t.Fatal(err)
			}
			toks[len(toks)-1] += int32(i) // a different last token: the sequences diverge
			prompts[i] = toks
		}
		runTogether(t, e, prompts, maxTokens)
		for s, n := range outputs {
			if n != maxTokens {
				t.Fatalf("sequence %d sampled %d times, want %d (it ended early: pick other prompts)", s, n, maxTokens)
			}
		}
		return e.Sniper().Stats()
	}
	one := run(1)
	four := run(4)
	if one.Ensures == 0 || four.Ensures != one.Ensures {
		t.Fatalf("Ensure calls: %d for four sequences together, %d for one: want the same (one per layer per step)", four.Ensures, one.Ensures)
	}
	if four.BytesRead > 4*one.BytesRead {
		t.Fatalf("four sequences read %d bytes, one %d: more than four times", four.BytesRead, one.BytesRead)
	}
	t.Logf("per step and layer, one Ensure: %d calls; bytes read %d (1 sequence) and %d (4 sequences)", four.Ensures, one.BytesRead, four.BytesRead)
}
