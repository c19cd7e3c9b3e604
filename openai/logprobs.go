package openai

import (
	"github.com/expertsniper/expertsniper/engine"
)

// maxTopLogprobs is OpenAI's limit on top_logprobs (llama-server caps n_probs the same way in
// practice: every alternative costs a pass over the vocabulary).
const maxTopLogprobs = 20

// TopLogprob is one alternative token at a position.
type TopLogprob struct {
	ID      int32   `json:"id"` // llama-server's addition
	Token   string  `json:"token"`
	Logprob float32 `json:"logprob"`
	Bytes   []int   `json:"bytes"`
}

// TokenLogprob is a generated token's entry in OpenAI's chat logprobs (and llama-server's
// completion_probabilities, which adds the id).
type TokenLogprob struct {
	ID          int32        `json:"id"` // llama-server's addition
	Token       string       `json:"token"`
	Logprob     float32      `json:"logprob"`
	Bytes       []int        `json:"bytes"`
	TopLogprobs []TopLogprob `json:"top_logprobs"`
}

// ChoiceLogprobs is a chat choice's (or chunk choice's) "logprobs" object.
type ChoiceLogprobs struct {
	Content []TokenLogprob `json:"content"`
}

// LegacyLogprobs is the "logprobs" object of OpenAI's legacy /v1/completions.
type LegacyLogprobs struct {
	Tokens        []string             `json:"tokens"`
	TokenLogprobs []float32            `json:"token_logprobs"`
	TopLogprobs   []map[string]float32 `json:"top_logprobs"`
	TextOffset    []int                `json:"text_offset"`
}

func tokenBytes(s string) []int {
	out := make([]int, len(s))
	for i := 0; i < len(s); i++ {
		out[i] = int(s[i])
	}
	return out
}

// ToChatLogprobs converts the engine's logprobs to OpenAI's chat shape (with llama-server's ids).
func ToChatLogprobs(lps []engine.TokenLogprob) []TokenLogprob {
	out := make([]TokenLogprob, 0, len(lps))
	for _, lp := range lps {
		t := TokenLogprob{ID: lp.ID, Token: lp.Text, Logprob: lp.Logprob, Bytes: tokenBytes(lp.Text), TopLogprobs: []TopLogprob{}}
		for _, alt := range lp.Top {
			t.TopLogprobs = append(t.TopLogprobs, TopLogprob{ID: alt.ID, Token: alt.Text, Logprob: alt.Logprob, Bytes: tokenBytes(alt.Text)})
		}
		out = append(out, t)
	}
	return out
}

// ToLegacyLogprobs converts to the legacy completions shape; offset is where the generated text
// starts in the choice's text (the prompt's length with echo).
func ToLegacyLogprobs(lps []engine.TokenLogprob, offset int) *LegacyLogprobs {
	out := &LegacyLogprobs{Tokens: []string{}, TokenLogprobs: []float32{}, TopLogprobs: []map[string]float32{}, TextOffset: []int{}}
	for _, lp := range lps {
		out.Tokens = append(out.Tokens, lp.Text)
		out.TokenLogprobs = append(out.TokenLogprobs, lp.Logprob)
		top := map[string]float32{}
		for _, alt := range lp.Top {
			if _, dup := top[alt.Text]; !dup {
				top[alt.Text] = alt.Logprob
			}
		}
		out.TopLogprobs = append(out.TopLogprobs, top)
		out.TextOffset = append(out.TextOffset, offset)
		offset += len(lp.Text)
	}
	return out
}

// chatLogprobsRequest checks chat's logprobs/top_logprobs and sets them on req.
func chatLogprobsRequest(logprobs *bool, top *int, req *engine.Request) error {
	if top != nil {
		if logprobs == nil || !*logprobs {
			return badField("top_logprobs", "requires logprobs: true")
		}
		if *top < 0 || *top > maxTopLogprobs {
			return badField("top_logprobs", "must be between 0 and %d, got %d", maxTopLogprobs, *top)
		}
		req.TopLogprobs = *top
	}
	req.Logprobs = logprobs != nil && *logprobs
	return nil
}

// countLogprobsRequest sets an integer count of alternatives (legacy logprobs, native n_probs).
func countLogprobsRequest(field string, n *int, req *engine.Request) error {
	if n == nil || *n == 0 {
		return nil
	}
	if *n < 0 || *n > maxTopLogprobs {
		return badField(field, "must be between 0 and %d, got %d", maxTopLogprobs, *n)
	}
	req.Logprobs, req.TopLogprobs = true, *n
	return nil
}
