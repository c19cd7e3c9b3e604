package openai

import (
	"github.com/expertsniper/expertsniper/engine"
)

// CompletionCall is a validated /v1/completions request in engine terms.
type CompletionCall struct {
	Request      engine.Request
	Echo         bool
	Stream       bool
	IncludeUsage bool
}

// FromCompletionRequest validates a text completion request. Only one prompt per request is
// supported (a list of one string is accepted, as OpenAI's SDKs sometimes send it).
func FromCompletionRequest(req CompletionRequest, def engine.Sampling) (CompletionCall, error) {
	var call CompletionCall
	if len(req.Prompt) != 1 {
		return call, badField("prompt", "must be one string (got %d prompts)", len(req.Prompt))
	}
	if err := checkN(req.N); err != nil {
		return call, err
	}
	if err := checkStops(req.Stop); err != nil {
		return call, err
	}
	limit, err := maxTokens(namedLimit{"max_tokens", req.MaxTokens}, namedLimit{"n_predict", req.NPredict})
	if err != nil {
		return call, err
	}
	sampling, err := req.SamplingParams.ToEngine(def)
	if err != nil {
		return call, err
	}
	call.Request = engine.Request{Prompt: req.Prompt[0], MaxTokens: limit, Stop: req.Stop, Sampling: sampling,
		Slot: checkSlot(req.IDSlot)}
	if req.Logprobs != nil {
		// logprobs: 0 still asks for the chosen tokens' own log-probabilities.
		if err := countLogprobsRequest("logprobs", req.Logprobs, &call.Request); err != nil {
			return call, err
		}
		call.Request.Logprobs = true
	}
	call.Echo = req.Echo
	call.Stream = req.Stream
	call.Request.Stream = req.Stream
	call.IncludeUsage = req.StreamOptions != nil && req.StreamOptions.IncludeUsage
	return call, nil
}

func textCompletion(meta ResponseMeta, choices []TextChoice) TextCompletion {
	return TextCompletion{
		Choices:           choices,
		Created:           meta.Created,
		Model:             meta.Model,
		SystemFingerprint: meta.Fingerprint,
		Object:            "text_completion",
		ID:                meta.ID,
	}
}

// ToTextCompletion builds the non-streamed /v1/completions response; text is the prompt plus the
// generation when the request asked for echo.
func ToTextCompletion(meta ResponseMeta, call CompletionCall, text string, res engine.Result) TextCompletion {
	reason := res.FinishReason
	usage := ToUsage(res.Timings)
	timings := ToTimings(res.Timings)
	choice := TextChoice{Text: text, Index: 0, FinishReason: &reason}
	if call.Request.Logprobs {
		choice.Logprobs = ToLegacyLogprobs(res.Logprobs, len(text)-len(res.Text))
	}
	out := textCompletion(meta, []TextChoice{choice})
	out.Usage = &usage
	out.Timings = &timings
	return out
}

// TextChunk is one streamed /v1/completions event carrying a piece (and, when asked for, the
// logprobs of the tokens it came from; offset is where the piece starts in the whole text).
func TextChunk(meta ResponseMeta, text string, lps []engine.TokenLogprob, offset int, withLogprobs bool) TextCompletion {
	c := TextChoice{Text: text, Index: 0}
	if withLogprobs {
		c.Logprobs = ToLegacyLogprobs(lps, offset)
	}
	return textCompletion(meta, []TextChoice{c})
}

// TextFinishChunks ends a streamed text completion, like FinishChunks does for chat: usage and
// timings on the last chunk only.
func TextFinishChunks(meta ResponseMeta, res engine.Result, includeUsage bool) []TextCompletion {
	reason := res.FinishReason
	usage := ToUsage(res.Timings)
	timings := ToTimings(res.Timings)
	out := []TextCompletion{textCompletion(meta, []TextChoice{{Text: "", Index: 0, FinishReason: &reason}})}
	if includeUsage {
		out = append(out, textCompletion(meta, []TextChoice{}))
	}
	out[len(out)-1].Usage = &usage
	out[len(out)-1].Timings = &timings
	return out
}
