package openai

import (
	"github.com/expertsniper/expertsniper/chatfmt"
	"github.com/expertsniper/expertsniper/engine"
)

// ChatCall is a validated chat request in engine terms. The caller renders Messages with the model's
// chat template into Request.Prompt.
type ChatCall struct {
	Messages     []engine.Message
	Request      engine.Request
	Stream       bool
	IncludeUsage bool
	// Tools the model may call (nil: none, or tool_choice "none"). The server renders them with
	// the template and sets the grammar from the template's tool-call format.
	Tools ToolUse
}

var chatRoles = map[string]string{
	"system": "system", "developer": "system", "user": "user", "assistant": "assistant", "tool": "tool",
}

// FromChatRequest validates a chat request and translates it to engine terms.
func FromChatRequest(req ChatCompletionRequest, def engine.Sampling) (ChatCall, error) {
	var call ChatCall
	var err error
	if len(req.Messages) == 0 {
		return call, badField("messages", "must be a non-empty array")
	}
	for i, m := range req.Messages {
		role, ok := chatRoles[m.Role]
		if !ok {
			return call, badField("messages", "message %d has unknown role %q (system, developer, user, assistant, tool)", i, m.Role)
		}
		if len(m.ToolCalls) > 0 && role != "assistant" {
			return call, badField("messages", "message %d has tool_calls but role %q (only assistant messages make calls)", i, m.Role)
		}
		call.Messages = append(call.Messages, engine.Message{Role: role, Content: string(m.Content),
			ToolCalls: toEngineCalls(m.ToolCalls), ToolCallID: m.ToolCallID, Name: m.Name})
	}
	if call.Tools, err = toolUse(req); err != nil {
		return call, err
	}
	if call.Tools.Tools != nil && req.ResponseFormat != nil && req.ResponseFormat.Type != "" && req.ResponseFormat.Type != "text" {
		return call, badField("response_format", "cannot be combined with tools (both constrain the output)")
	}
	if err := checkN(req.N); err != nil {
		return call, err
	}
	if err := req.unsupportedChatFields.check(); err != nil {
		return call, err
	}
	if err := checkStops(req.Stop); err != nil {
		return call, err
	}
	limit, err := maxTokens(namedLimit{"max_completion_tokens", req.MaxCompletionTokens},
		namedLimit{"max_tokens", req.MaxTokens}, namedLimit{"n_predict", req.NPredict})
	if err != nil {
		return call, err
	}
	sampling, err := req.SamplingParams.ToEngine(def)
	if err != nil {
		return call, err
	}
	call.Request = engine.Request{MaxTokens: limit, Stop: req.Stop, Sampling: sampling, Slot: checkSlot(req.IDSlot)}
	err = constrain(&call.Request, grammarSource{"response_format", req.ResponseFormat != nil, req.ResponseFormat.grammarFor})
	if err != nil {
		return call, err
	}
	if err := chatLogprobsRequest(req.Logprobs, req.TopLogprobs, &call.Request); err != nil {
		return call, err
	}
	call.Stream = req.Stream
	call.Request.Stream = req.Stream
	call.IncludeUsage = req.StreamOptions != nil && req.StreamOptions.IncludeUsage
	return call, nil
}

// ToChatCompletion builds the non-streamed response.
// With calls, the finish reason is "tool_calls" and content is the text around them (null if none).
func ToChatCompletion(meta ResponseMeta, call ChatCall, res engine.Result, content string, calls []chatfmt.Call) ChatCompletion {
	choice := ChatChoice{
		FinishReason: res.FinishReason,
		Index:        0,
		Message:      AssistantMessage{Role: "assistant", Content: &content},
	}
	if len(calls) > 0 {
		if res.FinishReason == "stop" {
			choice.FinishReason = "tool_calls"
		}
		choice.Message.ToolCalls = ToWireCalls(calls, false)
		if content == "" {
			choice.Message.Content = nil
		}
	}
	if call.Request.Logprobs {
		choice.Logprobs = &ChoiceLogprobs{Content: ToChatLogprobs(res.Logprobs)}
	}
	return ChatCompletion{
		Choices:           []ChatChoice{choice},
		Created:           meta.Created,
		Model:             meta.Model,
		SystemFingerprint: meta.Fingerprint,
		Object:            "chat.completion",
		Usage:             ToUsage(res.Timings),
		ID:                meta.ID,
		Timings:           ToTimings(res.Timings),
	}
}

func chunk(meta ResponseMeta, choices []ChunkChoice) ChatCompletionChunk {
	if choices == nil {
		choices = []ChunkChoice{}
	}
	return ChatCompletionChunk{
		Choices:           choices,
		Created:           meta.Created,
		ID:                meta.ID,
		Model:             meta.Model,
		SystemFingerprint: meta.Fingerprint,
		Object:            "chat.completion.chunk",
	}
}

// RoleChunk is the first event of a streamed chat: the assistant role and a null content.
func RoleChunk(meta ResponseMeta) ChatCompletionChunk {
	return chunk(meta, []ChunkChoice{{Index: 0, Delta: Delta{Role: "assistant"}}})
}

// ContentChunk carries one generated piece, with the logprobs of its tokens when withLogprobs.
func ContentChunk(meta ResponseMeta, text string, lps []engine.TokenLogprob, withLogprobs bool) ChatCompletionChunk {
	c := ChunkChoice{Index: 0, Delta: Delta{Content: &text}}
	if withLogprobs {
		c.Logprobs = &ChoiceLogprobs{Content: ToChatLogprobs(lps)}
	}
	return chunk(meta, []ChunkChoice{c})
}

// ToStreamChunks returns every event of a streamed chat after the role chunk, for a finished
// generation: one content chunk per piece, then the finish chunk(s). Servers that stream live send
// the same sequence one event at a time.
func ToStreamChunks(meta ResponseMeta, pieces []string, res engine.Result, includeUsage bool) []ChatCompletionChunk {
	out := make([]ChatCompletionChunk, 0, len(pieces)+2)
	for _, p := range pieces {
		out = append(out, ContentChunk(meta, p, nil, false))
	}
	return append(out, FinishChunks(meta, res, includeUsage)...)
}

// FinishChunks ends a streamed chat: an empty delta with the finish reason and, when the client asked
// with stream_options.include_usage, OpenAI's extra chunk with no choices. The usage and timings go
// on the last chunk only (once: clients that add up the chunks' usage must not count it twice).
func FinishChunks(meta ResponseMeta, res engine.Result, includeUsage bool) []ChatCompletionChunk {
	return FinishChunksWithReason(meta, res, res.FinishReason, includeUsage)
}

// ToolCallChunk carries calls parsed from a streamed turn, whole (name and arguments in one delta).
func ToolCallChunk(meta ResponseMeta, calls []chatfmt.Call) ChatCompletionChunk {
	return chunk(meta, []ChunkChoice{{Index: 0, Delta: Delta{ToolCalls: ToWireCalls(calls, true)}}})
}

// FinishChunksWithReason is FinishChunks with another finish reason (tool_calls).
func FinishChunksWithReason(meta ResponseMeta, res engine.Result, reason string, includeUsage bool) []ChatCompletionChunk {
	usage := ToUsage(res.Timings)
	timings := ToTimings(res.Timings)
	out := []ChatCompletionChunk{chunk(meta, []ChunkChoice{{FinishReason: &reason, Index: 0, Delta: Delta{}}})}
	if includeUsage {
		out = append(out, chunk(meta, nil))
	}
	out[len(out)-1].Usage = &usage
	out[len(out)-1].Timings = &timings
	return out
}
