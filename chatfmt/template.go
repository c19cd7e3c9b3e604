// Package chatfmt renders a model's own chat template (the GGUF's tokenizer.chat_template, a Jinja
// template) with messages and tools, and knows each model family's tool-call format: how to force
// a call with a grammar and how to parse calls out of the generated text. The format is detected
// from the template text, as llama-server's common/chat.cpp does.
package chatfmt

import (
	"encoding/json"
	"fmt"
	"strings"

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
	data := map[string]jinja.Value{
		"messages":              messagesData(msgs),
		"add_generation_prompt": jinja.NewBool(addGenerationPrompt),
		"bos_token":             jinja.NewString(t.bos),
		"eos_token":             jinja.NewString(t.eos),
		// As llama-server: templates with a thinking switch (DeepSeek V4, Qwen3) think by default.
		"enable_thinking": jinja.NewBool(true),
	}
	if len(tools) > 0 {
		data["tools"] = toolsData(tools)
	}
	s, err := t.tmpl.RenderValues(data)
	if err != nil {
		return "", fmt.Errorf("render the chat template: %w", err)
	}
	return s, nil
}

// jsonValue decodes JSON text into template values keeping the order of object keys, so that
// tojson in a template prints a schema as the client wrote it (as llama-server's Python-like
// tojson does); text that is not JSON stays a string.
func jsonValue(text string) jinja.Value {
	d := json.NewDecoder(strings.NewReader(text))
	d.UseNumber()
	v, err := decodeValue(d)
	if err != nil || d.More() {
		return jinja.NewString(text)
	}
	return v
}

func decodeValue(d *json.Decoder) (jinja.Value, error) {
	tok, err := d.Token()
	if err != nil {
		return jinja.Undefined(), err
	}
	switch t := tok.(type) {
	case json.Delim:
		switch t {
		case '{':
			obj := jinja.NewDict()
			for d.More() {
				k, err := d.Token()
				if err != nil {
					return obj, err
				}
				v, err := decodeValue(d)
				if err != nil {
					return obj, err
				}
				obj.AsDict().Set(k.(string), v)
			}
			_, err := d.Token() // '}'
			return obj, err
		case '[':
			var items []jinja.Value
			for d.More() {
				v, err := decodeValue(d)
				if err != nil {
					return jinja.Undefined(), err
				}
				items = append(items, v)
			}
			_, err := d.Token() // ']'
			return jinja.NewList(items), err
		}
	case string:
		return jinja.NewString(t), nil
	case bool:
		return jinja.NewBool(t), nil
	case json.Number:
		if n, err := t.Int64(); err == nil {
			return jinja.NewInt(n), nil
		}
		f, err := t.Float64()
		return jinja.NewFloat(f), err
	case nil:
		return jinja.None(), nil
	}
	return jinja.Undefined(), fmt.Errorf("unexpected JSON token %v", tok)
}

// dict builds a template dict with keys in the given order (key, value, key, value, ...).
func dict(kv ...any) jinja.Value {
	d := jinja.NewDict()
	for i := 0; i+1 < len(kv); i += 2 {
		d.AsDict().Set(kv[i].(string), kv[i+1].(jinja.Value))
	}
	return d
}

func messagesData(msgs []Message) jinja.Value {
	out := make([]jinja.Value, len(msgs))
	for i, m := range msgs {
		content := jinja.NewString(m.Content)
		if len(m.ToolCalls) > 0 && m.Content == "" {
			content = jinja.None()
		}
		d := dict("role", jinja.NewString(m.Role), "content", content)
		if len(m.ToolCalls) > 0 {
			calls := make([]jinja.Value, len(m.ToolCalls))
			for j, c := range m.ToolCalls {
				calls[j] = dict("id", jinja.NewString(c.ID), "type", jinja.NewString("function"),
					"function", dict("name", jinja.NewString(c.Name), "arguments", jsonValue(c.Arguments)))
			}
			d.AsDict().Set("tool_calls", jinja.NewList(calls))
		}
		if m.ToolCallID != "" {
			d.AsDict().Set("tool_call_id", jinja.NewString(m.ToolCallID))
		}
		if m.Name != "" {
			d.AsDict().Set("name", jinja.NewString(m.Name))
		}
		out[i] = d
	}
	return jinja.NewList(out)
}

func toolsData(tools []Tool) jinja.Value {
	out := make([]jinja.Value, len(tools))
	for i, t := range tools {
		params := jsonValue(`{"type":"object","properties":{}}`)
		if len(t.Parameters) > 0 {
			params = jsonValue(string(t.Parameters))
		}
		fn := dict("name", jinja.NewString(t.Name))
		if t.Description != "" {
			fn.AsDict().Set("description", jinja.NewString(t.Description))
		}
		fn.AsDict().Set("parameters", params)
		out[i] = dict("type", jinja.NewString("function"), "function", fn)
	}
	return jinja.NewList(out)
}
