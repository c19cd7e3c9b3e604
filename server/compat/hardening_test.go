package compat

import (
	"encoding/json"
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

// Behaviours of llama-server that clients rely on, checked side by side on the generated model.
func TestRealModelLlamaServerBehaviours(t *testing.T) {
	model := testmodels.Path(t, compatModel)
	theirs := startLlamaServer(t, model)
	ours := startOursWith(t, model, compatCtx, compatSlots, t.TempDir())

	// "seed": 0 is a seed: the same sampled answer every time (before, 0 meant a random seed).
	seeded := map[string]any{"prompt": "Once upon a time", "n_predict": 16, "temperature": 1.5, "top_k": 0, "seed": 0}
	_, first := postJSON(t, ours.url+"/completion", seeded)
	_, again := postJSON(t, ours.url+"/completion", seeded)
	_, stock := postJSON(t, theirs+"/completion", seeded)
	t.Logf("seed 0: ours %q, again %q, llama-server %q", first["content"], again["content"], stock["content"])
	if first["content"] != again["content"] || first["content"] == "" {
		t.Errorf("seed 0 is not reproducible: %q then %q", first["content"], again["content"])
	}
	if gs := first["generation_settings"].(map[string]any); gs["seed"].(float64) != 0 {
		t.Errorf("generation_settings.seed %v, want 0", gs["seed"])
	}

	// "tokens" holds every generated token, held-back ones included (a stop string's start, half a
	// character): as many as tokens_predicted, and the same as llama-server's.
	for _, body := range []map[string]any{
		{"prompt": "The quick brown fox", "n_predict": 12, "temperature": 0, "return_tokens": true},
		{"prompt": "The quick brown fox", "n_predict": 24, "temperature": 0, "return_tokens": true, "stop": []string{stopFrom(t, ours.url)}},
		{"prompt": "The quick brown fox", "n_predict": 12, "temperature": 0}, // no return_tokens: none
	} {
		_, o := postJSON(t, ours.url+"/completion", body)
		_, th := postJSON(t, theirs+"/completion", body)
		ot, tt := o["tokens"].([]any), th["tokens"].([]any)
		t.Logf("stop %v: ours %d tokens (%v predicted) %q; llama-server %d tokens %q", body["stop"], len(ot), o["tokens_predicted"], o["content"], len(tt), th["content"])
		if len(ot) != len(tt) || jsonString(ot) != jsonString(tt) {
			t.Errorf("tokens: ours %v, llama-server %v", ot, tt)
		}
		if body["return_tokens"] == true && float64(len(ot)) != o["tokens_predicted"].(float64) {
			t.Errorf("%d tokens for %v predicted", len(ot), o["tokens_predicted"])
		}
	}

	// Token-id prompts are evaluated as given: ids that spell a word letter by letter are not merged
	// into the word's own token, so the answer and the count follow the ids.
	var tok struct{ Tokens []int }
	_, tv := postJSON(t, ours.url+"/tokenize", map[string]any{"content": "T h e"})
	raw, _ := json.Marshal(tv["tokens"])
	json.Unmarshal(raw, &tok.Tokens)
	letters := []int{}
	for _, ch := range []string{"T", "h", "e"} {
		_, v := postJSON(t, ours.url+"/tokenize", map[string]any{"content": ch})
		ids := v["tokens"].([]any)
		if len(ids) != 1 {
			t.Skipf("%q is not one token in this vocabulary", ch)
		}
		letters = append(letters, int(ids[0].(float64)))
	}
	body := map[string]any{"prompt": letters, "n_predict": 6, "temperature": 0}
	_, o := postJSON(t, ours.url+"/completion", body)
	_, th := postJSON(t, theirs+"/completion", body)
	t.Logf("token prompt %v: ours %q (%v evaluated), llama-server %q (%v)", letters, o["content"], o["tokens_evaluated"], th["content"], th["tokens_evaluated"])
	if o["content"] != th["content"] || o["tokens_evaluated"] != th["tokens_evaluated"] {
		t.Errorf("token prompt: ours %q (%v evaluated), llama-server %q (%v)", o["content"], o["tokens_evaluated"], th["content"], th["tokens_evaluated"])
	}
}

// stopFrom picks a stop string from the middle of the model's greedy answer, so that generation
// ends on it with some text held back.
func stopFrom(t *testing.T, url string) string {
	_, v := postJSON(t, url+"/completion", map[string]any{"prompt": "The quick brown fox", "n_predict": 24, "temperature": 0})
	content := v["content"].(string)
	if len(content) < 12 {
		t.Skipf("answer %q too short for a stop string", content)
	}
	// Three ASCII letters in the second half: the model's bytes are often not valid UTF-8.
	for i := len(content) / 2; i+3 <= len(content); i++ {
		if isLetters(content[i : i+3]) {
			return content[i : i+3]
		}
	}
	t.Skipf("no ASCII word in %q for a stop string", content)
	return ""
}

func isLetters(s string) bool {
	for _, c := range []byte(s) {
		if (c < 'a' || c > 'z') && (c < 'A' || c > 'Z') {
			return false
		}
	}
	return true
}

func jsonString(v any) string {
	b, _ := json.Marshal(v)
	return string(b)
}
