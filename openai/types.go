// Package openai holds the wire types of the OpenAI-compatible and llama-server-native HTTP APIs and
// pure functions that translate them to and from engine calls. Nothing here does I/O, so every
// translation is testable without a server. Field names and types mirror OpenAI's API and the stock
// llama-server (llama.cpp b11669), which existing clients are written against.
package openai

import (
	"bytes"
	"encoding/json"
	"fmt"
	"strings"
)

// StringOrList is a JSON value that clients send either as one string or as a list of strings
// (OpenAI's "stop", the legacy completions "prompt").
type StringOrList []string

func (s *StringOrList) UnmarshalJSON(data []byte) error {
	data = bytes.TrimSpace(data)
	if bytes.Equal(data, []byte("null")) {
		*s = nil
		return nil
	}
	if len(data) > 0 && data[0] == '"' {
		var one string
		if err := json.Unmarshal(data, &one); err != nil {
			return err
		}
		*s = StringOrList{one}
		return nil
	}
	var many []string
	if err := json.Unmarshal(data, &many); err != nil {
		return &RequestError{Message: "expected a string or an array of strings (stop, prompt, input)"}
	}
	*s = many
	return nil
}

// MessageContent is a chat message's content: a string, or an array of parts of which only
// {"type":"text"} parts are supported (this server has no vision or audio input), joined with "\n".
type MessageContent string

type contentPart struct {
	Type string `json:"type"`
	Text string `json:"text"`
}

func (c *MessageContent) UnmarshalJSON(data []byte) error {
	data = bytes.TrimSpace(data)
	switch {
	case bytes.Equal(data, []byte("null")):
		*c = ""
		return nil
	case len(data) > 0 && data[0] == '"':
		var s string
		if err := json.Unmarshal(data, &s); err != nil {
			return err
		}
		*c = MessageContent(s)
		return nil
	case len(data) > 0 && data[0] == '[':
		var parts []contentPart
		if err := json.Unmarshal(data, &parts); err != nil {
			return &RequestError{Field: "content", Message: "must be a string or an array of content parts"}
		}
		// Text parts are joined with a newline, as llama-server joins them.
		texts := make([]string, 0, len(parts))
		for i, p := range parts {
			if p.Type != "text" {
				return &RequestError{Field: "content", Message: fmt.Sprintf("part %d has type %q; only \"text\" is supported", i, p.Type)}
			}
			texts = append(texts, p.Text)
		}
		*c = MessageContent(strings.Join(texts, "\n"))
		return nil
	}
	return &RequestError{Field: "content", Message: "must be a string or an array of content parts"}
}

// ChatMessage is one message of a chat request.
type ChatMessage struct {
	Role       string         `json:"role"`
	Content    MessageContent `json:"content"`
	Name       string         `json:"name,omitempty"`
	ToolCalls  []ToolCall     `json:"tool_calls,omitempty"`
	ToolCallID string         `json:"tool_call_id,omitempty"`
}

// StreamOptions is OpenAI's stream_options.
type StreamOptions struct {
	IncludeUsage bool `json:"include_usage"`
}

// SamplingParams are the sampling fields shared by every generation endpoint. Pointers tell "not
// sent" (use the server default) from an explicit zero.
type SamplingParams struct {
	Temperature      *float32 `json:"temperature,omitempty"`
	TopK             *int     `json:"top_k,omitempty"`
	TopP             *float32 `json:"top_p,omitempty"`
	MinP             *float32 `json:"min_p,omitempty"`
	RepeatPenalty    *float32 `json:"repeat_penalty,omitempty"`
	RepeatLastN      *int     `json:"repeat_last_n,omitempty"`
	PresencePenalty  *float32 `json:"presence_penalty,omitempty"`
	FrequencyPenalty *float32 `json:"frequency_penalty,omitempty"`
	Seed             *int64   `json:"seed,omitempty"`
}

// ChatCompletionRequest is POST /v1/chat/completions.
type ChatCompletionRequest struct {
	Model               string          `json:"model"`
	Messages            []ChatMessage   `json:"messages"`
	MaxTokens           *int            `json:"max_tokens,omitempty"`
	MaxCompletionTokens *int            `json:"max_completion_tokens,omitempty"`
	NPredict            *int            `json:"n_predict,omitempty"` // llama-server extension
	Stop                StringOrList    `json:"stop,omitempty"`
	Stream              bool            `json:"stream"`
	StreamOptions       *StreamOptions  `json:"stream_options,omitempty"`
	N                   *int            `json:"n,omitempty"`
	IDSlot              *int            `json:"id_slot,omitempty"` // llama-server extension
	ResponseFormat      *ResponseFormat `json:"response_format,omitempty"`
	Tools               []ToolSpec      `json:"tools,omitempty"`
	ToolChoice          *ToolChoice     `json:"tool_choice,omitempty"`
	ParallelToolCalls   *bool           `json:"parallel_tool_calls,omitempty"`
	unsupportedChatFields
	Logprobs    *bool `json:"logprobs,omitempty"`
	TopLogprobs *int  `json:"top_logprobs,omitempty"`
	SamplingParams
}

// unsupportedChatFields are OpenAI chat fields this server cannot honour: sent with a value, they
// are refused with a 400 naming them rather than silently ignored.
type unsupportedChatFields struct {
	LogitBias        json.RawMessage `json:"logit_bias,omitempty"`
	Audio            json.RawMessage `json:"audio,omitempty"`
	Modalities       json.RawMessage `json:"modalities,omitempty"`
	Prediction       json.RawMessage `json:"prediction,omitempty"`
	WebSearchOptions json.RawMessage `json:"web_search_options,omitempty"`
	Functions        json.RawMessage `json:"functions,omitempty"`
	FunctionCall     json.RawMessage `json:"function_call,omitempty"`
	ReasoningEffort  json.RawMessage `json:"reasoning_effort,omitempty"`
}

// check names the first field sent with a value that asks for something.
func (u unsupportedChatFields) check() error {
	for _, f := range []struct {
		name, why string
		v         json.RawMessage
	}{
		{"logit_bias", "is not supported", u.LogitBias},
		{"audio", "audio output is not supported", u.Audio},
		{"modalities", `only ["text"] is supported`, u.Modalities},
		{"prediction", "predicted outputs are not supported", u.Prediction},
		{"web_search_options", "web search is not supported", u.WebSearchOptions},
		{"functions", "the legacy functions field is not supported; use tools", u.Functions},
		{"function_call", "the legacy function_call field is not supported; use tool_choice", u.FunctionCall},
		{"reasoning_effort", "is not supported", u.ReasoningEffort},
	} {
		v := string(bytes.TrimSpace(f.v))
		if v == "" || v == "null" || v == "{}" || v == "[]" || (f.name == "modalities" && v == `["text"]`) {
			continue
		}
		return badField(f.name, "%s", f.why)
	}
	return nil
}

// CompletionRequest is POST /v1/completions (OpenAI's legacy text completions).
type CompletionRequest struct {
	Model         string         `json:"model"`
	Prompt        StringOrList   `json:"prompt"`
	MaxTokens     *int           `json:"max_tokens,omitempty"`
	NPredict      *int           `json:"n_predict,omitempty"`
	Stop          StringOrList   `json:"stop,omitempty"`
	Stream        bool           `json:"stream"`
	StreamOptions *StreamOptions `json:"stream_options,omitempty"`
	Echo          bool           `json:"echo"`
	N             *int           `json:"n,omitempty"`
	IDSlot        *int           `json:"id_slot,omitempty"`
	// Logprobs is the legacy API's count of alternatives to report per token (0..20).
	Logprobs *int `json:"logprobs,omitempty"`
	SamplingParams
}

// Usage is OpenAI's token accounting.
type Usage struct {
	CompletionTokens    int                 `json:"completion_tokens"`
	PromptTokens        int                 `json:"prompt_tokens"`
	TotalTokens         int                 `json:"total_tokens"`
	PromptTokensDetails PromptTokensDetails `json:"prompt_tokens_details"`
}

// PromptTokensDetails tells how many prompt tokens came from the cache (OpenAI's and llama-server's).
type PromptTokensDetails struct {
	CachedTokens int `json:"cached_tokens"`
}

// Timings is llama-server's per-request timing block, added to OpenAI-shaped responses too.
type Timings struct {
	CacheN              int     `json:"cache_n"`
	PromptN             int     `json:"prompt_n"`
	PromptMS            float64 `json:"prompt_ms"`
	PromptPerTokenMS    float64 `json:"prompt_per_token_ms"`
	PromptPerSecond     float64 `json:"prompt_per_second"`
	PredictedN          int     `json:"predicted_n"`
	PredictedMS         float64 `json:"predicted_ms"`
	PredictedPerTokenMS float64 `json:"predicted_per_token_ms"`
	PredictedPerSecond  float64 `json:"predicted_per_second"`
}

// AssistantMessage is the message of a non-streamed chat choice.
type AssistantMessage struct {
	Role      string     `json:"role"`
	Content   *string    `json:"content"` // null when the turn is only tool calls
	ToolCalls []ToolCall `json:"tool_calls,omitempty"`
}

// ChatChoice is one choice of a chat completion.
type ChatChoice struct {
	FinishReason string           `json:"finish_reason"`
	Index        int              `json:"index"`
	Message      AssistantMessage `json:"message"`
	Logprobs     *ChoiceLogprobs  `json:"logprobs,omitempty"`
}

// ChatCompletion is the non-streamed response of /v1/chat/completions.
type ChatCompletion struct {
	Choices           []ChatChoice `json:"choices"`
	Created           int64        `json:"created"`
	Model             string       `json:"model"`
	SystemFingerprint string       `json:"system_fingerprint"`
	Object            string       `json:"object"`
	Usage             Usage        `json:"usage"`
	ID                string       `json:"id"`
	Timings           Timings      `json:"timings"`
}

// Delta is the incremental message of a streamed chat chunk. Content is a pointer because the first
// chunk carries "content": null next to the role, as llama-server sends it.
type Delta struct {
	Role      string     `json:"role,omitempty"`
	Content   *string    `json:"content,omitempty"`
	ToolCalls []ToolCall `json:"tool_calls,omitempty"`
}

// MarshalJSON writes "content": null in the role chunk, and omits content in the final empty delta.
func (d Delta) MarshalJSON() ([]byte, error) {
	if len(d.ToolCalls) > 0 {
		return json.Marshal(struct {
			ToolCalls []ToolCall `json:"tool_calls"`
		}{d.ToolCalls})
	}
	if d.Role != "" {
		return json.Marshal(struct {
			Role    string  `json:"role"`
			Content *string `json:"content"`
		}{d.Role, d.Content})
	}
	if d.Content == nil {
		return []byte("{}"), nil
	}
	return json.Marshal(struct {
		Content string `json:"content"`
	}{*d.Content})
}

// ChunkChoice is one choice of a streamed chat chunk; FinishReason is null until the last chunk.
type ChunkChoice struct {
	FinishReason *string         `json:"finish_reason"`
	Index        int             `json:"index"`
	Delta        Delta           `json:"delta"`
	Logprobs     *ChoiceLogprobs `json:"logprobs,omitempty"`
}

// ChatCompletionChunk is one server-sent event of a streamed chat completion.
type ChatCompletionChunk struct {
	Choices           []ChunkChoice `json:"choices"`
	Created           int64         `json:"created"`
	ID                string        `json:"id"`
	Model             string        `json:"model"`
	SystemFingerprint string        `json:"system_fingerprint"`
	Object            string        `json:"object"`
	Usage             *Usage        `json:"usage,omitempty"`
	Timings           *Timings      `json:"timings,omitempty"`
}

// TextChoice is one choice of a text completion (streamed or not).
type TextChoice struct {
	Text         string          `json:"text"`
	Index        int             `json:"index"`
	Logprobs     *LegacyLogprobs `json:"logprobs"`
	FinishReason *string         `json:"finish_reason"`
}

// TextCompletion is the response (or, streamed, one chunk) of /v1/completions.
type TextCompletion struct {
	Choices           []TextChoice `json:"choices"`
	Created           int64        `json:"created"`
	Model             string       `json:"model"`
	SystemFingerprint string       `json:"system_fingerprint"`
	Object            string       `json:"object"`
	Usage             *Usage       `json:"usage,omitempty"`
	ID                string       `json:"id"`
	Timings           *Timings     `json:"timings,omitempty"`
}

// ModelMeta is llama-server's extra block in /v1/models.
type ModelMeta struct {
	VocabType int    `json:"vocab_type"`
	NVocab    int    `json:"n_vocab"`
	NCtx      int    `json:"n_ctx"`
	NCtxTrain int    `json:"n_ctx_train"`
	NEmbd     int    `json:"n_embd"`
	NParams   uint64 `json:"n_params"`
	Size      uint64 `json:"size"`
	FType     string `json:"ftype"`
}

// Modalities lists what a model reads and writes.
type Modalities struct {
	InputModalities  []string `json:"input_modalities"`
	OutputModalities []string `json:"output_modalities"`
}

// Model is one entry of /v1/models.
type Model struct {
	ID           string     `json:"id"`
	Aliases      []string   `json:"aliases"`
	Tags         []string   `json:"tags"`
	Object       string     `json:"object"`
	Architecture Modalities `json:"architecture"`
	Created      int64      `json:"created"`
	OwnedBy      string     `json:"owned_by"`
	Meta         *ModelMeta `json:"meta"`
}

// OllamaModelDetails is the "details" block of an Ollama-style model entry.
type OllamaModelDetails struct {
	ParentModel       string   `json:"parent_model"`
	Format            string   `json:"format"`
	Family            string   `json:"family"`
	Families          []string `json:"families"`
	ParameterSize     string   `json:"parameter_size"`
	QuantizationLevel string   `json:"quantization_level"`
}

// OllamaModel is an entry of the "models" list llama-server adds for Ollama-style clients.
type OllamaModel struct {
	Name         string             `json:"name"`
	Model        string             `json:"model"`
	ModifiedAt   string             `json:"modified_at"`
	Size         string             `json:"size"`
	Digest       string             `json:"digest"`
	Type         string             `json:"type"`
	Description  string             `json:"description"`
	Tags         []string           `json:"tags"`
	Capabilities []string           `json:"capabilities"`
	Parameters   string             `json:"parameters"`
	Details      OllamaModelDetails `json:"details"`
}

// ModelList is GET /v1/models.
type ModelList struct {
	Models []OllamaModel `json:"models"`
	Object string        `json:"object"`
	Data   []Model       `json:"data"`
}

// EmbeddingRequest is POST /v1/embeddings.
type EmbeddingRequest struct {
	Model          string       `json:"model"`
	Input          StringOrList `json:"input"`
	EncodingFormat string       `json:"encoding_format,omitempty"`
}

// Embedding is one vector of an embeddings response.
type Embedding struct {
	Embedding EmbeddingVector `json:"embedding"`
	Index     int             `json:"index"`
	Object    string          `json:"object"`
}

// EmbeddingList is the response of /v1/embeddings.
type EmbeddingList struct {
	Model  string      `json:"model"`
	Object string      `json:"object"`
	Usage  Usage       `json:"usage"`
	Data   []Embedding `json:"data"`
}

// ErrorBody is the error object of an OpenAI-style error response, in llama-server's form (an
// integer HTTP status as code).
type ErrorBody struct {
	Code    int    `json:"code"`
	Message string `json:"message"`
	Type    string `json:"type"`
	// Extra fields llama-server adds for context overflows.
	NPromptTokens int `json:"n_prompt_tokens,omitempty"`
	NCtx          int `json:"n_ctx,omitempty"`
}

// ErrorResponse is the whole body of an error response.
type ErrorResponse struct {
	Error ErrorBody `json:"error"`
}
