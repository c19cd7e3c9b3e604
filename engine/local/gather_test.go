package local

import (
	"context"
	"sync"
	"testing"
	"time"

	"github.com/expertsniper/expertsniper/engine"
	"github.com/expertsniper/expertsniper/modelgen/testmodels"
	"github.com/expertsniper/expertsniper/sniper"
)

// In sniper mode, a request that arrives while another's prompt waits to start (promptGather)
// starts its prompt in the same step: the two read their experts once, one Ensure per layer as for
// a request alone, where two steps would make twice as many.
func TestStreamedPromptsArrivingApartShareAStep(t *testing.T) {
	path := testmodels.Path(t, "qwen3moe-q8_0")
	run := func(n int) sniper.Stats {
		o := Options{Mode: ModeSniper, Cache: "0", NoPrefetch: true}
		o.Slots, o.Context, o.Threads, o.NoRepack = n, 256, 2, true
		e, err := Open(context.Background(), path, o)
		if err != nil {
			t.Fatal(err)
		}
		defer e.Close()
		// Generous for a loaded machine; with every slot taken the step goes at once.
		e.promptGather = time.Minute
		var wg sync.WaitGroup
		errs := make(chan error, n)
		for i := range n {
			toks, err := e.Tokenize(batchPrompts[0], true, true)
			if err != nil {
				t.Fatal(err)
			}
			// As long as each other (llama.cpp splits a step's sequences into ubatches of equal
			// lengths when each slot has cells of its own), and different.
			toks[len(toks)-1] += int32(i)
			wg.Add(1)
			go func() {
				defer wg.Done()
				_, err := e.Complete(context.Background(), engine.Request{PromptTokens: toks, MaxTokens: 1, Slot: -1}, nil)
				errs <- err
			}()
			time.Sleep(200 * time.Millisecond) // apart: without the wait the first prompt's step would have started
		}
		wg.Wait()
		close(errs)
		for err := range errs {
			if err != nil {
				t.Fatal(err)
			}
		}
		return e.Sniper().Stats()
	}
	one, two := run(1), run(2)
	if one.Ensures == 0 || two.Ensures != one.Ensures {
		t.Fatalf("Ensure calls: %d for two prompts arriving apart, %d for one: want the same (their prompts in one step)", two.Ensures, one.Ensures)
	}
}

// In RAM mode nothing waits: a step's cost is its compute, which batching does not share.
func TestRAMModeDoesNotGatherPrompts(t *testing.T) {
	e := open(t, Options{Slots: 2})
	e.promptGather = time.Minute
	start := time.Now()
	complete(t, e, engine.Request{Prompt: "hello", MaxTokens: 1, Slot: -1})
	if d := time.Since(start); d > 30*time.Second {
		t.Fatalf("a request alone in RAM mode took %v: it waited for others to share its step", d)
	}
}
