package compat

import (
	"context"
	"testing"

	"github.com/expertsniper/expertsniper/engine"
	"github.com/expertsniper/expertsniper/engine/local"
)

// openEngine loads model in RAM with llama.cpp's defaults (as llama-server does) and nCtx tokens
// shared by slots slots, with agent serve's context checkpoints.
func openEngine(t *testing.T, model string, nCtx, slots int) engine.Engine {
	t.Helper()
	e, err := local.Open(context.Background(), model, local.Options{Slots: slots, Context: nCtx / slots, Threads: 2, Mode: "ram", Checkpoints: local.DefaultCheckpoints})
	if err != nil {
		t.Fatalf("open %s: %v", model, err)
	}
	t.Cleanup(func() {
		if err := e.Close(); err != nil {
			t.Errorf("close the engine: %v", err)
		}
	})
	return e
}
