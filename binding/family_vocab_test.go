package binding

import (
	"context"
	"testing"

	"github.com/expertsniper/expertsniper/modelgen/testmodels"
)

// A generated gpt-oss model's vocabulary has harmony's control tokens and llama.cpp treats them as
// in the real model: the headers are single tokens printed as text (so a parser sees them in the
// output), <|call|> and <|return|> end a turn and <|end|> does not.
func TestGptOssVocabularyHasHarmonyTokens(t *testing.T) {
	m, err := LoadModel(context.Background(), testmodels.WithTemplate(t, "qwen3moe-q8_0", "gpt-oss"), WithExtraBufts(false))
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	one := func(text string) Token {
		toks, err := m.Tokenize(text, false, true)
		if err != nil || len(toks) != 1 {
			t.Fatalf("%q is %v (%v), want one token", text, toks, err)
		}
		return toks[0]
	}
	for _, s := range []string{"<|start|>", "<|channel|>", "<|message|>", "<|constrain|>"} {
		tok := one(s)
		if piece, err := m.TokenToPiece(tok, false); err != nil || piece != s {
			t.Errorf("%q prints as %q (%v)", s, piece, err)
		}
		if m.IsEOG(tok) {
			t.Errorf("%q ends generation", s)
		}
	}
	for s, eog := range map[string]bool{"<|call|>": true, "<|return|>": true, "<|end|>": false} {
		if got := m.IsEOG(one(s)); got != eog {
			t.Errorf("%q ends generation: %v, want %v", s, got, eog)
		}
	}
}
