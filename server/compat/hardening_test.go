package compat

import (
	"strings"
	"testing"
	"time"

	"github.com/expertsniper/expertsniper/modelgen/testmodels"
)

// With llama.cpp's real tokenizer, requests that would take minutes of tokenizing are refused at
// once: 100,000 chat messages (467 s before), and a long prompt full of special tokens.
func TestRealModelOversizedRequestsRefusedQuickly(t *testing.T) {
	model := testmodels.Path(t, compatModel)
	ours := startOursWith(t, model, 2048, 1, t.TempDir())
	msgs := make([]map[string]string, 100_000)
	for i := range msgs {
		msgs[i] = map[string]string{"role": "user", "content": "hi"}
	}
	special := strings.Repeat("<|im_start|>user\nhi<|im_end|>\n", 4000) // 120 KB, 12,000 special tokens
	for name, c := range map[string]struct {
		path string
		body map[string]any
	}{
		"100,000 messages":         {"/v1/chat/completions", map[string]any{"messages": msgs}},
		"special-token prompt":     {"/completion", map[string]any{"prompt": strings.Repeat(special, 10)}},
		"120 KB of special tokens": {"/completion", map[string]any{"prompt": special}},
	} {
		start := time.Now()
		resp, v := postJSON(t, ours.url+c.path, c.body)
		took := time.Since(start)
		t.Logf("%s: %d in %v", name, resp.StatusCode, took)
		if resp.StatusCode != 400 {
			t.Errorf("%s: %d %v, want 400", name, resp.StatusCode, v)
		}
		// Generous for a loaded machine: the point is seconds, not minutes.
		if took > 10*time.Second {
			t.Errorf("%s: refused after %v", name, took)
		}
	}
}
