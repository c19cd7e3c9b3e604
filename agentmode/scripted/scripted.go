// Package scripted is a deterministic engine.Engine for tests of the REPL and agent mode: a function
// chooses each reply from the prompt, replies stream word by word, tokens are bytes (so context
// arithmetic is exact), and SaveState/LoadState round-trip through real files. It runs no model.
package scripted

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/expertsniper/expertsniper/engine"
)

// Engine is a scripted engine.Engine. Set the fields before use; the methods are safe for concurrent use.
type Engine struct {
	// Reply chooses the text generated for a request (before MaxTokens and stop strings apply).
	Reply func(req engine.Request) string
	// TokenDelay is slept between generated pieces, so that tests can cancel mid-answer.
	TokenDelay time.Duration
	// ModelInfo is returned by Info; Context defaults to 4096 when zero.
	ModelInfo engine.ModelInfo
	// StreamStats, when set, is added to Stats (as if a sniper were reading experts).
	StreamStats engine.Stats
	// PromptReadBytes and DecodeReadBytes, when set, are added to Stats().BytesRead per evaluated
	// token, as a streaming engine reads: every prompt token before the first generated token, then
	// one evaluation per generated token except a last one cut off by MaxTokens.
	PromptReadBytes, DecodeReadBytes int64

	mu       sync.Mutex
	requests []engine.Request
	held     map[int]string // what each slot's "cache" holds: the last request's prompt and reply, or a loaded state
	prompt   int64
	gen      int64
	read     int64
	closed   bool
}

var _ engine.Engine = (*Engine)(nil)

// Requests returns every request Complete received, in order.
func (e *Engine) Requests() []engine.Request {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]engine.Request(nil), e.requests...)
}

// Info implements engine.Engine.
func (e *Engine) Info() engine.ModelInfo {
	info := e.ModelInfo
	if info.Context == 0 {
		info.Context = 4096
	}
	if info.Name == "" {
		info.Name = "scripted"
	}
	if info.Mode == "" {
		info.Mode = "ram"
	}
	if info.Slots == 0 {
		info.Slots = 1
	}
	return info
}

// Tokenize implements engine.Engine: one token per byte.
func (e *Engine) Tokenize(text string, _, _ bool) ([]int32, error) {
	out := make([]int32, len(text))
	for i := 0; i < len(text); i++ {
		out[i] = int32(text[i])
	}
	return out, nil
}

// Detokenize implements engine.Engine.
func (e *Engine) Detokenize(tokens []int32) (string, error) {
	b := make([]byte, len(tokens))
	for i, t := range tokens {
		if t < 0 || t > 255 {
			return "", fmt.Errorf("detokenize: token %d out of range", t)
		}
		b[i] = byte(t)
	}
	return string(b), nil
}

// ApplyTemplate implements engine.Engine with ChatML, the template of the generated test models.
func (e *Engine) ApplyTemplate(messages []engine.Message, addAssistant bool) (string, error) {
	var b strings.Builder
	for _, m := range messages {
		fmt.Fprintf(&b, "<|im_start|>%s\n%s<|im_end|>\n", m.Role, m.Content)
	}
	if addAssistant {
		b.WriteString("<|im_start|>assistant\n")
	}
	return b.String(), nil
}

// Complete implements engine.Engine.
func (e *Engine) Complete(ctx context.Context, req engine.Request, onToken func(engine.Token) error) (engine.Result, error) {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return engine.Result{}, errors.New("scripted engine: closed")
	}
	e.requests = append(e.requests, req)
	e.mu.Unlock()
	if len(req.Prompt) > e.Info().Context {
		return engine.Result{}, fmt.Errorf("prompt of %d tokens, context %d: %w", len(req.Prompt), e.Info().Context, engine.ErrContextFull)
	}
	start := time.Now()
	reply := ""
	if e.Reply != nil {
		reply = e.Reply(req)
	}
	res := engine.Result{FinishReason: "stop"}
	res.Timings.PromptTokens = len(req.Prompt)
	res.Timings.PromptMS = 1
	res.Timings.PromptPerSecond = float64(len(req.Prompt)) * 1000
	if onToken == nil {
		onToken = func(engine.Token) error { return nil }
	}
	e.addRead(int64(len(req.Prompt)) * e.PromptReadBytes)
	var text strings.Builder
	for i, piece := range pieces(reply) {
		if req.MaxTokens > 0 && i >= req.MaxTokens {
			res.FinishReason = "length"
			break
		}
		if stop, at := firstStop(text.String()+piece, req.Stop); stop != "" {
			tail := (text.String() + piece)[:at]
			if rest := tail[text.Len():]; rest != "" {
				if err := onToken(engine.Token{ID: int32(i), Text: rest}); err != nil {
					return res, err
				}
			}
			text.Reset()
			text.WriteString(tail)
			res.StoppingWord = stop
			break
		}
		if err := ctx.Err(); err != nil {
			res.Text = text.String()
			return res, err
		}
		if e.TokenDelay > 0 {
			select {
			case <-ctx.Done():
				res.Text = text.String()
				return res, ctx.Err()
			case <-time.After(e.TokenDelay):
			}
		}
		if i > 0 {
			e.addRead(e.DecodeReadBytes) // the previous token's evaluation
		}
		text.WriteString(piece)
		res.Timings.PredictedTokens++
		if err := onToken(engine.Token{ID: int32(i), Text: piece}); err != nil {
			res.Text = text.String()
			return res, err
		}
	}
	if res.FinishReason == "stop" && res.Timings.PredictedTokens > 0 {
		e.addRead(e.DecodeReadBytes) // the last token was evaluated to find that generation ends
	}
	res.Text = text.String()
	res.Timings.PredictedMS = float64(time.Since(start).Microseconds())/1000 + 0.001
	res.Timings.PredictedPerSecond = float64(res.Timings.PredictedTokens) / (res.Timings.PredictedMS / 1000)
	e.mu.Lock()
	e.prompt += int64(res.Timings.PromptTokens)
	e.gen += int64(res.Timings.PredictedTokens)
	e.mu.Unlock()
	res.Slot = slotOf(req.Slot)
	e.hold(res.Slot, req.Prompt+res.Text)
	return res, nil
}

// slotOf is the slot a call runs in: the one asked for, else 0 (the scripted engine has no queue:
// calls run at once, and Slots reports what each slot was last left holding).
func slotOf(want int) int { return max(want, 0) }

func (e *Engine) hold(slot int, text string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.held == nil {
		e.held = map[int]string{}
	}
	e.held[slot] = text
}

// Slots implements engine.Engine: every slot idle, holding what the last call left in it.
func (e *Engine) Slots() engine.SlotsReport {
	n := e.Info().Slots
	e.mu.Lock()
	defer e.mu.Unlock()
	r := engine.SlotsReport{Slots: make([]engine.SlotState, n)}
	for i := range r.Slots {
		r.Slots[i] = engine.SlotState{ID: i, Tokens: bytesOf(e.held[i])}
	}
	return r
}

func bytesOf(s string) []int32 {
	out := make([]int32, len(s))
	for i := 0; i < len(s); i++ {
		out[i] = int32(s[i])
	}
	return out
}

// pieces splits text into words with their leading spaces, like a tokenizer's pieces.
func pieces(s string) []string {
	var out []string
	start := 0
	for i := 1; i < len(s); i++ {
		if s[i] == ' ' || s[i] == '\n' {
			out = append(out, s[start:i])
			start = i
		}
	}
	if start < len(s) {
		out = append(out, s[start:])
	}
	return out
}

func firstStop(text string, stops []string) (string, int) {
	best, at := "", -1
	for _, s := range stops {
		if s == "" {
			continue
		}
		if i := strings.Index(text, s); i >= 0 && (at < 0 || i < at) {
			best, at = s, i
		}
	}
	return best, at
}

// Embed implements engine.Engine.
func (e *Engine) Embed(context.Context, string) ([]float32, error) {
	return nil, engine.ErrNotSupported
}

type stateFile struct {
	Prompt string `json:"prompt"`
}

// SaveState implements engine.Engine by writing the prompt; LoadState reads it back.
func (e *Engine) SaveState(ctx context.Context, slot int, prompt, path string) (engine.StateInfo, error) {
	info := engine.StateInfo{Slot: slotOf(slot)}
	if err := ctx.Err(); err != nil {
		return info, err
	}
	if err := writeState(path, prompt); err != nil {
		return info, err
	}
	e.hold(info.Slot, prompt)
	info.Tokens = len(prompt)
	return info, nil
}

func writeState(path, prompt string) error {
	data, _ := json.Marshal(stateFile{Prompt: prompt})
	if err := os.WriteFile(path, data, 0o644); err != nil {
		return fmt.Errorf("save state %q: %w", path, err)
	}
	return nil
}

// LoadState implements engine.Engine.
func (e *Engine) LoadState(ctx context.Context, slot int, path string) (engine.StateInfo, error) {
	info := engine.StateInfo{Slot: slotOf(slot)}
	if err := ctx.Err(); err != nil {
		return info, err
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return info, fmt.Errorf("load state %q: %w", path, err)
	}
	var s stateFile
	if err := json.Unmarshal(data, &s); err != nil {
		return info, fmt.Errorf("load state %q: %w", path, err)
	}
	e.hold(info.Slot, s.Prompt)
	info.Tokens = len(s.Prompt)
	return info, nil
}

// SaveSlot implements engine.Engine: it writes what the slot holds.
func (e *Engine) SaveSlot(ctx context.Context, slot int, path string) (engine.StateInfo, error) {
	info := engine.StateInfo{Slot: slot}
	if err := ctx.Err(); err != nil {
		return info, err
	}
	e.mu.Lock()
	held := e.held[slot]
	e.mu.Unlock()
	if held == "" {
		return info, fmt.Errorf("slot %d: %w", slot, engine.ErrSlotEmpty)
	}
	info.Tokens = len(held)
	return info, writeState(path, held)
}

// EraseSlot implements engine.Engine.
func (e *Engine) EraseSlot(ctx context.Context, slot int) (int, error) {
	if err := ctx.Err(); err != nil {
		return 0, err
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	n := len(e.held[slot])
	delete(e.held, slot)
	return n, nil
}

// Stats implements engine.Engine.
func (e *Engine) Stats() engine.Stats {
	e.mu.Lock()
	defer e.mu.Unlock()
	s := e.StreamStats
	s.PromptTokens += e.prompt
	s.GeneratedTokens += e.gen
	s.BytesRead += e.read
	return s
}

func (e *Engine) addRead(n int64) {
	e.mu.Lock()
	e.read += n
	e.mu.Unlock()
}

// Close implements engine.Engine.
func (e *Engine) Close() error {
	e.mu.Lock()
	defer e.mu.Unlock()
	e.closed = true
	return nil
}

// Closed reports whether Close was called.
func (e *Engine) Closed() bool {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.closed
}
