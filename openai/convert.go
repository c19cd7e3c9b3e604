package openai

import (
	"fmt"
	"math"

	"github.com/expertsniper/expertsniper/engine"
)

// DefaultSampling is what a request gets for every field it does not send: llama-server's defaults
// (b11669), so that clients see the same behaviour on both servers.
var DefaultSampling = engine.Sampling{
	Temperature:   0.8,
	TopK:          40,
	TopP:          0.95,
	MinP:          0.05,
	RepeatPenalty: 1,
	RepeatLastN:   64,
}

// RequestError is a client mistake in a request body; servers answer it with 400 and its message.
type RequestError struct {
	Field   string
	Message string
}

func (e *RequestError) Error() string {
	if e.Field == "" {
		return e.Message
	}
	return fmt.Sprintf("%s: %s", e.Field, e.Message)
}

func badField(field, format string, args ...any) error {
	return &RequestError{Field: field, Message: fmt.Sprintf(format, args...)}
}

// ToEngine resolves the sampling fields against def and checks their ranges.
func (p SamplingParams) ToEngine(def engine.Sampling) (engine.Sampling, error) {
	s := def
	if p.Temperature != nil {
		if !finite(*p.Temperature) || *p.Temperature < 0 {
			return s, badField("temperature", "must be a number >= 0, got %v", *p.Temperature)
		}
		s.Temperature = *p.Temperature
	}
	if p.TopK != nil {
		if *p.TopK < 0 {
			return s, badField("top_k", "must be >= 0, got %d", *p.TopK)
		}
		s.TopK = *p.TopK
	}
	if p.TopP != nil {
		if !finite(*p.TopP) || *p.TopP < 0 || *p.TopP > 1 {
			return s, badField("top_p", "must be between 0 and 1, got %v", *p.TopP)
		}
		s.TopP = *p.TopP
	}
	if p.MinP != nil {
		if !finite(*p.MinP) || *p.MinP < 0 || *p.MinP > 1 {
			return s, badField("min_p", "must be between 0 and 1, got %v", *p.MinP)
		}
		s.MinP = *p.MinP
	}
	if p.RepeatPenalty != nil {
		if !finite(*p.RepeatPenalty) || *p.RepeatPenalty < 0 {
			return s, badField("repeat_penalty", "must be >= 0, got %v", *p.RepeatPenalty)
		}
		s.RepeatPenalty = *p.RepeatPenalty
	}
	if p.RepeatLastN != nil {
		if *p.RepeatLastN < -1 {
			return s, badField("repeat_last_n", "must be >= -1, got %d", *p.RepeatLastN)
		}
		s.RepeatLastN = *p.RepeatLastN
	}
	if p.PresencePenalty != nil {
		if !finite(*p.PresencePenalty) || *p.PresencePenalty < -2 || *p.PresencePenalty > 2 {
			return s, badField("presence_penalty", "must be between -2 and 2, got %v", *p.PresencePenalty)
		}
		s.PresencePenalty = *p.PresencePenalty
	}
	if p.FrequencyPenalty != nil {
		if !finite(*p.FrequencyPenalty) || *p.FrequencyPenalty < -2 || *p.FrequencyPenalty > 2 {
			return s, badField("frequency_penalty", "must be between -2 and 2, got %v", *p.FrequencyPenalty)
		}
		s.FrequencyPenalty = *p.FrequencyPenalty
	}
	if p.Seed != nil {
		switch {
		case *p.Seed < 0, *p.Seed == math.MaxUint32: // llama-server's -1 (LLAMA_DEFAULT_SEED): a random seed
			s.Seed, s.FixedSeed = 0, false
		case *p.Seed > math.MaxUint32:
			return s, badField("seed", "must fit in 32 bits, got %d", *p.Seed)
		default: // 0 included: a seed like any other, as in llama-server
			s.Seed, s.FixedSeed = uint32(*p.Seed), true
		}
	}
	return s, nil
}

func finite(f float32) bool { return !math.IsNaN(float64(f)) && !math.IsInf(float64(f), 0) }

// maxTokens picks the first limit the client sent (OpenAI's newer name first). -1 means no limit,
// as in llama-server; engine.Request uses <= 0 for that.
func maxTokens(fields ...namedLimit) (int, error) {
	for _, f := range fields {
		if f.value == nil {
			continue
		}
		switch v := *f.value; {
		case v == -1:
			return 0, nil
		case v < 1:
			return 0, badField(f.name, "must be a positive number of tokens or -1 for no limit, got %d", v)
		default:
			return v, nil
		}
	}
	return 0, nil
}

type namedLimit struct {
	name  string
	value *int
}

func checkN(n *int) error {
	if n != nil && *n != 1 {
		return badField("n", "only n=1 is supported, got %d", *n)
	}
	return nil
}

func checkSlot(id *int) int {
	if id == nil || *id < 0 {
		return -1
	}
	return *id
}

func checkStops(stops []string) error {
	for i, s := range stops {
		if s == "" {
			return badField("stop", "entry %d is an empty string", i)
		}
	}
	if len(stops) > 16 {
		return badField("stop", "at most 16 stop strings, got %d", len(stops))
	}
	return nil
}

// ToUsage counts the prompt as llama-server does: every prompt token, whether it was evaluated or
// reused from the slot's cache.
func ToUsage(t engine.Timings) Usage {
	prompt := t.PromptTokens + t.CachedTokens
	return Usage{CompletionTokens: t.PredictedTokens, PromptTokens: prompt, TotalTokens: prompt + t.PredictedTokens,
		PromptTokensDetails: PromptTokensDetails{CachedTokens: t.CachedTokens}}
}

// ToTimings converts the engine's timings to llama-server's block.
func ToTimings(t engine.Timings) Timings {
	out := Timings{
		CacheN:             t.CachedTokens,
		PromptN:            t.PromptTokens,
		PromptMS:           t.PromptMS,
		PromptPerSecond:    t.PromptPerSecond,
		PredictedN:         t.PredictedTokens,
		PredictedMS:        t.PredictedMS,
		PredictedPerSecond: t.PredictedPerSecond,
	}
	if t.PromptTokens > 0 {
		out.PromptPerTokenMS = t.PromptMS / float64(t.PromptTokens)
	}
	if t.PredictedTokens > 0 {
		out.PredictedPerTokenMS = t.PredictedMS / float64(t.PredictedTokens)
	}
	return out
}

// ResponseMeta is what every response of one request shares.
type ResponseMeta struct {
	ID          string
	Model       string
	Created     int64
	Fingerprint string
}
