// Package engine is the narrow interface that the REPL, agent mode and the HTTP server use to talk to
// a loaded model. The real implementation sits over binding/ (and the sniper when streaming); tests use
// scripted fakes. Keep it small: a new front end should need nothing else.
package engine

import (
	"context"
	"errors"
)

// Message is one chat turn.
type Message struct {
	Role    string `json:"role"` // "system", "user", "assistant", "tool"
	Content string `json:"content"`
	// ToolCalls are an assistant turn's calls; ToolCallID and Name identify the call a tool turn
	// answers. Only templates rendered as Jinja (chatfmt) see them.
	ToolCalls  []ToolCall `json:"tool_calls,omitempty"`
	ToolCallID string     `json:"tool_call_id,omitempty"`
	Name       string     `json:"name,omitempty"`
}

// ToolCall is one function call the model made; Arguments is a JSON object's text.
type ToolCall struct {
	ID        string `json:"id"`
	Name      string `json:"name"`
	Arguments string `json:"arguments"`
}

// Sampling selects the next token. The zero value means greedy (temperature 0).
type Sampling struct {
	Temperature      float32
	TopK             int     // 0 = off
	TopP             float32 // 0 or 1 = off
	MinP             float32 // 0 = off
	RepeatPenalty    float32 // 0 or 1 = off
	RepeatLastN      int
	PresencePenalty  float32
	FrequencyPenalty float32
	Seed             uint32 // 0 = random, unless FixedSeed
	// FixedSeed uses Seed as given, 0 included (an API client's "seed": 0 asks for seed 0).
	FixedSeed bool
}

// Request is one completion of a raw prompt (chat front ends apply the template first).
type Request struct {
	Prompt string
	// PromptTokens, when set, are evaluated as given instead of tokenizing Prompt (llama-server's
	// token-id prompts: no BOS added, no re-tokenization); Prompt is then only their text.
	PromptTokens []int32
	MaxTokens    int      // <= 0: until end of generation or the context is full
	Stop         []string // generation ends before any of these strings; they are not emitted
	Sampling     Sampling
	// Slot pins the request to one slot (-1 = any free slot). Slots keep their KV cache between
	// requests, so a prompt that extends the previous one only evaluates the new tokens.
	Slot int
	// Grammar constrains sampling to a GBNF grammar (llama.cpp's grammar sampler, root rule "root");
	// "" = free text. It is how structured output and forced tool calls are guaranteed.
	Grammar string
	// GrammarTriggers make Grammar lazy: it applies from the first of these literal strings the
	// model writes (e.g. "<tool_call>"); before that the model writes freely.
	GrammarTriggers []string
	// Logprobs reports each generated token's log-probability with TopLogprobs alternatives.
	Logprobs    bool
	TopLogprobs int
	// KeepPrefix, a prefix of Prompt, marks where the caller's next request will diverge from this
	// one (an agent's routing call, just before its instruction): a recurrent or hybrid model keeps
	// a context checkpoint there, so that the next request resumes from it instead of from the
	// start. Other models, and requests with PromptTokens, need none and ignore it.
	KeepPrefix string
	// Stream says whether the caller streams the answer, for reports (llama-server's /slots shows
	// it); the engine hands every token to onToken either way.
	Stream bool
}

// Token is one generated piece, delivered as soon as it is decoded.
type Token struct {
	ID   int32
	Text string
	// IDs are the tokens generated since the previous Token, this one last: more than one when text
	// was held back (half a character, a possible stop string).
	IDs []int32
	// Slot is the slot generating it (the engine picks one when Request.Slot is -1).
	Slot int
	// Logprobs (with Request.Logprobs) of the tokens generated since the previous Token: usually
	// this one, more when text was held back (half a character, a possible stop string).
	Logprobs []TokenLogprob
}

// TokenLogprob is a token's log-probability at one position, from the raw logits (before sampling
// changed them, as llama-server reports it), and the most likely alternatives when asked for.
type TokenLogprob struct {
	ID      int32
	Text    string
	Logprob float32
	Top     []TokenLogprob
}

// Timings of one request.
type Timings struct {
	PromptTokens    int     `json:"prompt_n"`
	PromptMS        float64 `json:"prompt_ms"`
	PromptPerSecond float64 `json:"prompt_per_second"`
	// CachedTokens were reused from the slot's KV cache rather than evaluated.
	CachedTokens       int     `json:"cache_n"`
	PredictedTokens    int     `json:"predicted_n"`
	PredictedMS        float64 `json:"predicted_ms"`
	PredictedPerSecond float64 `json:"predicted_per_second"`
}

// Result of one request.
type Result struct {
	Text         string
	FinishReason string         // "stop" (end of generation or a stop string), "length" (MaxTokens or context full)
	StoppingWord string         // the stop string that ended it, if any
	Logprobs     []TokenLogprob // one per generated token, with Request.Logprobs
	// Tokens are every generated token, including those whose text was held back (half a
	// character, a stop string's start) and the one that completed a stop string.
	Tokens  []int32
	Timings Timings
	// Slot is the slot the request ran in (-1 if it never got one).
	Slot int
}

// ModelInfo describes the loaded model.
type ModelInfo struct {
	Name string // file name without directory
	Path string
	// Fingerprint identifies the file's contents (gguf.Fingerprint): saved KV state is keyed by it,
	// so that another model that happens to share the file name never resumes it.
	Fingerprint     string
	Architecture    string
	Description     string
	Parameters      uint64
	SizeBytes       uint64
	ContextTrain    int
	Context         int // the context size of each slot
	Vocab           int
	Embedding       int
	HasChatTemplate bool
	// ChatTemplate is the GGUF's tokenizer.chat_template (Jinja), "" if none; BOSText and EOSText
	// are the begin/end-of-sequence tokens as text, which templates print.
	ChatTemplate     string
	BOSText, EOSText string
	Mode             string // "ram", "sniper" or "stream"
	Slots            int
}

// Stats are live counters; the streaming fields are zero in RAM mode.
type Stats struct {
	RSSBytes        int64
	PromptTokens    int64
	GeneratedTokens int64
	BytesRead       int64
	Reads           int64
	// CacheHits and CacheMisses count lookups of experts (sniper mode) or of layers' FFNs (stream
	// mode, where a miss is a layer read from disk, and ReadAheadHits counts those misses read ahead
	// of their use, while the layer before computed).
	CacheHits     int64
	CacheMisses   int64
	ReadAheadHits int64
	CacheBytes    int64
	CacheBudget   int64
	ReadP50Micros int64
	ReadP99Micros int64
	// LayerExpertActivations[layer][expert] counts how often the router chose that expert.
	LayerExpertActivations [][]int64
	// Devices are where the model's layers live when it is spread over llama.cpp RPC workers (the
	// local machine first); empty when everything is local.
	Devices []Device
	// EngineProcessRSSBytes is the resident memory of a separate engine process holding the model
	// (engine/isolated); 0 when the model lives in the caller's process.
	EngineProcessRSSBytes int64
}

// Device is one place a spread model's layers live: the local machine or an RPC worker's device.
type Device struct {
	Name       string `json:"name"`
	Endpoint   string `json:"endpoint,omitempty"` // the worker's HOST:PORT; "" for the local machine
	Layers     int    `json:"layers"`             // of n_layer+1 (the output layer counts as one)
	FreeBytes  uint64 `json:"free_bytes"`         // as the device reported when the model loaded
	TotalBytes uint64 `json:"total_bytes"`
}

// SlotState is what one slot holds and does, as GET /slots shows it. The request fields describe the
// running request, or the last one once it is done (zero before the first).
type SlotState struct {
	ID   int
	Busy bool // a request (or a state save, load or erase) runs in it
	// Tokens are the prefix its KV cache holds: a request whose prompt starts with them evaluates
	// only the rest.
	Tokens []int32
	Task   int64 // the request's number (1, 2, ... in the order the engine admitted them)
	// PromptTokens were evaluated for the request, CachedTokens reused from the slot's cache,
	// Decoded generated so far.
	PromptTokens, CachedTokens, Decoded int
	// Request is the request's settings, without its prompt.
	Request Request
}

// SlotsReport is every slot and the requests waiting for one.
type SlotsReport struct {
	Slots  []SlotState
	Queued int
}

// StateInfo says where a state save or load ran and how many tokens the state holds.
type StateInfo struct {
	Slot   int
	Tokens int
}

// Engine is a loaded model with one or more slots. The engine alone owns the slots and the queue of
// requests waiting for one: requests wait in FIFO order (or until their ctx ends) and, unless they
// name a slot, take the free one whose cache shares the longest prefix with their prompt (the least
// recently used among equals). All methods are safe for concurrent use.
type Engine interface {
	Info() ModelInfo
	Tokenize(text string, addSpecial, parseSpecial bool) ([]int32, error)
	Detokenize(tokens []int32) (string, error)
	// ApplyTemplate renders messages with the model's chat template (or a documented fallback).
	ApplyTemplate(messages []Message, addAssistant bool) (string, error)
	// Complete evaluates the prompt and generates, calling onToken for each piece; an error from
	// onToken or ctx cancellation stops generation within one token.
	Complete(ctx context.Context, req Request, onToken func(Token) error) (Result, error)
	// Embed returns the embedding of text, or ErrNotSupported.
	Embed(ctx context.Context, text string) ([]float32, error)
	// SaveState evaluates prompt in a slot (-1: the engine picks, as for Complete) and writes its KV
	// state to path; LoadState restores such a file into a slot (-1: the least recently used free
	// one) so that a request starting with the same prompt resumes from it.
	SaveState(ctx context.Context, slot int, prompt, path string) (StateInfo, error)
	LoadState(ctx context.Context, slot int, path string) (StateInfo, error)
	// SaveSlot writes what slot holds (the last request's prompt and answer) to path, for
	// llama-server's /slots/N?action=save; EraseSlot empties its cache and returns how many tokens
	// it held. Both wait for the slot to be free.
	SaveSlot(ctx context.Context, slot int, path string) (StateInfo, error)
	EraseSlot(ctx context.Context, slot int) (erased int, err error)
	// Slots reports every slot and the queue.
	Slots() SlotsReport
	Stats() Stats
	Close() error
}

// ErrNotSupported is returned for features the model does not have (e.g. embeddings).
var ErrNotSupported = errors.New("not supported by this model")

// ErrSlotEmpty is returned by SaveSlot for a slot whose cache holds nothing.
var ErrSlotEmpty = errors.New("the slot holds nothing to save")

// ErrContextFull is returned when the prompt alone does not fit in the slot's context.
var ErrContextFull = errors.New("prompt does not fit in the context")
