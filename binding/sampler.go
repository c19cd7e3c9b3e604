package binding

/*
#include "shim.h"
*/
import "C"

import (
	"fmt"
	"math"
	"unsafe"
)

// SamplerParams choose the next token. The zero value is greedy decoding.
type SamplerParams struct {
	Temperature      float32 // <= 0: greedy
	TopK             int     // 0: off
	TopP             float32 // 0 or >= 1: off
	MinP             float32 // 0: off
	RepeatPenalty    float32 // 0 or 1: off
	RepeatLastN      int     // tokens the penalties look back on (0 with a penalty set: 64)
	PresencePenalty  float32
	FrequencyPenalty float32
	Seed             uint32 // 0: a random seed, unless FixedSeed
	// FixedSeed uses Seed as given, 0 included (llama-server's "seed": 0 is a seed like any other).
	FixedSeed bool

	// Grammar constrains every sampled token to a GBNF grammar (root rule "root"); "" = none.
	Grammar string
	// GrammarTriggerPatterns make Grammar lazy: it applies only once the generated text matches one
	// of these regular expressions (ECMAScript, matched from the start of the output), and is fed the
	// text from the pattern's first group on. Empty: the grammar applies from the first token.
	GrammarTriggerPatterns []string
}

// Sampler is a llama.cpp sampler chain: penalties, then top-k, top-p, min-p and temperature, then a
// seeded random draw (or greedy). It is not safe for concurrent use. Close frees it.
type Sampler struct {
	c *C.struct_llama_sampler
}

// NewSampler builds a chain for m's vocabulary.
func NewSampler(m *Model, p SamplerParams) (*Sampler, error) {
	if err := p.validate(); err != nil {
		return nil, fmt.Errorf("new sampler: %w", err)
	}
	if _, err := m.ptr(); err != nil {
		return nil, fmt.Errorf("new sampler: %w", err)
	}
	chain := C.llama_sampler_chain_init(C.llama_sampler_chain_default_params())
	if chain == nil {
		return nil, &Error{Op: "llama_sampler_chain_init", Msg: "could not create a sampler chain"}
	}
	add := func(s *C.struct_llama_sampler) { C.llama_sampler_chain_add(chain, s) }
	if p.Grammar != "" {
		// First in the chain, so that the samplers after it only ever see tokens the grammar allows.
		g := newGrammarSampler(m, p.Grammar, p.GrammarTriggerPatterns)
		if g == nil {
			C.llama_sampler_free(chain)
			return nil, &Error{Op: "llama_sampler_init_grammar", Msg: "the grammar does not parse (llama.cpp logs the reason)"}
		}
		add(g)
	}
	penalties := (p.RepeatPenalty != 0 && p.RepeatPenalty != 1) || p.PresencePenalty != 0 || p.FrequencyPenalty != 0
	if penalties {
		rep := p.RepeatPenalty
		if rep == 0 {
			rep = 1
		}
		lastN := p.RepeatLastN
		if lastN == 0 {
			lastN = 64
		}
		add(C.llama_sampler_init_penalties(C.int32_t(m.VocabSize()), C.int32_t(lastN), C.float(rep),
			C.float(p.FrequencyPenalty), C.float(p.PresencePenalty)))
	}
	if p.Temperature <= 0 {
		add(C.llama_sampler_init_greedy())
	} else {
		if p.TopK > 0 {
			add(C.llama_sampler_init_top_k(C.int32_t(p.TopK)))
		}
		if p.TopP > 0 && p.TopP < 1 {
			add(C.llama_sampler_init_top_p(C.float(p.TopP), 1))
		}
		if p.MinP > 0 {
			add(C.llama_sampler_init_min_p(C.float(p.MinP), 1))
		}
		add(C.llama_sampler_init_temp(C.float(p.Temperature)))
		seed := C.uint32_t(C.LLAMA_DEFAULT_SEED)
		if p.Seed != 0 || p.FixedSeed {
			seed = C.uint32_t(p.Seed)
		}
		add(C.llama_sampler_init_dist(seed))
	}
	s := &Sampler{c: chain}
	setLeakCheck(s, "Sampler", func(s *Sampler) bool { return s.c != nil })
	return s, nil
}

func (p SamplerParams) validate() error {
	bad := func(name string, v float32) bool { return math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) }
	for name, v := range map[string]float32{"temperature": p.Temperature, "top_p": p.TopP, "min_p": p.MinP,
		"repeat penalty": p.RepeatPenalty, "presence penalty": p.PresencePenalty, "frequency penalty": p.FrequencyPenalty} {
		if bad(name, v) {
			return fmt.Errorf("%s is %v", name, v)
		}
	}
	switch {
	case p.TopK < 0:
		return fmt.Errorf("top_k %d is negative", p.TopK)
	case p.TopP < 0:
		return fmt.Errorf("top_p %v is negative", p.TopP)
	case p.MinP < 0 || p.MinP > 1:
		return fmt.Errorf("min_p %v is outside [0,1]", p.MinP)
	case p.RepeatPenalty < 0:
		return fmt.Errorf("repeat penalty %v is negative", p.RepeatPenalty)
	case p.RepeatLastN < -1:
		return fmt.Errorf("repeat_last_n %d is below -1", p.RepeatLastN)
	}
	return nil
}

// newGrammarSampler builds llama.cpp's grammar sampler, lazy when there are trigger patterns. It
// returns nil when the grammar or a pattern does not parse.
func newGrammarSampler(m *Model, grammar string, triggers []string) *C.struct_llama_sampler {
	cg := C.CString(grammar)
	defer C.free(unsafe.Pointer(cg))
	root := C.CString("root")
	defer C.free(unsafe.Pointer(root))
	if len(triggers) == 0 {
		return C.llama_sampler_init_grammar(m.vocab, cg, root)
	}
	// The array of C strings lives in Go memory: it holds only C pointers, which cgo allows.
	patterns := make([]*C.char, len(triggers))
	for i, t := range triggers {
		patterns[i] = C.CString(t)
		defer C.free(unsafe.Pointer(patterns[i]))
	}
	return C.llama_sampler_init_grammar_lazy_patterns(m.vocab, cg, root, &patterns[0], C.size_t(len(patterns)), nil, 0)
}

// Sample picks a token from output i of c's last decode (-1: the last output) and records it in
// the chain's history (for penalties).
func (s *Sampler) Sample(c *Context, i int) (Token, error) {
	if s.c == nil {
		return NoToken, ErrClosed
	}
	cc, err := c.ptr()
	if err != nil {
		return NoToken, err
	}
	if C.llama_get_logits_ith(cc, C.int32_t(i)) == nil {
		return NoToken, &Error{Op: "llama_sampler_sample", Code: i, Msg: fmt.Sprintf("no logits for output %d of the last decode", i)}
	}
	return Token(C.llama_sampler_sample(s.c, cc, C.int32_t(i))), nil
}

// Accept records tok in the chain's history without sampling (e.g. prompt tokens for penalties).
func (s *Sampler) Accept(tok Token) {
	if s.c != nil {
		C.llama_sampler_accept(s.c, C.llama_token(tok))
	}
}

// Reset clears the chain's history and reseeds nothing.
func (s *Sampler) Reset() {
	if s.c != nil {
		C.llama_sampler_reset(s.c)
	}
}

// Close frees the chain. It is idempotent.
func (s *Sampler) Close() error {
	if s.c != nil {
		C.llama_sampler_free(s.c)
		s.c = nil
	}
	return nil
}
