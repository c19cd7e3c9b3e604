// Package chatfmt renders a model's own chat template (the GGUF's tokenizer.chat_template, a Jinja
// template) with messages and tools, and knows each model family's tool-call format: how to force
// a call with a grammar and how to parse calls out of the generated text. The format is detected
// from the template text, as llama-server's common/chat.cpp does.
package chatfmt

import (
	"encoding/json"
	"fmt"

	"github.com/ardanlabs/jinja"

	"github.com/expertsniper/expertsniper/engine"
)

// Message is one chat turn as a template sees it.
type Message struct {
	Role       string
	Content    string
	ToolCalls  []Call // an assistant turn's calls
	ToolCallID string // a tool turn's answer to this call
	Name       string // a tool turn's tool name
}

// FromEngine converts engine messages (a chat request's, the REPL's history) for a template.
func FromEngine(msgs []engine.Message) []Message {
	out := make([]Message, len(msgs))
	for i, m := range msgs {
		cm := Message{Role: m.Role, Content: m.Content, ToolCallID: m.ToolCallID, Name: m.Name}
		for _, c := range m.ToolCalls {
			cm.ToolCalls = append(cm.ToolCalls, Call{ID: c.ID, Name: c.Name, Arguments: c.Arguments})
		}
		out[i] = cm
	}
	return out
}

// Tool is a function the model may call.
type Tool struct {
	Name        string
	Description string
	Parameters  json.RawMessage // JSON Schema of the arguments object
}

// Call is one tool call: Arguments is a JSON object's text.
type Call struct {
	ID        string
	Name      string
	Arguments string
}

// Template is a compiled chat template and its tool-call format.
type Template struct {
	tmpl     *jinja.Template
	format   Format
	bos, eos string
}

// Parse compiles src; bos and eos are the model's begin/end tokens as text (templates print them).
func Parse(src, bos, eos string) (*Template, error) {
	t, err := jinja.Compile(src)
	if err != nil {
		return nil, fmt.Errorf("compile the chat template: %w", err)
	}
	return &Template{tmpl: t, format: Detect(src), bos: bos, eos: eos}, nil
}

// Format is the template's tool-call format (nil when the template does not take tools).
func (t *Template) Format() Format { return t.format }

// Render renders messages (and tools, if any) as the model's prompt.
func (t *Template) Render(msgs []Message, tools []Tool, addGenerationPrompt bool) (out string, err error) {
	defer func() {
		if r := recover(); r != nil { // a template engine bug must not take the server down
			err = fmt.Errorf("render the chat template: %v", r)
		}
	}()
	data := map[string]any{
		"messages":              messagesData(msgs),
		"add_generation_prompt": addGenerationPrompt,
		"bos_token":             t.bos,
		"eos_token":             t.eos,
	}
	if len(tools) > 0 {
		data["tools"] = toolsData(tools)
	}
	s, err := t.tmpl.Render(data)
	if err != nil {
		return "", fmt.Errorf("render the chat template: %w", err)
	}
	return s, nil
}

// jsonValue decodes JSON text into the plain values a template reads (objects keep no order: Go
// maps; tojson in the template sorts keys, as Python's json.dumps does not — a known difference).
func jsonValue(text string) any {
	var v any
	if err := json.Unmarshal([]byte(text), &v); err != nil {
		return text
	}
	return v
}

func messagesData(msgs []Message) []any {
	out := make([]any, len(msgs))
	for i, m := range msgs {
		d := map[string]any{"role": m.Role, "content": m.Content}
		if len(m.ToolCalls) > 0 {
			if m.Content == "" {
				d["content"] = nil
			}
			calls := make([]any, len(m.ToolCalls))
			for j, c := range m.ToolCalls {
				calls[j] = map[string]any{"id": c.ID, "type": "function",
					"function": map[string]any{"name": c.Name, "arguments": jsonValue(c.Arguments)}}
			}
			d["tool_calls"] = calls
		}
		if m.ToolCallID != "" {
			d["tool_call_id"] = m.ToolCallID
		}
		if m.Name != "" {
			d["name"] = m.Name
		}
		out[i] = d
	}
	return out
}

func toolsData(tools []Tool) []any {
	out := make([]any, len(tools))
	for i, t := range tools {
		fn := map[string]any{"name": t.Name, "description": t.Description}
		if len(t.Parameters) > 0 {
			fn["parameters"] = jsonValue(string(t.Parameters))
		} else {
			fn["parameters"] = map[string]any{"type": "object", "properties": map[string]any{}}
		}
		out[i] = map[string]any{"type": "function", "function": fn}
	}
	return out
}
