package local

import (
	"context"
	"errors"
	"fmt"

	"github.com/expertsniper/expertsniper/binding"
	"github.com/expertsniper/expertsniper/sniper"
	"github.com/expertsniper/expertsniper/stream"
)

// What `agent run` needs beyond engine.Engine: the decision and the sniper for its statistics,
// --warm and --pin-hot, and one prompt evaluated with llama.cpp's own generation options
// (--logits-out's logits of every position, no cache reuse, the binding's timings). An engine opened
// with Options.Exclusive runs no scheduler; GenerateTokens and Eval drive its context directly.

// errExclusive is returned by the scheduled calls of an Exclusive engine.
var errExclusive = errors.New("this engine is driven directly (Options.Exclusive): use GenerateTokens or Eval")

// Decision is how the engine runs its model (mode, budget, cache; see Decide).
func (e *Engine) Decision() Decision { return e.decision }

// Sniper is the streamed model's sniper (nil in RAM mode): its statistics, Warm and PinHot.
func (e *Engine) Sniper() *sniper.Sniper {
	if e.weights == nil {
		return nil
	}
	return e.weights.Sniper()
}

// StreamInfo describes how the model is streamed (ok is false in RAM mode).
func (e *Engine) StreamInfo() (stream.Info, bool) {
	if e.weights == nil {
		return stream.Info{}, false
	}
	return e.weights.Info(), true
}

// direct runs fn on the context of an Exclusive engine, from an empty cache.
func (e *Engine) direct(what string, prompt []int32, fn func(c *binding.Context) error) error {
	if !e.opts.Exclusive {
		return fmt.Errorf("%s: the engine was not opened with Options.Exclusive", what)
	}
	if len(prompt) > e.info.Context {
		return fmt.Errorf("%s: prompt of %d tokens, context of %d", what, len(prompt), e.info.Context)
	}
	e.directMu.Lock()
	defer e.directMu.Unlock()
	if err := e.lctx.ClearMemory(); err != nil {
		return fmt.Errorf("%s: %w", what, err)
	}
	return fn(e.lctx)
}

// GenerateTokens evaluates prompt and generates with opts (binding.Context's GenerateTokens:
// per-position logits, token callbacks, timings). Exclusive engines only.
func (e *Engine) GenerateTokens(ctx context.Context, prompt []int32, opts ...binding.GenerateOption) (res binding.Result, err error) {
	err = e.direct("generate", prompt, func(c *binding.Context) error {
		res, err = c.GenerateTokens(ctx, prompt, opts...)
		return err
	})
	return res, err
}

// Eval evaluates prompt, passing each position's logits to fn (nil: none); nothing is sampled.
// Exclusive engines only.
func (e *Engine) Eval(ctx context.Context, prompt []int32, fn binding.LogitsFunc) error {
	return e.direct("evaluate", prompt, func(c *binding.Context) error { return c.Eval(ctx, prompt, fn) })
}
