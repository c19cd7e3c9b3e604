package binding

import (
	"math"
	"sort"
)

// TokenLogprob is the log-probability of one token at one position, from the model's raw logits
// (before any sampler changes them, as llama-server reports n_probs and OpenAI's logprobs), with
// the most likely alternatives when they were asked for.
type TokenLogprob struct {
	Token   Token
	Text    string // the token's piece, special tokens rendered
	Logprob float32
	Top     []TokenLogprob // most likely first; nil unless alternatives were asked for
}

// Logprobs returns the log-softmax of logits at tok and the top most likely tokens.
func (m *Model) Logprobs(logits []float32, tok Token, top int) (TokenLogprob, error) {
	maxLogit := float32(math.Inf(-1))
	for _, l := range logits {
		maxLogit = max(maxLogit, l)
	}
	var sum float64
	for _, l := range logits {
		sum += math.Exp(float64(l - maxLogit))
	}
	logZ := float64(maxLogit) + math.Log(sum)
	lp := func(t Token) float32 { return float32(float64(logits[t]) - logZ) }

	out := TokenLogprob{Token: tok, Logprob: lp(tok)}
	var err error
	if out.Text, err = m.TokenToPiece(tok, true); err != nil {
		return out, err
	}
	if top <= 0 {
		return out, nil
	}
	for _, t := range topTokens(logits, top) {
		text, err := m.TokenToPiece(t, true)
		if err != nil {
			return out, err
		}
		out.Top = append(out.Top, TokenLogprob{Token: t, Text: text, Logprob: lp(t)})
	}
	return out, nil
}

// topTokens returns the n tokens with the highest logits, highest first (ties: lower id first).
func topTokens(logits []float32, n int) []Token {
	n = min(n, len(logits))
	best := make([]Token, 0, n+1)
	better := func(a, b Token) bool { return logits[a] > logits[b] || (logits[a] == logits[b] && a < b) }
	for i := range logits {
		t := Token(i)
		if len(best) == n && !better(t, best[n-1]) {
			continue
		}
		at := sort.Search(len(best), func(j int) bool { return better(t, best[j]) })
		best = append(best, 0)
		copy(best[at+1:], best[at:])
		best[at] = t
		if len(best) > n {
			best = best[:n]
		}
	}
	return best
}
