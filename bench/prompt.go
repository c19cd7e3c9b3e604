package bench

import (
	"fmt"
	"strings"
)

// Tokenizer is what FitPrompt needs from a model's vocabulary (addSpecial as `agent run` tokenizes:
// with the model's BOS where it adds one).
type Tokenizer interface {
	Tokenize(text string, addSpecial bool) ([]int32, error)
	Detokenize(tokens []int32) (string, error)
}

// filler is ordinary text: the prompt's content does not matter for speed, only its length.
const filler = "The committee reviewed the quarterly report on river levels, crop yields and the price of grain, " +
	"and asked the engineers to explain why the northern pumps had failed twice in one week. "

// FitPrompt returns a text that tokenizes to exactly target tokens as `agent run` tokenizes it (so
// that our runs evaluate the same number of prompt tokens as llama-bench's pp test), and its length.
func FitPrompt(tok Tokenizer, target int) (string, int, error) {
	if target < 1 {
		return "", 0, fmt.Errorf("prompt of %d tokens: want at least 1", target)
	}
	text := filler
	var toks []int32
	for i := 0; ; i++ {
		var err error
		if toks, err = tok.Tokenize(text, false); err != nil {
			return "", 0, fmt.Errorf("tokenize the bench prompt: %w", err)
		}
		if len(toks) >= target+8 {
			break
		}
		if i > 1+target/4 {
			return "", 0, fmt.Errorf("tokenize the bench prompt: %d characters give only %d tokens", len(text), len(toks))
		}
		text += filler
	}
	best, bestN := "", 0
	// Cutting at a token boundary and re-tokenizing usually gives the same tokens plus the model's
	// BOS; walk down until the count matches.
	for k := target; k >= 1 && k >= target-8; k-- {
		s, err := tok.Detokenize(toks[:k])
		if err != nil {
			return "", 0, fmt.Errorf("detokenize the bench prompt: %w", err)
		}
		s = strings.TrimRight(s, "\n")
		if s == "" {
			continue
		}
		again, err := tok.Tokenize(s, true)
		if err != nil {
			return "", 0, fmt.Errorf("tokenize the bench prompt: %w", err)
		}
		if len(again) == target {
			return s, target, nil
		}
		if len(again) < target && len(again) > bestN {
			best, bestN = s, len(again)
		}
	}
	if bestN == 0 {
		return "", 0, fmt.Errorf("could not make a prompt of %d tokens", target)
	}
	return best, bestN, nil
}
