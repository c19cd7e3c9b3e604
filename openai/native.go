package openai

import (
	"bytes"
	"encoding/json"
	"math"

	"github.com/expertsniper/expertsniper/engine"
)

// NativePrompt is llama-server's /completion prompt: a string, or an array of token ids.
type NativePrompt struct {
	Text   string
	Tokens []int32
	// IsTokens tells an empty token array from an empty string.
	IsTokens bool
}

func (p *NativePrompt) UnmarshalJSON(data []byte) error {
	data = bytes.TrimSpace(data)
	if len(data) > 0 && data[0] == '"' {
		p.IsTokens = false
		return json.Unmarshal(data, &p.Text)
	}
	if len(data) > 0 && data[0] == '[' {
		if err := json.Unmarshal(data, &p.Tokens); err != nil {
			return &RequestError{Field: "prompt", Message: "must be a string or an array of token ids"}
		}
		p.IsTokens = true
		return nil
	}
	return &RequestError{Field: "prompt", Message: "must be a string or an array of token ids"}
}

// NativeCompletionRequest is POST /completion (llama-server's own API).
type NativeCompletionRequest struct {
	Prompt      *NativePrompt `json:"prompt"`
	NPredict    *int          `json:"n_predict,omitempty"`
	Stop        StringOrList  `json:"stop,omitempty"`
	Stream      bool          `json:"stream"`
	CachePrompt *bool         `json:"cache_prompt,omitempty"`
	// ReturnTokens fills "tokens" with the generated token ids (llama-server's default: empty).
	ReturnTokens bool `json:"return_tokens"`
	IDSlot       *int `json:"id_slot,omitempty"`
	// Grammar (GBNF) or JSONSchema constrain the output, as llama-server's fields of the same names.
	Grammar    *string         `json:"grammar,omitempty"`
	JSONSchema json.RawMessage `json:"json_schema,omitempty"`
	// NProbs reports each generated token's probability with this many alternatives.
	NProbs *int `json:"n_probs,omitempty"`
	SamplingParams
}

// NativeCall is a validated /completion request. When Prompt.IsTokens the server detokenizes it into
// Request.Prompt.
type NativeCall struct {
	Prompt       NativePrompt
	Request      engine.Request
	Stream       bool
	ReturnTokens bool
}

// FromNativeRequest validates a /completion request.
func FromNativeRequest(req NativeCompletionRequest, def engine.Sampling) (NativeCall, error) {
	var call NativeCall
	if req.Prompt == nil {
		return call, badField("prompt", "is required")
	}
	if err := checkStops(req.Stop); err != nil {
		return call, err
	}
	limit, err := maxTokens(namedLimit{"n_predict", req.NPredict})
	if err != nil {
		return call, err
	}
	sampling, err := req.SamplingParams.ToEngine(def)
	if err != nil {
		return call, err
	}
	call.Prompt = *req.Prompt
	call.Request = engine.Request{Prompt: req.Prompt.Text, MaxTokens: limit, Stop: req.Stop, Sampling: sampling,
		Slot: checkSlot(req.IDSlot)}
	err = constrain(&call.Request,
		grammarSource{"grammar", req.Grammar != nil, func() (string, error) { return *req.Grammar, nil }},
		grammarSource{"json_schema", len(req.JSONSchema) > 0 && string(bytes.TrimSpace(req.JSONSchema)) != "null",
			func() (string, error) { return schemaGrammar("json_schema", req.JSONSchema) }})
	if err != nil {
		return call, err
	}
	if err := countLogprobsRequest("n_probs", req.NProbs, &call.Request); err != nil {
		return call, err
	}
	call.Stream = req.Stream
	call.Request.Stream = req.Stream
	call.ReturnTokens = req.ReturnTokens
	return call, nil
}

// GenerationSettings echoes the settings a native request ran with: the subset of llama-server's
// fields that this server implements (it has no mirostat, DRY or XTC).
type GenerationSettings struct {
	Seed             uint32   `json:"seed"`
	Temperature      float32  `json:"temperature"`
	TopK             int      `json:"top_k"`
	TopP             float32  `json:"top_p"`
	MinP             float32  `json:"min_p"`
	TypicalP         float32  `json:"typical_p"`
	RepeatLastN      int      `json:"repeat_last_n"`
	RepeatPenalty    float32  `json:"repeat_penalty"`
	PresencePenalty  float32  `json:"presence_penalty"`
	FrequencyPenalty float32  `json:"frequency_penalty"`
	Stop             []string `json:"stop"`
	MaxTokens        int      `json:"max_tokens"`
	NPredict         int      `json:"n_predict"`
	NKeep            int      `json:"n_keep"`
	IgnoreEOS        bool     `json:"ignore_eos"`
	Stream           bool     `json:"stream"`
	NProbs           int      `json:"n_probs"`
	MinKeep          int      `json:"min_keep"`
	Samplers         []string `json:"samplers"`
}

// ToGenerationSettings reports a request's effective settings (-1 for no token limit, as llama-server).
func ToGenerationSettings(r engine.Request, stream bool) GenerationSettings {
	n := r.MaxTokens
	if n <= 0 {
		n = -1
	}
	stop := r.Stop
	if stop == nil {
		stop = []string{}
	}
	s := r.Sampling
	seed := s.Seed
	if seed == 0 && !s.FixedSeed {
		seed = math.MaxUint32 // llama.cpp's LLAMA_DEFAULT_SEED: a random seed
	}
	return GenerationSettings{Seed: seed, Temperature: s.Temperature, TopK: s.TopK, TopP: s.TopP, MinP: s.MinP,
		TypicalP: 1, RepeatLastN: s.RepeatLastN, RepeatPenalty: s.RepeatPenalty, PresencePenalty: s.PresencePenalty,
		FrequencyPenalty: s.FrequencyPenalty, Stop: stop, MaxTokens: n, NPredict: n, Stream: stream,
		Samplers: []string{"penalties", "top_k", "top_p", "min_p", "temperature"}, NProbs: r.TopLogprobs}
}

// NativeChunk is one streamed /completion event before the last.
type NativeChunk struct {
	Index           int     `json:"index"`
	Content         string  `json:"content"`
	Tokens          []int32 `json:"tokens"`
	Stop            bool    `json:"stop"`
	IDSlot          int     `json:"id_slot"`
	TokensPredicted int     `json:"tokens_predicted"`
	TokensEvaluated int     `json:"tokens_evaluated"`
	// Probabilities, with n_probs, of the tokens this event's content came from.
	Probabilities []TokenLogprob `json:"completion_probabilities,omitempty"`
}

// NativeCompletion is the non-streamed /completion response and the last streamed event.
type NativeCompletion struct {
	Index              int                `json:"index"`
	Content            string             `json:"content"`
	Tokens             []int32            `json:"tokens"`
	IDSlot             int                `json:"id_slot"`
	Stop               bool               `json:"stop"`
	Model              string             `json:"model"`
	TokensPredicted    int                `json:"tokens_predicted"`
	TokensEvaluated    int                `json:"tokens_evaluated"`
	GenerationSettings GenerationSettings `json:"generation_settings"`
	Prompt             string             `json:"prompt"`
	HasNewLine         bool               `json:"has_new_line"`
	Truncated          bool               `json:"truncated"`
	StopType           string             `json:"stop_type"`
	StoppingWord       string             `json:"stopping_word"`
	TokensCached       int                `json:"tokens_cached"`
	Timings            Timings            `json:"timings"`
	// Probabilities, with n_probs, of every generated token (non-streamed only).
	Probabilities []TokenLogprob `json:"completion_probabilities,omitempty"`
}

// StopType is llama-server's reason a generation ended: "eos", "word" (a stop string) or "limit".
func StopType(res engine.Result) string {
	switch {
	case res.FinishReason == "length":
		return "limit"
	case res.StoppingWord != "":
		return "word"
	default:
		return "eos"
	}
}

// ToNativeCompletion builds the final /completion object. content is the whole generation for a
// non-streamed response and "" for the last streamed event (the pieces went before it); tokens are
// every generated token, reported only when the client asked with return_tokens.
func ToNativeCompletion(meta ResponseMeta, call NativeCall, slot int, content string, tokens []int32, res engine.Result) NativeCompletion {
	if tokens == nil || !call.ReturnTokens {
		tokens = []int32{}
	}
	usage := ToUsage(res.Timings)
	out := NativeCompletion{
		Index:              0,
		Content:            content,
		Tokens:             tokens,
		IDSlot:             slot,
		Stop:               true,
		Model:              meta.Model,
		TokensPredicted:    usage.CompletionTokens,
		TokensEvaluated:    usage.PromptTokens,
		GenerationSettings: ToGenerationSettings(call.Request, call.Stream),
		Prompt:             call.Request.Prompt,
		HasNewLine:         bytes.ContainsRune([]byte(res.Text), '\n'),
		Truncated:          false,
		StopType:           StopType(res),
		StoppingWord:       res.StoppingWord,
		TokensCached:       res.Timings.CachedTokens,
		Timings:            ToTimings(res.Timings),
	}
	if content != "" && call.Request.Logprobs {
		out.Probabilities = ToChatLogprobs(res.Logprobs)
	}
	return out
}

// TokenizeRequest is POST /tokenize.
type TokenizeRequest struct {
	Content      *string `json:"content"`
	AddSpecial   bool    `json:"add_special"`
	ParseSpecial *bool   `json:"parse_special,omitempty"`
	WithPieces   bool    `json:"with_pieces"`
}

// TokenPiece is one token with its text, for with_pieces.
type TokenPiece struct {
	ID    int32  `json:"id"`
	Piece string `json:"piece"`
}

// DetokenizeRequest is POST /detokenize.
type DetokenizeRequest struct {
	Tokens []int32 `json:"tokens"`
}

// ToEngineMessages validates and converts chat messages (for /apply-template).
func ToEngineMessages(msgs []ChatMessage) ([]engine.Message, error) {
	call, err := FromChatRequest(ChatCompletionRequest{Messages: msgs}, DefaultSampling)
	return call.Messages, err
}
