package openai

import (
	"bytes"
	"crypto/rand"
	"encoding/json"

	"github.com/expertsniper/expertsniper/chatfmt"
	"github.com/expertsniper/expertsniper/engine"
)

// ToolSpec is one entry of a chat request's "tools".
type ToolSpec struct {
	Type     string       `json:"type"`
	Function FunctionSpec `json:"function"`
}

// FunctionSpec describes a function the model may call.
type FunctionSpec struct {
	Name        string          `json:"name"`
	Description string          `json:"description,omitempty"`
	Parameters  json.RawMessage `json:"parameters,omitempty"`
	Strict      *bool           `json:"strict,omitempty"`
}

// ToolCall is a call in an assistant message (request or response) or a streamed delta; Index is
// set only in deltas.
type ToolCall struct {
	Index    *int         `json:"index,omitempty"`
	ID       string       `json:"id,omitempty"`
	Type     string       `json:"type,omitempty"`
	Function FunctionCall `json:"function"`
}

// FunctionCall is a call's function and its arguments (a JSON object's text).
type FunctionCall struct {
	Name      string `json:"name,omitempty"`
	Arguments string `json:"arguments"`
}

// ToolChoice is "none", "auto", "required" or {"type":"function","function":{"name":...}}.
type ToolChoice struct {
	Mode string // none, auto, required, or "" for a named function
	Name string
}

func (c *ToolChoice) UnmarshalJSON(data []byte) error {
	data = bytes.TrimSpace(data)
	if len(data) > 0 && data[0] == '"' {
		if err := json.Unmarshal(data, &c.Mode); err != nil {
			return err
		}
		switch c.Mode {
		case "none", "auto", "required":
			return nil
		}
		return &RequestError{Field: "tool_choice", Message: `must be "none", "auto", "required" or {"type":"function","function":{"name":...}}, got "` + c.Mode + `"`}
	}
	var named struct {
		Type     string `json:"type"`
		Function struct {
			Name string `json:"name"`
		} `json:"function"`
	}
	if err := json.Unmarshal(data, &named); err != nil || named.Type != "function" || named.Function.Name == "" {
		return &RequestError{Field: "tool_choice", Message: `must be "none", "auto", "required" or {"type":"function","function":{"name":...}}`}
	}
	c.Mode, c.Name = "", named.Function.Name
	return nil
}

// ToolUse is what a chat request asks of tools, in chatfmt terms. Tools is nil when the request
// has none or tool_choice is "none".
type ToolUse struct {
	Tools  []chatfmt.Tool
	Choice chatfmt.Choice
}

// toolUse validates tools, tool_choice and parallel_tool_calls.
func toolUse(req ChatCompletionRequest) (ToolUse, error) {
	var use ToolUse
	for i, t := range req.Tools {
		if t.Type != "function" {
			return use, badField("tools", "tool %d has type %q; only \"function\" is supported", i, t.Type)
		}
		if t.Function.Name == "" {
			return use, badField("tools", "tool %d has no function.name", i)
		}
		use.Tools = append(use.Tools, chatfmt.Tool{Name: t.Function.Name, Description: t.Function.Description, Parameters: t.Function.Parameters})
	}
	choice := ToolChoice{Mode: "auto"}
	if req.ToolChoice != nil {
		choice = *req.ToolChoice
	}
	if len(use.Tools) == 0 {
		if choice.Mode == "required" || choice.Name != "" {
			return use, badField("tool_choice", "asks for a tool call but the request has no tools")
		}
		return use, nil
	}
	if choice.Mode == "none" {
		return ToolUse{}, nil
	}
	// parallel_tool_calls defaults to false, as llama-server's (OpenAI's default is true).
	use.Choice = chatfmt.Choice{Required: choice.Mode == "required", Name: choice.Name,
		Parallel: req.ParallelToolCalls != nil && *req.ParallelToolCalls}
	return use, nil
}

// toEngineCalls converts a request message's tool calls.
func toEngineCalls(calls []ToolCall) []engine.ToolCall {
	var out []engine.ToolCall
	for _, c := range calls {
		out = append(out, engine.ToolCall{ID: c.ID, Name: c.Function.Name, Arguments: c.Function.Arguments})
	}
	return out
}

// ToWireCalls gives parsed calls OpenAI ids ("call_" and random letters) in response shape.
func ToWireCalls(calls []chatfmt.Call, withIndex bool) []ToolCall {
	out := make([]ToolCall, len(calls))
	for i, c := range calls {
		id := c.ID
		if id == "" {
			id = "call_" + randomLetters(24)
		}
		out[i] = ToolCall{ID: id, Type: "function", Function: FunctionCall{Name: c.Name, Arguments: c.Arguments}}
		if withIndex {
			idx := i
			out[i].Index = &idx
		}
	}
	return out
}

func randomLetters(n int) string {
	const alphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"
	b := make([]byte, n)
	rand.Read(b)
	for i := range b {
		b[i] = alphabet[int(b[i])%len(alphabet)]
	}
	return string(b)
}
