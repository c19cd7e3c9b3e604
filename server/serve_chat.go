package server

import (
	"net/http"

	"github.com/expertsniper/expertsniper/chatfmt"
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
	format, err := s.renderChat(l, &call)
	if err != nil {
		fail(w, r, err)
		return
	}
	meta := s.meta(l, "chatcmpl", req.Model)

	if !call.Stream {
		g, err := s.generate(r.Context(), l, w.Header(), call.Request, false, func(engine.Token) error { return nil })
		if err != nil {
			fail(w, r, err)
			return
		}
		content, calls := splitCalls(format, g.res.Text, call)
		writeJSON(w, http.StatusOK, openai.ToChatCompletion(meta, call, g.res, content, calls))
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
	var hold *chatfmt.Holdback
	if format != nil {
		hold = chatfmt.NewHoldback(format)
	}
	g, err := s.generate(r.Context(), l, w.Header(), call.Request, true, func(t engine.Token) error {
		if err := begin(); err != nil {
			return err
		}
		text := t.Text
		if hold != nil {
			if text = hold.Push(text); text == "" {
				return nil
			}
		}
		return sse.data(openai.ContentChunk(meta, text, t.Logprobs, call.Request.Logprobs))
	})
	if err != nil {
		failStream(sse, r, err)
		return
	}
	if err := begin(); err != nil {
		return
	}
	reason := g.res.FinishReason
	if hold != nil {
		if _, calls := splitCalls(format, g.res.Text, call); len(calls) > 0 {
			if err := sse.data(openai.ToolCallChunk(meta, calls)); err != nil {
				return
			}
			if reason == "stop" {
				reason = "tool_calls"
			}
		} else if rest := hold.Rest(); rest != "" {
			if err := sse.data(openai.ContentChunk(meta, rest, nil, false)); err != nil {
				return
			}
		}
	}
	for _, c := range openai.FinishChunksWithReason(meta, g.res, reason, call.IncludeUsage) {
		if err := sse.data(c); err != nil {
			return
		}
	}
	sse.done()
}

// splitCalls parses a turn into its text and tool calls (all text when there are no tools or the
// calls do not parse: a truncated call stays visible rather than lost).
func splitCalls(format chatfmt.Format, text string, call openai.ChatCall) (string, []chatfmt.Call) {
	if format == nil {
		return text, nil
	}
	content, calls, err := format.Parse(text, call.Tools.Tools)
	if err != nil {
		return text, nil
	}
	return content, calls
}
