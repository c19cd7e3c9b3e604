package server

import (
	"net/http"
	"strings"

	"github.com/expertsniper/expertsniper/chatfmt"
	"github.com/expertsniper/expertsniper/engine"
	"github.com/expertsniper/expertsniper/openai"
)

// handleResponses is POST /v1/responses: OpenAI's Responses API, stateless as in llama-server (the
// conversation comes in input each time). It runs as a chat (the same template, tools and
// grammar) and answers with a response object, or streamed, with the API's typed events.
func (s *Server) handleResponses(w http.ResponseWriter, r *http.Request) {
	l := s.engineOr503(w)
	if l == nil {
		return
	}
	var req openai.ResponsesRequest
	if err := decodeJSON(r, &req); err != nil {
		fail(w, r, err)
		return
	}
	call, err := openai.FromResponsesRequest(req, s.sampling)
	if err != nil {
		fail(w, r, err)
		return
	}
	if err := checkMessageCount("input", len(call.Chat.Messages)); err != nil {
		fail(w, r, err)
		return
	}
	format, err := s.renderChat(l, &call.Chat)
	if err != nil {
		fail(w, r, err)
		return
	}
	meta := s.meta(l, "resp", req.Model)
	resp := openai.NewResponse(meta, call)
	msgID := "msg_" + randomID()

	if !req.Stream {
		g, err := s.generate(r.Context(), l, w.Header(), call.Chat.Request, false, func(engine.Token) error { return nil })
		if err != nil {
			fail(w, r, err)
			return
		}
		content, calls := splitCalls(format, g.res.Text, call.Chat)
		writeJSON(w, http.StatusOK, openai.FinishResponse(resp, g.res, msgID, content, openai.ToWireCalls(calls, false)))
		return
	}

	ev := &responseEvents{sse: newSSE(w)}
	if err := ev.send("response.created", map[string]any{"response": resp}); err != nil {
		return
	}
	if err := ev.send("response.in_progress", map[string]any{"response": resp}); err != nil {
		return
	}
	var text strings.Builder
	textStarted := false
	startText := func() error {
		if textStarted {
			return nil
		}
		textStarted = true
		if err := ev.send("response.output_item.added", map[string]any{"output_index": 0, "item": openai.MessageItem(msgID, "", "in_progress")}); err != nil {
			return err
		}
		return ev.send("response.content_part.added", map[string]any{"item_id": msgID, "output_index": 0, "content_index": 0,
			"part": openai.ResponsePart{Type: "output_text", Annotations: []any{}}})
	}
	delta := func(piece string) error {
		if err := startText(); err != nil {
			return err
		}
		text.WriteString(piece)
		return ev.send("response.output_text.delta", map[string]any{"item_id": msgID, "output_index": 0, "content_index": 0, "delta": piece})
	}
	var hold *chatfmt.Holdback
	if format != nil {
		hold = chatfmt.NewHoldback(format)
	}
	g, err := s.generate(r.Context(), l, w.Header(), call.Chat.Request, true, func(t engine.Token) error {
		piece := t.Text
		if hold != nil {
			piece = hold.Push(piece)
		}
		if piece == "" {
			return nil
		}
		return delta(piece)
	})
	if err != nil {
		if r.Context().Err() == nil {
			ev.sse.fail(toAPIError(err))
		}
		return
	}
	_, calls := splitCalls(format, g.res.Text, call.Chat)
	if len(calls) == 0 && hold != nil && hold.Rest() != "" {
		if err := delta(hold.Rest()); err != nil {
			return
		}
	}
	index := 0
	if textStarted || len(calls) == 0 {
		if err := startText(); err != nil {
			return
		}
		done := []struct {
			name string
			v    map[string]any
		}{
			{"response.output_text.done", map[string]any{"item_id": msgID, "output_index": 0, "content_index": 0, "text": text.String()}},
			{"response.content_part.done", map[string]any{"item_id": msgID, "output_index": 0, "content_index": 0,
				"part": openai.ResponsePart{Type: "output_text", Text: text.String(), Annotations: []any{}}}},
			{"response.output_item.done", map[string]any{"output_index": 0, "item": openai.MessageItem(msgID, text.String(), "completed")}},
		}
		for _, d := range done {
			if err := ev.send(d.name, d.v); err != nil {
				return
			}
		}
		index = 1
	}
	wire := openai.ToWireCalls(calls, false)
	for i, c := range wire {
		idx := index + i
		started := openai.FunctionCallItem(c, "in_progress")
		empty := ""
		started.Arguments = &empty
		steps := []struct {
			name string
			v    map[string]any
		}{
			{"response.output_item.added", map[string]any{"output_index": idx, "item": started}},
			{"response.function_call_arguments.delta", map[string]any{"item_id": started.ID, "output_index": idx, "delta": c.Function.Arguments}},
			{"response.function_call_arguments.done", map[string]any{"item_id": started.ID, "output_index": idx, "arguments": c.Function.Arguments}},
			{"response.output_item.done", map[string]any{"output_index": idx, "item": openai.FunctionCallItem(c, "completed")}},
		}
		for _, st := range steps {
			if err := ev.send(st.name, st.v); err != nil {
				return
			}
		}
	}
	final := openai.FinishResponse(resp, g.res, msgID, text.String(), wire)
	ev.send("response.completed", map[string]any{"response": final})
}

// responseEvents writes the Responses API's typed events, numbered in order.
type responseEvents struct {
	sse *sseWriter
	seq int
}

func (e *responseEvents) send(typ string, v map[string]any) error {
	v["type"] = typ
	v["sequence_number"] = e.seq
	e.seq++
	return e.sse.event(typ, v)
}
