package server

import (
	"net/http"

	"github.com/expertsniper/expertsniper/engine"
	"github.com/expertsniper/expertsniper/openai"
)

// handleTextCompletion is POST /v1/completions (OpenAI's legacy text completions).
func (s *Server) handleTextCompletion(w http.ResponseWriter, r *http.Request) {
	l := s.engineOr503(w)
	if l == nil {
		return
	}
	var req openai.CompletionRequest
	if err := decodeJSON(r, &req); err != nil {
		fail(w, r, err)
		return
	}
	call, err := openai.FromCompletionRequest(req, s.sampling)
	if err != nil {
		fail(w, r, err)
		return
	}
	meta := s.meta(l, "cmpl", req.Model)

	if !call.Stream {
		g, err := s.generate(r.Context(), l, w.Header(), call.Request, false, func(engine.Token) error { return nil })
		if err != nil {
			fail(w, r, err)
			return
		}
		text := g.res.Text
		if call.Echo {
			text = call.Request.Prompt + text
		}
		writeJSON(w, http.StatusOK, openai.ToTextCompletion(meta, call, text, g.res))
		return
	}

	sse := newSSE(w)
	echoed := !call.Echo
	offset := 0 // where the next piece starts in the choice's text
	if call.Echo {
		offset = len(call.Request.Prompt)
	}
	g, err := s.generate(r.Context(), l, w.Header(), call.Request, true, func(t engine.Token) error {
		if !echoed {
			echoed = true
			if err := sse.data(openai.TextChunk(meta, call.Request.Prompt, nil, 0, false)); err != nil {
				return err
			}
		}
		c := openai.TextChunk(meta, t.Text, t.Logprobs, offset, call.Request.Logprobs)
		offset += len(t.Text)
		return sse.data(c)
	})
	if err != nil {
		failStream(sse, r, err)
		return
	}
	if !echoed {
		if err := sse.data(openai.TextChunk(meta, call.Request.Prompt, nil, 0, false)); err != nil {
			return
		}
	}
	for _, c := range openai.TextFinishChunks(meta, g.res, call.IncludeUsage) {
		if err := sse.data(c); err != nil {
			return
		}
	}
	sse.done()
}

// handleNativeCompletion is llama-server's POST /completion: a raw prompt (text or token ids), its own
// response object, and when streamed one event per token ending with the full object (no [DONE]).
func (s *Server) handleNativeCompletion(w http.ResponseWriter, r *http.Request) {
	l := s.engineOr503(w)
	if l == nil {
		return
	}
	var req openai.NativeCompletionRequest
	if err := decodeJSON(r, &req); err != nil {
		fail(w, r, err)
		return
	}
	call, err := openai.FromNativeRequest(req, s.sampling)
	if err != nil {
		fail(w, r, err)
		return
	}
	if call.Prompt.IsTokens {
		// The ids are evaluated as given (detokenizing and tokenizing again can give other tokens);
		// their text serves the slot choice, saved-context matching and the response's prompt.
		if len(call.Prompt.Tokens) == 0 {
			fail(w, r, badRequest("prompt is an empty array of tokens"))
			return
		}
		text, err := l.eng.Detokenize(call.Prompt.Tokens)
		if err != nil {
			fail(w, r, badRequest("prompt tokens: %v", err))
			return
		}
		call.Request.Prompt = text
		call.Request.PromptTokens = call.Prompt.Tokens
	}
	meta := s.meta(l, "cmpl", "")

	if !call.Stream {
		g, err := s.generate(r.Context(), l, w.Header(), call.Request, false, func(engine.Token) error { return nil })
		if err != nil {
			fail(w, r, err)
			return
		}
		writeJSON(w, http.StatusOK, openai.ToNativeCompletion(meta, call, g.slot, g.res.Text, g.res.Tokens, g.res))
		return
	}

	sse := newSSE(w)
	slot := -1
	n := 0
	var evaluated int
	g, err := s.generate(r.Context(), l, w.Header(), call.Request, true, func(t engine.Token) error {
		n++
		if n == 1 {
			evaluated = promptTokenEstimate(l, call.Request)
			slot = t.Slot
		}
		c := openai.NativeChunk{Index: 0, Content: t.Text, Tokens: nonNil(t.IDs), Stop: false,
			IDSlot: slot, TokensPredicted: n, TokensEvaluated: evaluated}
		if call.Request.Logprobs {
			c.Probabilities = openai.ToChatLogprobs(t.Logprobs)
		}
		return sse.data(c)
	})
	if err != nil {
		failStream(sse, r, err)
		return
	}
	sse.data(openai.ToNativeCompletion(meta, call, g.slot, "", nil, g.res))
}

// promptTokenEstimate counts the prompt's tokens for the streamed events (the exact count arrives
// in the last event's timings).
func promptTokenEstimate(l *loaded, req engine.Request) int {
	if req.PromptTokens != nil {
		return len(req.PromptTokens)
	}
	toks, err := l.eng.Tokenize(req.Prompt, true, true)
	if err != nil {
		return 0
	}
	return len(toks)
}
