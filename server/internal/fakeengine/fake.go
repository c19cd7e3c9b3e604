// Package fakeengine is a scripted engine.Engine for the server's tests: a byte-level tokenizer, a
// ChatML-like template, deterministic replies delivered one word per token with an optional delay,
// per-slot "KV caches" with prefix reuse, state files, and counters a test can assert on. It
// implements the interface's contract as engine/local does (a FIFO queue of requests; a free slot
// chosen by the longest cached prefix, the least recently used among equals; slot reports; stop
// strings, limits, cancellation within one token) so that handler tests exercise real semantics.
package fakeengine

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"os"
	"strings"
	"sync"
	"time"

	"github.com/expertsniper/expertsniper/engine"
)

// BOS is the id Tokenize prepends when addSpecial is set; ids 0..255 are bytes.
const BOS = 256

const stateMagic = "FAKESTATE1\n"

// Engine is the fake. Set the exported fields before first use.
type Engine struct {
	// Reply computes the whole answer to a prompt; nil answers with DefaultReply.
	Reply func(prompt string) string
	// TokenDelay is slept before each generated token (cancellable).
	TokenDelay time.Duration
	// Devices are reported in Stats, as for a model spread over RPC workers.
	Devices []engine.Device
	// Embeddings enables Embed; otherwise it returns engine.ErrNotSupported.
	Embeddings bool
	// FailAfter, when > 0, makes Complete fail with FailErr after that many tokens (a disk error
	// in the middle of an answer).
	FailAfter int
	FailErr   error
	// FailPrompt, when set, fails Complete with its error for the prompts it chooses.
	FailPrompt func(prompt string) error
	// TokenizeDelay is slept in every Tokenize call (a slow tokenizer; not cancellable, as a C call).
	TokenizeDelay time.Duration
	// SaveDelay is slept after SaveState writes its file (a slow disk), so that saves overlap.
	SaveDelay time.Duration
	// StatsAtEnd counts generated tokens in Stats only when a request finishes, as engine/local does.
	StatsAtEnd bool

	info engine.ModelInfo

	mu          sync.Mutex
	slots       []*slot
	queue       []*waiter // FIFO
	tasks       int64
	running     int
	maxRunning  int
	completed   int
	cancelled   int
	stats       engine.Stats
	closed      bool
	tokenized   int // bytes passed to Tokenize
	tokenizes   int // Tokenize calls
	layerCounts [][]int64
}

// New makes a fake with slots slots of ctx bytes of context each.
func New(slots, ctx int) *Engine {
	const layers, experts = 4, 8
	e := &Engine{
		info: engine.ModelInfo{
			Name: "fake-moe.gguf", Path: "/models/fake-moe.gguf", Fingerprint: "sha256:fake-moe", Architecture: "qwen3moe",
			Description: "fake MoE 1M Q8_0", Parameters: 1 << 20, SizeBytes: 1 << 21, ContextTrain: 4096,
			Context: ctx, Vocab: BOS + 1, Embedding: 64, HasChatTemplate: true, Mode: "sniper", Slots: slots,
		},
	}
	for i := 0; i < slots; i++ {
		e.slots = append(e.slots, &slot{id: i})
	}
	e.layerCounts = make([][]int64, layers)
	for i := range e.layerCounts {
		e.layerCounts[i] = make([]int64, experts)
	}
	return e
}

// DefaultReply is a deterministic answer that depends on the prompt's last line.
func DefaultReply(prompt string) string {
	lines := strings.Split(strings.TrimSpace(prompt), "\n")
	last := lines[len(lines)-1]
	if i := strings.LastIndex(prompt, "<|im_start|>user\n"); i >= 0 {
		last = strings.SplitN(prompt[i+len("<|im_start|>user\n"):], "<|im_end|>", 2)[0]
	}
	return "Hello! You said: " + last + ". This is a **fake** answer with `code` and more words to stream."
}

func (e *Engine) Info() engine.ModelInfo { return e.info }

// SetMode makes the fake report another mode, e.g. "stream" (a dense model streamed layer by layer,
// whose misses are layers read ahead); call before use.
func (e *Engine) SetMode(mode string) { e.info.Mode = mode }

// SetFingerprint makes the fake another model under the same file name (call before use).
func (e *Engine) SetFingerprint(fp string) { e.info.Fingerprint = fp }

func (e *Engine) Tokenize(text string, addSpecial, parseSpecial bool) ([]int32, error) {
	e.mu.Lock()
	e.tokenized += len(text)
	e.tokenizes++
	e.mu.Unlock()
	time.Sleep(e.TokenizeDelay)
	out := make([]int32, 0, len(text)+1)
	if addSpecial {
		out = append(out, BOS)
	}
	for i := 0; i < len(text); i++ {
		out = append(out, int32(text[i]))
	}
	return out, nil
}

func (e *Engine) Detokenize(tokens []int32) (string, error) {
	var b bytes.Buffer
	for i, t := range tokens {
		switch {
		case t == BOS:
		case t >= 0 && t < 256:
			b.WriteByte(byte(t))
		default:
			return "", fmt.Errorf("token %d (position %d) is outside the vocabulary of %d", t, i, BOS+1)
		}
	}
	return b.String(), nil
}

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

// slot is one slot: what its "KV cache" holds and what runs in it (guarded by Engine.mu).
type slot struct {
	id                      int
	kv                      string
	busy                    bool
	task                    int64          // of the running or last completion
	used                    int64          // the number of the last call admitted (for least-recently-used choices)
	req                     engine.Request // of the running or last task, without its prompt
	prompt, cached, decoded int
}

// waiter is a call waiting for a slot.
type waiter struct {
	want       int
	prompt     string
	completion bool
	ch         chan *slot // buffered: dispatch never blocks
}

// acquire queues for the requested slot, or the free one whose cache shares the longest prefix
// with prompt, and waits for it. req is the completion's (nil for a state call).
func (e *Engine) acquire(ctx context.Context, want int, prompt string, req *engine.Request) (*slot, error) {
	if want >= len(e.slots) || want < -1 {
		return nil, fmt.Errorf("slot %d does not exist (%d slots)", want, len(e.slots))
	}
	w := &waiter{want: want, prompt: prompt, ch: make(chan *slot, 1), completion: req != nil}
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return nil, errors.New("fake engine is closed")
	}
	e.queue = append(e.queue, w)
	e.dispatch()
	e.mu.Unlock()
	select {
	case s := <-w.ch:
		if req != nil {
			e.mu.Lock()
			s.req, s.prompt, s.cached, s.decoded = *req, 0, 0, 0
			s.req.Prompt, s.req.PromptTokens = "", nil
			e.mu.Unlock()
		}
		return s, nil
	case <-ctx.Done():
		e.mu.Lock()
		for i, x := range e.queue {
			if x == w {
				e.queue = append(e.queue[:i], e.queue[i+1:]...)
				e.mu.Unlock()
				return nil, ctx.Err()
			}
		}
		e.mu.Unlock()
		e.release(<-w.ch) // handed a slot just as the caller left: pass it on
		return nil, ctx.Err()
	}
}

// dispatch hands free slots to waiters in order; a waiter for a busy slot does not hold up those
// behind it. Caller holds mu.
func (e *Engine) dispatch() {
	keep := e.queue[:0]
	for _, w := range e.queue {
		var best *slot
		bestLen := -1
		for _, s := range e.slots {
			if s.busy || (w.want >= 0 && s.id != w.want) {
				continue
			}
			n := commonPrefix(s.kv, w.prompt)
			if n > bestLen || (n == bestLen && s.used < best.used) {
				best, bestLen = s, n
			}
		}
		if best == nil {
			keep = append(keep, w)
			continue
		}
		e.tasks++
		best.busy, best.used = true, e.tasks
		if w.completion {
			best.task = e.tasks
		}
		w.ch <- best
	}
	clear(e.queue[len(keep):])
	e.queue = keep
}

func (e *Engine) release(s *slot) {
	e.mu.Lock()
	s.busy = false
	e.dispatch()
	e.mu.Unlock()
}

func commonPrefix(a, b string) int {
	n := 0
	for n < len(a) && n < len(b) && a[n] == b[n] {
		n++
	}
	return n
}

// pieces splits an answer into word-sized tokens, each but the first with its leading space.
func pieces(text string) []string {
	var out []string
	start := 0
	for i := 1; i < len(text); i++ {
		if text[i] == ' ' || text[i] == '\n' {
			out = append(out, text[start:i])
			start = i
		}
	}
	if start < len(text) {
		out = append(out, text[start:])
	}
	return out
}

func pieceID(p string) int32 {
	h := fnv.New32a()
	h.Write([]byte(p))
	return int32(h.Sum32() % BOS)
}

func (e *Engine) Complete(ctx context.Context, req engine.Request, onToken func(engine.Token) error) (engine.Result, error) {
	var res engine.Result
	promptTokens := len(req.Prompt)
	if req.PromptTokens != nil {
		promptTokens = len(req.PromptTokens)
	}
	if promptTokens > e.info.Context {
		return res, fmt.Errorf("%w: %d tokens, context %d", engine.ErrContextFull, promptTokens, e.info.Context)
	}
	res.Slot = -1
	sl, err := e.acquire(ctx, req.Slot, req.Prompt, &req)
	if err != nil {
		return res, err
	}
	defer e.release(sl)
	res.Slot = sl.id
	e.mu.Lock()
	e.running++
	if e.running > e.maxRunning {
		e.maxRunning = e.running
	}
	cached := commonPrefix(sl.kv, req.Prompt)
	if cached == len(req.Prompt) && cached > 0 {
		cached-- // the last prompt token is always evaluated again to get its logits
	}
	e.stats.PromptTokens += int64(promptTokens - cached)
	sl.prompt, sl.cached = promptTokens-cached, cached
	e.mu.Unlock()
	// The slot holds what was evaluated: the prompt and the answer so far, whatever ends the call.
	var text strings.Builder
	defer func() {
		e.mu.Lock()
		e.running--
		sl.kv = req.Prompt + text.String()
		e.mu.Unlock()
	}()

	start := time.Now()
	reply := DefaultReply
	if e.Reply != nil {
		reply = e.Reply
	}
	if e.FailPrompt != nil {
		if err := e.FailPrompt(req.Prompt); err != nil {
			return res, err
		}
	}
	answer := reply(req.Prompt)
	promptDone := time.Now()
	res.Timings.PromptTokens = promptTokens - cached
	res.Timings.CachedTokens = cached
	res.Timings.PromptMS = float64(promptDone.Sub(start).Microseconds()) / 1000

	res.FinishReason = "stop"
	generated := 0
loop:
	for _, p := range pieces(answer) {
		if req.MaxTokens > 0 && generated >= req.MaxTokens {
			res.FinishReason = "length"
			break
		}
		if promptTokens+generated >= e.info.Context {
			res.FinishReason = "length"
			break
		}
		if e.TokenDelay > 0 {
			select {
			case <-ctx.Done():
			case <-time.After(e.TokenDelay):
			}
		}
		if err := ctx.Err(); err != nil {
			e.countCancel()
			return res, err
		}
		if e.FailAfter > 0 && generated >= e.FailAfter {
			return res, e.FailErr
		}
		res.Tokens = append(res.Tokens, pieceID(p))
		emit := p
		for _, s := range req.Stop {
			if i := strings.Index(text.String()+p, s); i >= 0 {
				emit = (text.String() + p)[text.Len():max(i, text.Len())]
				res.StoppingWord = s
				break
			}
		}
		if emit != "" {
			text.WriteString(emit)
			generated++
			e.touchExperts(emit)
			e.mu.Lock()
			sl.decoded = generated
			e.mu.Unlock()
			if err := onToken(engine.Token{ID: pieceID(emit), Text: emit, IDs: []int32{pieceID(emit)}, Slot: sl.id}); err != nil {
				e.countCancel()
				return res, err
			}
		}
		if res.StoppingWord != "" {
			break loop
		}
	}
	res.Text = text.String()
	res.Timings.PredictedTokens = generated
	res.Timings.PredictedMS = float64(time.Since(promptDone).Microseconds()) / 1000
	if res.Timings.PromptMS > 0 {
		res.Timings.PromptPerSecond = float64(res.Timings.PromptTokens) / res.Timings.PromptMS * 1000
	}
	if res.Timings.PredictedMS > 0 {
		res.Timings.PredictedPerSecond = float64(generated) / res.Timings.PredictedMS * 1000
	}
	e.mu.Lock()
	e.completed++
	if e.StatsAtEnd {
		e.stats.GeneratedTokens += int64(generated)
	}
	e.mu.Unlock()
	return res, nil
}

func (e *Engine) countCancel() {
	e.mu.Lock()
	e.cancelled++
	e.mu.Unlock()
}

// touchExperts updates streaming statistics as if the router had picked experts for the token.
func (e *Engine) touchExperts(piece string) {
	e.mu.Lock()
	defer e.mu.Unlock()
	h := fnv.New32a()
	h.Write([]byte(piece))
	sum := h.Sum32()
	for l := range e.layerCounts {
		x := int((sum >> (4 * l)) % uint32(len(e.layerCounts[l])))
		e.layerCounts[l][x]++
		if sum&(1<<l) == 0 {
			e.stats.CacheHits++
		} else {
			e.stats.CacheMisses++
			if e.info.Mode == "stream" {
				e.stats.ReadAheadHits++
			}
			e.stats.Reads++
			e.stats.BytesRead += 1 << 16
		}
	}
	if !e.StatsAtEnd {
		e.stats.GeneratedTokens++
	}
}

func (e *Engine) Embed(ctx context.Context, text string) ([]float32, error) {
	if !e.Embeddings {
		return nil, engine.ErrNotSupported
	}
	v := make([]float32, e.info.Embedding)
	for i := 0; i < len(text); i++ {
		v[i%len(v)] += float32(text[i]) / 255
	}
	return v, nil
}

func (e *Engine) SaveState(ctx context.Context, slot int, prompt, path string) (engine.StateInfo, error) {
	info := engine.StateInfo{Slot: slot}
	if len(prompt) > e.info.Context {
		return info, fmt.Errorf("%w: %d tokens, context %d", engine.ErrContextFull, len(prompt), e.info.Context)
	}
	s, err := e.acquire(ctx, slot, prompt, nil)
	if err != nil {
		return info, err
	}
	defer e.release(s)
	info.Slot = s.id
	if err := e.writeState(ctx, path, prompt); err != nil {
		return info, fmt.Errorf("save state of slot %d: %w", s.id, err)
	}
	e.mu.Lock()
	cached := commonPrefix(s.kv, prompt)
	s.kv = prompt
	s.prompt, s.cached = len(prompt)-cached, cached
	e.stats.PromptTokens += int64(len(prompt) - cached)
	e.mu.Unlock()
	info.Tokens = len(prompt)
	return info, nil
}

// writeState writes a state file holding text.
func (e *Engine) writeState(ctx context.Context, path, text string) error {
	// As llama.cpp does (fopen "wb"): an existing file keeps its mode, a new one gets 0644 - umask.
	if err := os.WriteFile(path, []byte(stateMagic+text), 0o644); err != nil {
		return err
	}
	if e.SaveDelay > 0 {
		select {
		case <-time.After(e.SaveDelay):
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return nil
}

func (e *Engine) LoadState(ctx context.Context, slot int, path string) (engine.StateInfo, error) {
	info := engine.StateInfo{Slot: slot}
	data, err := os.ReadFile(path)
	if err != nil {
		return info, fmt.Errorf("load state: %w", err)
	}
	if !bytes.HasPrefix(data, []byte(stateMagic)) {
		return info, fmt.Errorf("load state %q: not a state file", path)
	}
	s, err := e.acquire(ctx, slot, "", nil)
	if err != nil {
		return info, err
	}
	defer e.release(s)
	prompt := string(data[len(stateMagic):])
	e.mu.Lock()
	s.kv = prompt
	e.mu.Unlock()
	info.Slot, info.Tokens = s.id, len(prompt)
	return info, nil
}

// SaveSlot writes what the slot holds, once it is free.
func (e *Engine) SaveSlot(ctx context.Context, slot int, path string) (engine.StateInfo, error) {
	info := engine.StateInfo{Slot: slot}
	if slot < 0 {
		return info, fmt.Errorf("slot %d does not exist (%d slots)", slot, len(e.slots))
	}
	s, err := e.acquire(ctx, slot, "", nil)
	if err != nil {
		return info, err
	}
	defer e.release(s)
	e.mu.Lock()
	kv := s.kv
	e.mu.Unlock()
	if kv == "" {
		return info, fmt.Errorf("slot %d: %w", slot, engine.ErrSlotEmpty)
	}
	if err := e.writeState(ctx, path, kv); err != nil {
		return info, fmt.Errorf("save slot %d: %w", slot, err)
	}
	info.Tokens = len(kv)
	return info, nil
}

// EraseSlot empties the slot's cache, once it is free.
func (e *Engine) EraseSlot(ctx context.Context, slot int) (int, error) {
	if slot < 0 {
		return 0, fmt.Errorf("slot %d does not exist (%d slots)", slot, len(e.slots))
	}
	s, err := e.acquire(ctx, slot, "", nil)
	if err != nil {
		return 0, err
	}
	defer e.release(s)
	e.mu.Lock()
	defer e.mu.Unlock()
	n := len(s.kv)
	s.kv = ""
	return n, nil
}

// Slots reports every slot (its cache as tokens: BOS and the bytes) and the queue.
func (e *Engine) Slots() engine.SlotsReport {
	e.mu.Lock()
	defer e.mu.Unlock()
	r := engine.SlotsReport{Queued: len(e.queue)}
	for _, s := range e.slots {
		var toks []int32
		if s.kv != "" {
			toks = append(toks, BOS)
			for i := 0; i < len(s.kv); i++ {
				toks = append(toks, int32(s.kv[i]))
			}
		}
		r.Slots = append(r.Slots, engine.SlotState{ID: s.id, Busy: s.busy, Tokens: toks, Task: s.task,
			PromptTokens: s.prompt, CachedTokens: s.cached, Decoded: s.decoded, Request: s.req})
	}
	return r
}

func (e *Engine) Stats() engine.Stats {
	e.mu.Lock()
	defer e.mu.Unlock()
	s := e.stats
	s.RSSBytes = 100 << 20
	s.CacheBudget = 64 << 20
	s.CacheBytes = min(int64(32<<20), s.CacheMisses<<16)
	s.ReadP50Micros, s.ReadP99Micros = 300, 1400
	s.Devices = e.Devices
	s.LayerExpertActivations = make([][]int64, len(e.layerCounts))
	for i, l := range e.layerCounts {
		s.LayerExpertActivations[i] = append([]int64(nil), l...)
	}
	return s
}

func (e *Engine) Close() error {
	e.mu.Lock()
	e.closed = true
	e.mu.Unlock()
	return nil
}

// Counters a test asserts on.
type Counters struct {
	Running, MaxRunning, Completed, Cancelled int
	BusySlots                                 int
	// TokenizedBytes and TokenizeCalls count what Tokenize was given.
	TokenizedBytes, TokenizeCalls int
}

func (e *Engine) Counters() Counters {
	e.mu.Lock()
	defer e.mu.Unlock()
	busy := 0
	for _, s := range e.slots {
		if s.busy {
			busy++
		}
	}
	return Counters{Running: e.running, MaxRunning: e.maxRunning, Completed: e.completed, Cancelled: e.cancelled, BusySlots: busy,
		TokenizedBytes: e.tokenized, TokenizeCalls: e.tokenizes}
}

// SlotKV returns what slot i's cache holds.
func (e *Engine) SlotKV(i int) string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.slots[i].kv
}

var _ engine.Engine = (*Engine)(nil)
