package server

import (
	"fmt"

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
		prompt, err := l.tmpl.Render(chatfmt.FromEngine(call.Messages), tools, true)
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
			"(it parses Hermes/Qwen3 <tool_call>, Qwen3.5 XML, Llama 3 JSON, Mistral [TOOL_CALLS], DeepSeek V4 DSML and gpt-oss harmony)"}
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
