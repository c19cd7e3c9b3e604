package local

import (
	"github.com/expertsniper/expertsniper/sniper"
	"github.com/expertsniper/expertsniper/stream"
)

// What `agent run` needs beyond engine.Engine: the decision, and the sniper for its statistics,
// --warm and --pin-hot. Its request goes through the scheduler like any other, watched by an
// Observer (observe.go) for --logits-out and --stats.

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
