package server

import (
	"fmt"
	"net/http"

	"github.com/expertsniper/expertsniper/engine"
	"github.com/expertsniper/expertsniper/openai"
)

// handleChat is POST /v1/chat/completions, streamed (SSE) or not.
func (s *Server) handleChat(w http.ResponseWriter, r *http.Request) {
	l := s.engineOr503(w)
	if l == nil {
		return
	}
	var req openai.ChatCompletionRequest
	if err := decodeJSON(r, &req); err != nil {
		fail(w, r, err)
		return
	}
	if err := checkMessageCount("messages", len(req.Messages)); err != nil {
		fail(w, r, err)
		return
	}
	call, err := openai.FromChatRequest(req, s.sampling)
	if err != nil {
		fail(w, r, err)
		return
	}
	prompt, err := l.eng.ApplyTemplate(call.Messages, true)
	if err != nil {
		fail(w, r, fmt.Errorf("apply the chat template: %w", err))
		return
	}
	call.Request.Prompt = prompt
	meta := s.meta(l, "chatcmpl", req.Model)

	if !call.Stream {
		g, err := s.generate(r.Context(), l, w.Header(), call.Request, false, func(engine.Token) error { return nil })
		if err != nil {
			fail(w, r, err)
			return
		}
		writeJSON(w, http.StatusOK, openai.ToChatCompletion(meta, call, g.res))
		return
	}

	sse := newSSE(w)
	started := false
	begin := func() error {
		if started {
			return nil
		}
		started = true
		return sse.data(openai.RoleChunk(meta))
	}
	g, err := s.generate(r.Context(), l, w.Header(), call.Request, true, func(t engine.Token) error {
		if err := begin(); err != nil {
			return err
		}
		return sse.data(openai.ContentChunk(meta, t.Text, t.Logprobs, call.Request.Logprobs))
	})
	if err != nil {
		failStream(sse, r, err)
		return
	}
	if err := begin(); err != nil {
		return
	}
	for _, c := range openai.FinishChunks(meta, g.res, call.IncludeUsage) {
		if err := sse.data(c); err != nil {
			return
		}
	}
	sse.done()
}
