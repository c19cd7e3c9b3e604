package openai

import (
	"bytes"
	"encoding/json"
	"fmt"

	"github.com/expertsniper/expertsniper/engine"
)

// ResponsesRequest is POST /v1/responses, stateless as in llama-server: the whole conversation
// comes in "input" (previous_response_id and stored responses are not supported).
type ResponsesRequest struct {
	Model              string            `json:"model"`
	Input              json.RawMessage   `json:"input"`
	Instructions       string            `json:"instructions,omitempty"`
	Tools              []ResponsesTool   `json:"tools,omitempty"`
	ToolChoice         json.RawMessage   `json:"tool_choice,omitempty"`
	ParallelToolCalls  *bool             `json:"parallel_tool_calls,omitempty"`
	MaxOutputTokens    *int              `json:"max_output_tokens,omitempty"`
	Temperature        *float32          `json:"temperature,omitempty"`
	TopP               *float32          `json:"top_p,omitempty"`
	Stream             bool              `json:"stream"`
	Text               *ResponsesText    `json:"text,omitempty"`
	PreviousResponseID *string           `json:"previous_response_id,omitempty"`
	Store              *bool             `json:"store,omitempty"`
	Reasoning          json.RawMessage   `json:"reasoning,omitempty"`
	Metadata           map[string]string `json:"metadata,omitempty"`
	Background         *bool             `json:"background,omitempty"`
	TopLogprobs        *int              `json:"top_logprobs,omitempty"`
	Include            []string          `json:"include,omitempty"`
	Truncation         string            `json:"truncation,omitempty"`
	User               string            `json:"user,omitempty"`
}

// ResponsesTool is a Responses-API tool: function tools are flat ({"type","name","parameters"}).
type ResponsesTool struct {
	Type        string          `json:"type"`
	Name        string          `json:"name"`
	Description string          `json:"description,omitempty"`
	Parameters  json.RawMessage `json:"parameters,omitempty"`
	Strict      *bool           `json:"strict,omitempty"`
}

// ResponsesText is "text": the output format.
type ResponsesText struct {
	Format *ResponsesFormat `json:"format,omitempty"`
}

// ResponsesFormat is text.format: text, json_object or json_schema (flat: name, schema, strict).
type ResponsesFormat struct {
	Type   string          `json:"type"`
	Name   string          `json:"name,omitempty"`
	Schema json.RawMessage `json:"schema,omitempty"`
	Strict *bool           `json:"strict,omitempty"`
}

// responsesItem is one input item: a message, a function call or a function call's output.
type responsesItem struct {
	Type      string          `json:"type"`
	Role      string          `json:"role"`
	Content   json.RawMessage `json:"content"`
	CallID    string          `json:"call_id"`
	Name      string          `json:"name"`
	Arguments string          `json:"arguments"`
	Output    json.RawMessage `json:"output"`
}

// ResponsesCall is a validated Responses request in chat terms.
type ResponsesCall struct {
	Chat ChatCall
	Req  ResponsesRequest
}

// FromResponsesRequest validates a Responses request and translates it to a chat call.
func FromResponsesRequest(req ResponsesRequest, def engine.Sampling) (ResponsesCall, error) {
	out := ResponsesCall{Req: req}
	switch {
	case req.PreviousResponseID != nil:
		return out, badField("previous_response_id", "this server is stateless (as llama-server): send the whole conversation in input")
	case req.Background != nil && *req.Background:
		return out, badField("background", "background responses are not supported")
	case len(bytes.TrimSpace(req.Reasoning)) > 0 && string(bytes.TrimSpace(req.Reasoning)) != "null":
		return out, badField("reasoning", "reasoning settings are not supported")
	case req.Truncation != "" && req.Truncation != "disabled":
		return out, badField("truncation", "only \"disabled\" is supported")
	case len(req.Include) > 0:
		return out, badField("include", "no extra output data is supported")
	case req.TopLogprobs != nil:
		return out, badField("top_logprobs", "logprobs are not supported on /v1/responses (use /v1/chat/completions)")
	}
	chat := ChatCompletionRequest{Model: req.Model, MaxCompletionTokens: req.MaxOutputTokens, ParallelToolCalls: req.ParallelToolCalls}
	chat.Temperature, chat.TopP = req.Temperature, req.TopP
	if req.Instructions != "" {
		chat.Messages = append(chat.Messages, ChatMessage{Role: "system", Content: MessageContent(req.Instructions)})
	}
	msgs, err := responsesInput(req.Input)
	if err != nil {
		return out, err
	}
	chat.Messages = append(chat.Messages, msgs...)
	for i, t := range req.Tools {
		if t.Type != "function" {
			return out, badField("tools", "tool %d has type %q; only \"function\" is supported", i, t.Type)
		}
		chat.Tools = append(chat.Tools, ToolSpec{Type: "function", Function: FunctionSpec{Name: t.Name, Description: t.Description, Parameters: t.Parameters, Strict: t.Strict}})
	}
	if len(bytes.TrimSpace(req.ToolChoice)) > 0 {
		tc, err := responsesToolChoice(req.ToolChoice)
		if err != nil {
			return out, err
		}
		chat.ToolChoice = &tc
	}
	if req.Text != nil && req.Text.Format != nil {
		f := req.Text.Format
		switch f.Type {
		case "json_schema":
			chat.ResponseFormat = &ResponseFormat{Type: "json_schema", JSONSchema: &JSONSchemaSpec{Name: f.Name, Schema: f.Schema, Strict: f.Strict}}
		default:
			chat.ResponseFormat = &ResponseFormat{Type: f.Type}
		}
	}
	out.Chat, err = FromChatRequest(chat, def)
	if re, ok := err.(*RequestError); ok {
		switch re.Field {
		case "response_format.type", "response_format.json_schema.schema", "response_format":
			re.Field = "text.format"
		case "max_completion_tokens":
			re.Field = "max_output_tokens"
		case "messages":
			re.Field = "input"
		}
	}
	out.Chat.Stream = req.Stream
	return out, err
}

func responsesToolChoice(raw json.RawMessage) (ToolChoice, error) {
	var tc ToolChoice
	raw = bytes.TrimSpace(raw)
	if raw[0] == '"' {
		err := tc.UnmarshalJSON(raw)
		if re, ok := err.(*RequestError); ok {
			re.Field = "tool_choice"
		}
		return tc, err
	}
	var named struct {
		Type string `json:"type"`
		Name string `json:"name"`
	}
	if err := json.Unmarshal(raw, &named); err != nil || named.Type != "function" || named.Name == "" {
		return tc, badField("tool_choice", `must be "none", "auto", "required" or {"type":"function","name":...}`)
	}
	return ToolChoice{Name: named.Name}, nil
}

// responsesInput converts "input" (a string, or a list of items) to chat messages.
func responsesInput(raw json.RawMessage) ([]ChatMessage, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || bytes.Equal(raw, []byte("null")) {
		return nil, badField("input", "is required")
	}
	if raw[0] == '"' {
		var s string
		if err := json.Unmarshal(raw, &s); err != nil {
			return nil, badField("input", "must be a string or an array of items")
		}
		return []ChatMessage{{Role: "user", Content: MessageContent(s)}}, nil
	}
	var items []responsesItem
	if err := json.Unmarshal(raw, &items); err != nil {
		return nil, badField("input", "must be a string or an array of items")
	}
	var out []ChatMessage
	for i, it := range items {
		switch it.Type {
		case "", "message":
			text, err := responsesContent(it.Content)
			if err != nil {
				return nil, badField("input", "item %d: %v", i, err)
			}
			out = append(out, ChatMessage{Role: it.Role, Content: MessageContent(text)})
		case "function_call":
			call := ToolCall{ID: it.CallID, Type: "function", Function: FunctionCall{Name: it.Name, Arguments: it.Arguments}}
			// Consecutive calls belong to one assistant turn.
			if n := len(out); n > 0 && out[n-1].Role == "assistant" && len(out[n-1].ToolCalls) > 0 {
				out[n-1].ToolCalls = append(out[n-1].ToolCalls, call)
			} else {
				out = append(out, ChatMessage{Role: "assistant", ToolCalls: []ToolCall{call}})
			}
		case "function_call_output":
			text, err := responsesContent(it.Output)
			if err != nil {
				return nil, badField("input", "item %d: output: %v", i, err)
			}
			out = append(out, ChatMessage{Role: "tool", ToolCallID: it.CallID, Content: MessageContent(text)})
		default:
			return nil, badField("input", "item %d has type %q (message, function_call and function_call_output are supported)", i, it.Type)
		}
	}
	return out, nil
}

// responsesContent reads a message's content: a string or input_text/output_text parts.
func responsesContent(raw json.RawMessage) (string, error) {
	raw = bytes.TrimSpace(raw)
	if len(raw) == 0 || bytes.Equal(raw, []byte("null")) {
		return "", nil
	}
	if raw[0] == '"' {
		var s string
		err := json.Unmarshal(raw, &s)
		return s, err
	}
	var parts []struct {
		Type string `json:"type"`
		Text string `json:"text"`
	}
	if err := json.Unmarshal(raw, &parts); err != nil {
		return "", fmt.Errorf("content must be a string or an array of parts")
	}
	var b bytes.Buffer
	for j, p := range parts {
		if p.Type != "input_text" && p.Type != "output_text" && p.Type != "text" {
			return "", fmt.Errorf("part %d has type %q; only text parts are supported", j, p.Type)
		}
		b.WriteString(p.Text)
	}
	return b.String(), nil
}

// ResponseItem is one item of a response's output: a message or a function call.
type ResponseItem struct {
	Type      string         `json:"type"`
	ID        string         `json:"id"`
	Status    string         `json:"status"`
	Role      string         `json:"role,omitempty"`
	Content   []ResponsePart `json:"content,omitempty"`
	CallID    string         `json:"call_id,omitempty"`
	Name      string         `json:"name,omitempty"`
	Arguments *string        `json:"arguments,omitempty"`
}

// ResponsePart is an output_text part.
type ResponsePart struct {
	Type        string `json:"type"`
	Text        string `json:"text"`
	Annotations []any  `json:"annotations"`
}

// ResponsesUsage is the Responses API's token accounting.
type ResponsesUsage struct {
	InputTokens        int `json:"input_tokens"`
	OutputTokens       int `json:"output_tokens"`
	TotalTokens        int `json:"total_tokens"`
	InputTokensDetails struct {
		CachedTokens int `json:"cached_tokens"`
	} `json:"input_tokens_details"`
	OutputTokensDetails struct {
		ReasoningTokens int `json:"reasoning_tokens"`
	} `json:"output_tokens_details"`
}

// Response is the response object (the body, and the payload of created/completed events).
type Response struct {
	ID                string            `json:"id"`
	Object            string            `json:"object"`
	CreatedAt         int64             `json:"created_at"`
	Status            string            `json:"status"`
	Model             string            `json:"model"`
	Output            []ResponseItem    `json:"output"`
	Usage             *ResponsesUsage   `json:"usage"`
	Error             any               `json:"error"`
	IncompleteDetails any               `json:"incomplete_details"`
	Instructions      any               `json:"instructions"`
	MaxOutputTokens   *int              `json:"max_output_tokens"`
	ParallelToolCalls bool              `json:"parallel_tool_calls"`
	Temperature       float32           `json:"temperature"`
	TopP              float32           `json:"top_p"`
	ToolChoice        any               `json:"tool_choice"`
	Tools             []ResponsesTool   `json:"tools"`
	Metadata          map[string]string `json:"metadata"`
}

// NewResponse is the response before any output (status in_progress).
func NewResponse(meta ResponseMeta, call ResponsesCall) Response {
	r := Response{ID: meta.ID, Object: "response", CreatedAt: meta.Created, Status: "in_progress", Model: meta.Model,
		Output: []ResponseItem{}, MaxOutputTokens: call.Req.MaxOutputTokens, ParallelToolCalls: call.Chat.Tools.Choice.Parallel,
		Temperature: call.Chat.Request.Sampling.Temperature, TopP: call.Chat.Request.Sampling.TopP, Tools: call.Req.Tools,
		ToolChoice: "auto", Metadata: call.Req.Metadata}
	if r.Tools == nil {
		r.Tools = []ResponsesTool{}
	}
	if r.Metadata == nil {
		r.Metadata = map[string]string{}
	}
	if call.Req.Instructions != "" {
		r.Instructions = call.Req.Instructions
	}
	if len(call.Req.ToolChoice) > 0 {
		var v any
		json.Unmarshal(call.Req.ToolChoice, &v)
		r.ToolChoice = v
	}
	return r
}

// MessageItem is an assistant message item holding text.
func MessageItem(id, text, status string) ResponseItem {
	parts := []ResponsePart{}
	if status == "completed" || text != "" {
		parts = append(parts, ResponsePart{Type: "output_text", Text: text, Annotations: []any{}})
	}
	return ResponseItem{Type: "message", ID: id, Status: status, Role: "assistant", Content: parts}
}

// FunctionCallItem is a function_call item.
func FunctionCallItem(call ToolCall, status string) ResponseItem {
	args := call.Function.Arguments
	return ResponseItem{Type: "function_call", ID: "fc_" + call.ID, Status: status, CallID: call.ID, Name: call.Function.Name, Arguments: &args}
}

// FinishResponse fills in the output, status and usage of a finished generation; calls carry
// their ids (ToWireCalls), so that streamed events and the final object agree.
func FinishResponse(r Response, res engine.Result, msgID, content string, calls []ToolCall) Response {
	if content != "" || len(calls) == 0 {
		r.Output = append(r.Output, MessageItem(msgID, content, "completed"))
	}
	for _, c := range calls {
		r.Output = append(r.Output, FunctionCallItem(c, "completed"))
	}
	r.Status = "completed"
	if res.FinishReason == "length" {
		r.Status = "incomplete"
		r.IncompleteDetails = map[string]string{"reason": "max_output_tokens"}
	}
	u := ToUsage(res.Timings)
	r.Usage = &ResponsesUsage{InputTokens: u.PromptTokens, OutputTokens: u.CompletionTokens, TotalTokens: u.TotalTokens}
	r.Usage.InputTokensDetails.CachedTokens = u.PromptTokensDetails.CachedTokens
	return r
}
