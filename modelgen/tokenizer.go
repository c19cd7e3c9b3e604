package modelgen

import (
	"slices"
	"sort"
	"strings"
	"sync"
	"unicode"
)

// Token types of llama.cpp's vocabulary (llama_token_type).
const (
	tokenNormal  int32 = 1
	tokenControl int32 = 3
	tokenUnused  int32 = 5
)

// Special tokens, appended after the byte tokens and merges.
const (
	TokenEndOfText = "<|endoftext|>"
	TokenIMStart   = "<|im_start|>"
	TokenIMEnd     = "<|im_end|>"
)

// ChatTemplate is ChatML, which llama.cpp recognises by its <|im_start|> marker.
const ChatTemplate = "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\\n' + message['content'] + '<|im_end|>' + '\\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\\n' }}{% endif %}"

// Tokenizer is a GPT-2 style byte-level BPE vocabulary: the 256 byte tokens, merges learnt from a
// fixed English text, and the ChatML control tokens.
type Tokenizer struct {
	Tokens []string
	Types  []int32
	Merges []string
	BOS    uint32 // <|endoftext|>
	EOS    uint32 // <|im_end|>
	Pad    uint32
}

// maxMerges bounds the vocabulary (256 + merges + 3).
const maxMerges = 480

var (
	tokenizerOnce sync.Once
	tokenizer     *Tokenizer
)

// DefaultTokenizer is built once, deterministically; it does not depend on the model seed.
func DefaultTokenizer() *Tokenizer {
	tokenizerOnce.Do(func() { tokenizer = buildTokenizer(trainingText, maxMerges) })
	return tokenizer
}

// byteToUnicode is GPT-2's map from bytes to printable runes, used by llama.cpp's BPE vocabularies.
func byteToUnicode() [256]rune {
	var m [256]rune
	printable := func(b int) bool {
		return (b >= '!' && b <= '~') || (b >= 0xA1 && b <= 0xAC) || (b >= 0xAE && b <= 0xFF)
	}
	n := 0
	for b := 0; b < 256; b++ {
		if printable(b) {
			m[b] = rune(b)
		} else {
			m[b] = rune(256 + n)
			n++
		}
	}
	return m
}

func buildTokenizer(text string, nMerges int) *Tokenizer {
	b2u := byteToUnicode()
	t := &Tokenizer{}
	known := map[string]bool{}
	for b := 0; b < 256; b++ {
		s := string(b2u[b])
		t.Tokens = append(t.Tokens, s)
		t.Types = append(t.Types, tokenNormal)
		known[s] = true
	}

	// Pre-tokenize roughly as Qwen2's regex does for plain English: words keep their leading space.
	freq := map[string]int{}
	for _, w := range splitWords(text) {
		freq[w]++
	}
	type word struct {
		syms  []string
		count int
	}
	var words []word
	keys := make([]string, 0, len(freq))
	for w := range freq {
		keys = append(keys, w)
	}
	sort.Strings(keys)
	for _, w := range keys {
		var syms []string
		for _, c := range []byte(w) {
			syms = append(syms, string(b2u[c]))
		}
		words = append(words, word{syms, freq[w]})
	}

	for len(t.Merges) < nMerges {
		pairs := map[[2]string]int{}
		for _, w := range words {
			for i := 0; i+1 < len(w.syms); i++ {
				pairs[[2]string{w.syms[i], w.syms[i+1]}] += w.count
			}
		}
		var best [2]string
		bestCount := 1
		for p, c := range pairs {
			if c > bestCount || (c == bestCount && c > 1 && (p[0]+" "+p[1]) < (best[0]+" "+best[1])) {
				best, bestCount = p, c
			}
		}
		if bestCount < 2 {
			break
		}
		merged := best[0] + best[1]
		t.Merges = append(t.Merges, best[0]+" "+best[1])
		if !known[merged] {
			known[merged] = true
			t.Tokens = append(t.Tokens, merged)
			t.Types = append(t.Types, tokenNormal)
		}
		for wi := range words {
			syms := words[wi].syms
			out := syms[:0:0]
			for i := 0; i < len(syms); i++ {
				if i+1 < len(syms) && syms[i] == best[0] && syms[i+1] == best[1] {
					out = append(out, merged)
					i++
				} else {
					out = append(out, syms[i])
				}
			}
			words[wi].syms = out
		}
	}

	add := func(s string) uint32 {
		t.Tokens = append(t.Tokens, s)
		t.Types = append(t.Types, tokenControl)
		return uint32(len(t.Tokens) - 1)
	}
	t.BOS = add(TokenEndOfText)
	t.Pad = t.BOS
	add(TokenIMStart)
	t.EOS = add(TokenIMEnd)
	return t
}

// familyTokens are the control tokens a family's template writes that the ChatML vocabulary lacks,
// as the family's real vocabulary has them: gpt-oss's harmony headers and message ends. llama.cpp
// knows them by their text: it prints <|start|>, <|channel|>, <|message|> and <|constrain|> as
// text, and <|return|> and <|call|> end a turn (<|end|> does not).
var familyTokens = map[string][]string{
	"gpt-oss": {"<|start|>", "<|end|>", "<|message|>", "<|channel|>", "<|constrain|>", "<|return|>", "<|call|>"},
}

// TokenizerFor is DefaultTokenizer with the control tokens of family's chat template appended.
func TokenizerFor(family string) *Tokenizer {
	base := DefaultTokenizer()
	extra := familyTokens[family]
	if len(extra) == 0 {
		return base
	}
	t := *base
	t.Tokens = append(slices.Clone(base.Tokens), extra...)
	t.Types = slices.Clone(base.Types)
	for range extra {
		t.Types = append(t.Types, tokenControl)
	}
	return &t
}

// splitWords splits into runs of letters (with one leading space if present), single digits, and
// runs of other symbols, which is what Qwen2's pre-tokenizer does on plain English prose.
func splitWords(text string) []string {
	var out []string
	rs := []rune(text)
	for i := 0; i < len(rs); {
		start := i
		if rs[i] == ' ' && i+1 < len(rs) && !unicode.IsSpace(rs[i+1]) {
			i++
		}
		switch {
		case i < len(rs) && unicode.IsLetter(rs[i]):
			for i < len(rs) && unicode.IsLetter(rs[i]) {
				i++
			}
		case i < len(rs) && unicode.IsDigit(rs[i]):
			i++
		case i < len(rs) && unicode.IsSpace(rs[i]):
			for i < len(rs) && unicode.IsSpace(rs[i]) {
				i++
			}
		default:
			for i < len(rs) && !unicode.IsSpace(rs[i]) && !unicode.IsLetter(rs[i]) && !unicode.IsDigit(rs[i]) {
				i++
			}
		}
		if i == start {
			i++
		}
		out = append(out, string(rs[start:i]))
	}
	return out
}

// trainingText is plain English written for this generator; the merges learnt from it make common
// words single tokens, so prompts tokenize the way they would with a real vocabulary.
var trainingText = strings.Join([]string{
	"The quick brown fox jumps over the lazy dog. The dog was not amused, and the fox ran into the forest.",
	"In the morning the sun rises in the east and sets in the west. People go to work, children go to school,",
	"and the city wakes up with the sound of cars, buses and trains. There is a lot of noise in the streets.",
	"What is the capital of France? The capital of France is Paris. What is the capital of Germany? It is Berlin.",
	"Hello, how are you today? I am fine, thank you. What would you like to do this afternoon? Let us go for a walk.",
	"A computer is a machine that can be programmed to carry out sequences of arithmetic or logical operations.",
	"Modern computers can perform generic sets of operations known as programs. These programs enable computers",
	"to perform a wide range of tasks. The model reads the prompt, thinks about the question, and writes an answer.",
	"Water is made of hydrogen and oxygen. The weather will be warm and sunny this week, with a little rain on Sunday.",
	"She said that she would come back later, but she never did. He waited for her at the station for three hours.",
	"Please write a short story about a cat who lives in a small house near the sea and likes to watch the boats.",
	"The history of the world is the history of people who have lived, worked, and thought about their place in it.",
	"Experts in the field have found that the results of the experiment were better than expected for this model.",
	"Reading books is one of the best ways to learn something new. Many people read before they go to sleep at night.",
	"The answer to the question is simple: you should always check your work before you send it to someone else.",
	"Memory, disk and time are the three things that every program needs, and there is never enough of any of them.",
}, " ")
