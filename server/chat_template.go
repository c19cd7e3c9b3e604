package server

import (
	"fmt"
	"strings"

	"github.com/expertsniper/expertsniper/chatfmt"
	"github.com/expertsniper/expertsniper/engine"
	"github.com/expertsniper/expertsniper/openai"
)

// compileTemplate compiles the model's own chat template as Jinja; nil when the model has none or
// it does not compile (then llama.cpp's built-in template handling is used for plain chats).
func (s *Server) compileTemplate(info engine.ModelInfo) *chatfmt.Template {
	if info.ChatTemplate == "" {
		return nil
	}
	t, err := chatfmt.Parse(info.ChatTemplate, info.BOSText, info.EOSText)
	if err != nil {
		s.log.Warn("the model's chat template does not compile as Jinja; using llama.cpp's template handling (no tool calls)", "error", err)
		return nil
	}
	return t
}

// renderChat sets call's prompt from the model's template and, when the call has tools, its
// grammar from the template's tool-call format, which it returns (nil without tools).
func (s *Server) renderChat(l *loaded, call *openai.ChatCall) (chatfmt.Format, error) {
	tools := call.Tools.Tools
	needsJinja := tools != nil
	for _, m := range call.Messages {
		needsJinja = needsJinja || len(m.ToolCalls) > 0 || m.ToolCallID != ""
	}
	if l.tmpl == nil && needsJinja {
		return nil, &openai.RequestError{Field: "tools", Message: "the model has no chat template that takes tools (a Jinja tokenizer.chat_template)"}
	}
	if l.tmpl != nil {
		prompt, err := l.tmpl.Render(openai.ToChatfmtMessages(call.Messages), tools, true)
		switch {
		case err == nil:
			call.Request.Prompt = prompt
		case needsJinja:
			return nil, &openai.RequestError{Field: "messages", Message: err.Error()}
		default:
			s.log.Warn("rendering the chat template failed; using llama.cpp's template handling", "error", err)
		}
	}
	if call.Request.Prompt == "" {
		prompt, err := l.eng.ApplyTemplate(call.Messages, true)
		if err != nil {
			return nil, fmt.Errorf("apply the chat template: %w", err)
		}
		call.Request.Prompt = prompt
	}
	if tools == nil {
		return nil, nil
	}
	f := l.tmpl.Format()
	if f == nil {
		return nil, &openai.RequestError{Field: "tools", Message: "the model's chat template writes tool calls in a format this server does not parse " +
			"(it parses Hermes/Qwen3 <tool_call>, Qwen3.5 XML, Llama 3 JSON and Mistral [TOOL_CALLS])"}
	}
	g, triggers, err := f.Grammar(tools, call.Tools.Choice)
	if err != nil {
		field := "tools"
		if call.Tools.Choice.Name != "" {
			field = "tool_choice"
		}
		return nil, &openai.RequestError{Field: field, Message: err.Error()}
	}
	call.Request.Grammar, call.Request.GrammarTriggers = g, triggers
	return f, nil
}

// callHoldback streams a turn's text while holding back what may start a tool call; once a call
// starts, the rest is kept for parsing at the end.
type callHoldback struct {
	starts  []string
	pending string
	inCall  bool
}

// push adds generated text and returns what may be sent as content now.
func (h *callHoldback) push(text string) string {
	if h.inCall {
		h.pending += text
		return ""
	}
	h.pending += text
	for _, s := range h.starts {
		if i := strings.Index(h.pending, s); i >= 0 {
			out := h.pending[:i]
			h.pending, h.inCall = h.pending[i:], true
			return out
		}
	}
	keep := 0
	for _, s := range h.starts {
		for k := min(len(s)-1, len(h.pending)); k > keep; k-- {
			if h.pending[len(h.pending)-k:] == s[:k] {
				keep = k
				break
			}
		}
	}
	out := h.pending[:len(h.pending)-keep]
	h.pending = h.pending[len(h.pending)-keep:]
	return out
}
