package local

import (
	"context"
	"fmt"

	"github.com/expertsniper/expertsniper/binding"
	"github.com/expertsniper/expertsniper/engine"
)

// Observer watches one scheduled request from inside the loop, for what `agent run` measures and
// writes: every evaluated position's logits (--logits-out), the prompt's progress, and the moment the
// prompt is done (the prompt/decode split of --stats). Its functions run on the loop goroutine,
// between decodes, so what they see is exact; they hold up every slot while they run.
type Observer struct {
	// Logits receives the logits of every position evaluated for the request, prompt and generated,
	// in order (a copy, owned by the callee). Every prompt token is then an output of its batch, as
	// in binding.Context.Eval with logits. An error ends the request with it.
	Logits binding.LogitsFunc
	// PromptProgress is called after each micro-batch of the prompt with the tokens evaluated so far
	// and the number to evaluate. The prompt is then fed one n_ubatch at a time: the split
	// llama_decode makes anyway, so no logit changes.
	PromptProgress func(done, total int)
	// PromptDone is called once the prompt is evaluated, before the first token is sampled.
	PromptDone func()
}

// CompleteObserved is Complete with obs watching the request from the loop.
func (e *Engine) CompleteObserved(ctx context.Context, req engine.Request, obs Observer, onToken func(engine.Token) error) (engine.Result, error) {
	return e.complete(ctx, req, &obs, onToken)
}

// Evaluate evaluates prompt in a slot (-1 for any) without sampling, for obs (e.g. the
// logits of every position). The slot keeps the prompt cached; a prefix it already held is not
// evaluated again, and is not observed.
func (e *Engine) Evaluate(ctx context.Context, prompt []int32, slotID int, obs Observer) error {
	if err := e.checkPrompt(prompt); err != nil {
		return fmt.Errorf("evaluate: %w", err)
	}
	if len(prompt) > e.info.Context {
		return fmt.Errorf("evaluate: prompt of %d tokens, context of %d: %w", len(prompt), e.info.Context, engine.ErrContextFull)
	}
	if err := e.checkSlot(slotID); err != nil {
		return fmt.Errorf("evaluate: %w", err)
	}
	j := &job{want: slotID, prompt: prompt, obs: &obs, onSlot: func(*slot) error { return nil }}
	if err := e.submit(ctx, j, nil); err != nil {
		return fmt.Errorf("evaluate: %w", err)
	}
	return nil
}

// promptChunk bounds the prompt tokens j may put into this step's batch, room being what is left of it.
func (e *Engine) promptChunk(j *job, room int) int {
	n := min(room, len(j.prompt)-j.fed)
	if j.obs != nil && j.obs.PromptProgress != nil {
		n = min(n, e.lctx.MicroBatchSize())
	}
	return n
}

// observe hands j's observer what the step's decode computed for j: the logits of its tokens in the
// batch, the prompt's progress, its end (nil-safe: most jobs have no observer).
func (e *Engine) observe(j *job) error {
	obs := j.obs
	if obs == nil {
		return nil
	}
	if obs.Logits != nil {
		for i := 0; i < j.stepN; i++ {
			l, err := e.lctx.Logits(j.stepFirst + i)
			if err != nil {
				return err
			}
			if err := obs.Logits(j.stepPos+i, l); err != nil {
				return err
			}
		}
	}
	if j.stepPrompt {
		if obs.PromptProgress != nil {
			obs.PromptProgress(j.fed-j.cached, len(j.prompt)-j.cached)
		}
		if j.fed == len(j.prompt) && obs.PromptDone != nil {
			obs.PromptDone()
		}
	}
	return nil
}
