// Package local is the real engine.Engine: a model loaded through binding/ (in RAM, or streamed by
// the sniper) with N slots, each its own llama.cpp context and KV cache. Requests wait in a queue
// when every slot is busy; a slot keeps its cache between requests, so a prompt that extends what a
// slot already holds only evaluates the new suffix.
package local

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/expertsniper/expertsniper/binding"
	"github.com/expertsniper/expertsniper/engine"
	"github.com/expertsniper/expertsniper/gguf"
	"github.com/expertsniper/expertsniper/sniper"
)

// Options configure Open. Zero values are sensible defaults.
type Options struct {
	Slots        int // parallel requests (default 1)
	Context      int // context size of each slot in tokens (0: the model's, at most 4096)
	Batch        int // n_batch (0: llama.cpp's default, capped at Context)
	UBatch       int // n_ubatch
	Threads      int // generation threads (0: llama.cpp's default)
	BatchThreads int // prompt threads (0: Threads)
	CacheTypeK   string
	CacheTypeV   string // a quantized V cache turns flash attention on (auto) or is refused (off)
	FlashAttn    string // "auto" (default), "on", "off"

	// Mode is "ram" (default: llama.cpp's own load, mmap), "sniper" (stream routed experts) or
	// "stream" (stream dense FFNs). Deciding "auto" from a RAM budget is the caller's job.
	Mode string
	// CacheBudget is the sniper's expert cache in bytes (sniper.Unlimited = -1 keeps all; 0 rereads
	// every expert). Only for sniper and stream modes.
	CacheBudget int64
	// NoPrefetch turns off the sniper's next-layer prefetch (on by default, as in agent run: it reads
	// the experts the next layer is predicted to choose while this one computes; results are the same).
	NoPrefetch bool
	// NoRepack loads in RAM with use_extra_bufts=false: the plain numeric path that streamed modes
	// reproduce bit-exactly (slower on CPUs with AMX or repacked kernels).
	NoRepack bool
	// StreamFS opens the model file for streaming in sniper and stream modes (nil: direct I/O);
	// tests inject faults and stalls here (sniper/faultfs).
	StreamFS sniper.FS
	// ModelOptions are passed to the binding's loader after the ones Options implies.
	ModelOptions []binding.ModelOption
	// StatsSource, when set, fills the streaming fields of Stats. By default a streamed model's own
	// sniper statistics are used, and RAM mode leaves them zero.
	StatsSource StatsSource
}

// StatsSource adds statistics that the engine does not own (e.g. the sniper's reads and cache).
type StatsSource interface {
	FillStats(s *engine.Stats)
}

// Engine implements engine.Engine over binding.
type Engine struct {
	model *binding.Model
	info  engine.ModelInfo
	opts  Options

	mu      sync.Mutex
	slots   []*slot
	changed chan struct{} // closed and replaced whenever a slot is released
	closed  bool

	embedMu  sync.Mutex
	embedCtx *binding.Context
	embedErr error

	promptTokens    atomic.Int64
	generatedTokens atomic.Int64
	stats           StatsSource
}

type slot struct {
	id   int
	ctx  *binding.Context
	busy bool
}

var _ engine.Engine = (*Engine)(nil)

// Open loads the model at path and creates its slots.
func Open(ctx context.Context, path string, o Options) (_ *Engine, err error) {
	if o.Slots <= 0 {
		o.Slots = 1
	}
	fa, err := binding.ParseFlashAttn(o.FlashAttn)
	if err != nil {
		return nil, fmt.Errorf("open engine: %w", err)
	}
	var m *binding.Model
	mode := o.Mode
	switch mode {
	case "", "ram":
		mode = "ram"
		mopts := []binding.ModelOption{}
		if o.NoRepack {
			mopts = append(mopts, binding.WithExtraBufts(false))
		}
		m, err = binding.LoadModel(ctx, path, append(mopts, o.ModelOptions...)...)
	case "sniper", "stream":
		so := binding.StreamOptions{Mode: sniper.ModeExperts, CacheBudget: o.CacheBudget, Prefetch: !o.NoPrefetch, Contexts: o.Slots, FS: o.StreamFS}
		if mode == "stream" {
			so.Mode = sniper.ModeDense
			so.Prefetch = false // prefetch predicts experts; dense layers have none
		}
		m, err = binding.LoadStreamed(ctx, path, so, o.ModelOptions...)
	default:
		return nil, fmt.Errorf("open engine: unknown mode %q (want ram, sniper or stream)", o.Mode)
	}
	if err != nil {
		return nil, fmt.Errorf("open engine: %w", err)
	}
	e := &Engine{model: m, opts: o, changed: make(chan struct{}), stats: o.StatsSource}
	defer func() {
		if err != nil {
			e.closeAll()
		}
	}()
	if e.stats == nil {
		if sn := m.Sniper(); sn != nil {
			e.stats = sniperStats{sn}
		}
	}
	cparams := binding.ContextParams{
		NCtx: o.Context, NBatch: o.Batch, NUBatch: o.UBatch, Threads: o.Threads, ThreadsBatch: o.BatchThreads,
		FlashAttn: fa, CacheTypeK: binding.CacheType(o.CacheTypeK), CacheTypeV: binding.CacheType(o.CacheTypeV),
	}
	for i := 0; i < o.Slots; i++ {
		c, err := m.NewContextWithParams(cparams)
		if err != nil {
			return nil, fmt.Errorf("open engine: slot %d: %w", i, err)
		}
		e.slots = append(e.slots, &slot{id: i, ctx: c})
	}
	fingerprint, err := gguf.Fingerprint(path)
	if err != nil {
		return nil, fmt.Errorf("open engine: %w", err)
	}
	st := m.Stats()
	e.info = engine.ModelInfo{
		Name: filepath.Base(path), Path: path, Fingerprint: fingerprint, Architecture: m.Architecture(), Description: m.Description(),
		Parameters: st.Parameters, SizeBytes: st.SizeBytes, ContextTrain: st.ContextTrain,
		Context: e.slots[0].ctx.Size(), Vocab: st.Vocab, Embedding: st.Embedding,
		HasChatTemplate: m.ChatTemplate() != "", Mode: mode, Slots: o.Slots,
		ChatTemplate: m.ChatTemplate(),
	}
	if m.BOS() != binding.NoToken {
		e.info.BOSText, _ = m.TokenToPiece(m.BOS(), true)
	}
	if m.EOS() != binding.NoToken {
		e.info.EOSText, _ = m.TokenToPiece(m.EOS(), true)
	}
	return e, nil
}

// Model is the loaded model (for callers that need the binding directly, e.g. --logits-out).
func (e *Engine) Model() *binding.Model { return e.model }

// Info describes the model.
func (e *Engine) Info() engine.ModelInfo { return e.info }

// Tokenize converts text to tokens.
func (e *Engine) Tokenize(text string, addSpecial, parseSpecial bool) ([]int32, error) {
	return e.model.Tokenize(text, addSpecial, parseSpecial)
}

// Detokenize converts tokens to text (special tokens rendered).
func (e *Engine) Detokenize(tokens []int32) (string, error) {
	return e.model.Detokenize(tokens, false, true)
}

// ApplyTemplate renders messages with the model's template, or ChatML when it has none.
func (e *Engine) ApplyTemplate(messages []engine.Message, addAssistant bool) (string, error) {
	msgs := make([]binding.ChatMessage, len(messages))
	for i, m := range messages {
		msgs[i] = binding.ChatMessage{Role: m.Role, Content: m.Content}
	}
	return e.model.ApplyChatTemplate(msgs, addAssistant)
}

// errClosed is returned by calls after Close.
var errClosed = errors.New("engine closed")

// acquire takes a slot: the requested one, or among free slots the one whose cache shares the
// longest prefix with prompt (so that a follow-up request finds its conversation). It waits while
// the wanted slot, or every slot, is busy.
func (e *Engine) acquire(ctx context.Context, want int, prompt []int32) (*slot, error) {
	if want >= len(e.slots) || want < -1 {
		return nil, fmt.Errorf("slot %d does not exist (the engine has %d: 0..%d, or -1 for any)", want, len(e.slots), len(e.slots)-1)
	}
	for {
		e.mu.Lock()
		if e.closed {
			e.mu.Unlock()
			return nil, errClosed
		}
		var best *slot
		bestLen := -1
		for _, s := range e.slots {
			if s.busy || (want >= 0 && s.id != want) {
				continue
			}
			if n := commonPrefix(s.ctx.Tokens(), prompt); n > bestLen {
				best, bestLen = s, n
			}
		}
		if best != nil {
			best.busy = true
			e.mu.Unlock()
			return best, nil
		}
		changed := e.changed
		e.mu.Unlock()
		select {
		case <-ctx.Done():
			return nil, fmt.Errorf("waiting for a free slot: %w", ctx.Err())
		case <-changed:
		}
	}
}

func (e *Engine) release(s *slot) {
	e.mu.Lock()
	s.busy = false
	close(e.changed)
	e.changed = make(chan struct{})
	e.mu.Unlock()
}

func commonPrefix(a, b []int32) int {
	n := 0
	for n < len(a) && n < len(b) && a[n] == b[n] {
		n++
	}
	return n
}

// samplerParams is the binding's sampler for req: its sampling and its grammar.
func samplerParams(req engine.Request) binding.SamplerParams {
	s := req.Sampling
	p := binding.SamplerParams{
		Temperature: s.Temperature, TopK: s.TopK, TopP: s.TopP, MinP: s.MinP,
		RepeatPenalty: s.RepeatPenalty, RepeatLastN: s.RepeatLastN,
		PresencePenalty: s.PresencePenalty, FrequencyPenalty: s.FrequencyPenalty, Seed: s.Seed,
		FixedSeed: s.FixedSeed, Grammar: req.Grammar,
	}
	if len(req.GrammarTriggers) > 0 {
		p.GrammarTriggerPatterns = []string{triggerPattern(req.GrammarTriggers)}
	}
	return p
}

// triggerPattern is the one pattern llama-server builds from trigger words: anything, then the
// first trigger (the group the grammar is fed from), then anything.
func triggerPattern(words []string) string {
	quoted := make([]string, len(words))
	for i, w := range words {
		quoted[i] = regexp.QuoteMeta(w)
	}
	return `^[\s\S]*?(` + strings.Join(quoted, "|") + `)[\s\S]*`
}

func toLogprob(lp binding.TokenLogprob) engine.TokenLogprob {
	out := engine.TokenLogprob{ID: int32(lp.Token), Text: lp.Text, Logprob: lp.Logprob}
	for _, t := range lp.Top {
		out.Top = append(out.Top, toLogprob(t))
	}
	return out
}

// Complete evaluates req.Prompt in a slot (reusing the slot's cached prefix) and generates.
func (e *Engine) Complete(ctx context.Context, req engine.Request, onToken func(engine.Token) error) (engine.Result, error) {
	var res engine.Result
	toks := req.PromptTokens
	if toks == nil {
		var err error
		if toks, err = e.model.Tokenize(req.Prompt, true, true); err != nil {
			return res, fmt.Errorf("complete: %w", err)
		}
	}
	for i, t := range toks {
		if t < 0 || int(t) >= e.info.Vocab {
			return res, fmt.Errorf("complete: prompt token %d (position %d) is outside the vocabulary of %d", t, i, e.info.Vocab)
		}
	}
	if len(toks) == 0 {
		return res, fmt.Errorf("complete: the prompt is empty")
	}
	if len(toks) >= e.info.Context {
		return res, fmt.Errorf("complete: prompt of %d tokens, context of %d: %w", len(toks), e.info.Context, engine.ErrContextFull)
	}
	s, err := e.acquire(ctx, req.Slot, toks)
	if err != nil {
		return res, fmt.Errorf("complete: %w", err)
	}
	defer e.release(s)
	opts := []binding.GenerateOption{
		binding.WithMaxTokens(req.MaxTokens),
		binding.WithStop(req.Stop...),
		binding.WithSampling(samplerParams(req)),
	}
	var pending []engine.TokenLogprob // logprobs of tokens whose text is held back
	if req.Logprobs {
		opts = append(opts, binding.WithLogprobs(req.TopLogprobs, func(lp binding.TokenLogprob) error {
			pending = append(pending, toLogprob(lp))
			return nil
		}))
	}
	if onToken != nil {
		var ids []int32 // tokens whose text is held back, then this one
		opts = append(opts, binding.WithTokenCallback(func(tok binding.Token, text string) error {
			ids = append(ids, tok)
			if text == "" {
				return nil // held back (a possible stop string, or half a character): comes later
			}
			t := engine.Token{ID: tok, Text: text, IDs: ids, Logprobs: pending}
			pending, ids = nil, nil
			return onToken(t)
		}))
	}
	r, err := s.ctx.GenerateTokens(ctx, toks, opts...)
	e.promptTokens.Add(int64(r.Timings.PromptTokens))
	e.generatedTokens.Add(int64(r.Timings.Generated))
	res = engine.Result{
		Text: r.Text, FinishReason: r.FinishReason, StoppingWord: r.StopString,
		Timings: engine.Timings{
			PromptTokens: r.Timings.PromptTokens, CachedTokens: r.Timings.CachedTokens,
			PromptMS:        ms(r.Timings.PromptDuration.Seconds()),
			PromptPerSecond: r.Timings.PromptPerSecond(),
			PredictedTokens: r.Timings.Generated, PredictedMS: ms(r.Timings.GenerateDuration.Seconds()),
			PredictedPerSecond: r.Timings.GeneratedPerSecond(),
		},
	}
	for _, lp := range r.Logprobs {
		res.Logprobs = append(res.Logprobs, toLogprob(lp))
	}
	res.Tokens = make([]int32, len(r.Tokens))
	copy(res.Tokens, r.Tokens)
	if err != nil {
		return res, fmt.Errorf("complete in slot %d: %w", s.id, err)
	}
	return res, nil
}

func ms(seconds float64) float64 { return seconds * 1000 }

// Embed returns the mean-pooled embedding of text, computed in a context of its own.
func (e *Engine) Embed(ctx context.Context, text string) ([]float32, error) {
	if !e.model.HasDecoder() && !e.model.HasEncoder() {
		return nil, engine.ErrNotSupported
	}
	toks, err := e.model.Tokenize(text, true, true)
	if err != nil {
		return nil, fmt.Errorf("embed: %w", err)
	}
	e.embedMu.Lock()
	defer e.embedMu.Unlock()
	e.mu.Lock()
	closed := e.closed
	e.mu.Unlock()
	if closed {
		return nil, errClosed
	}
	if e.embedCtx == nil && e.embedErr == nil {
		n := e.info.Context
		fa, _ := binding.ParseFlashAttn(e.opts.FlashAttn)
		// One physical batch holds the whole input: llama.cpp pools within a ubatch.
		e.embedCtx, e.embedErr = e.model.NewContextWithParams(binding.ContextParams{
			NCtx: n, NBatch: n, NUBatch: n, Threads: e.opts.Threads, ThreadsBatch: e.opts.BatchThreads,
			FlashAttn: fa, Embeddings: true, Pooling: binding.PoolingMean,
		})
	}
	if e.embedErr != nil {
		return nil, fmt.Errorf("embed: %w: %v", engine.ErrNotSupported, e.embedErr)
	}
	if len(toks) > e.embedCtx.Size() {
		return nil, fmt.Errorf("embed: %d tokens, context of %d: %w", len(toks), e.embedCtx.Size(), engine.ErrContextFull)
	}
	v, err := e.embedCtx.Embeddings(ctx, toks)
	if errors.Is(err, binding.ErrNoEmbeddings) {
		return nil, fmt.Errorf("embed: %w: %v", engine.ErrNotSupported, err)
	}
	if err != nil {
		return nil, fmt.Errorf("embed: %w", err)
	}
	return v, nil
}

// SaveState evaluates prompt in a slot and writes the slot's KV state to path.
func (e *Engine) SaveState(ctx context.Context, slotID int, prompt, path string) (int, error) {
	toks, err := e.model.Tokenize(prompt, true, true)
	if err != nil {
		return 0, fmt.Errorf("save state: %w", err)
	}
	if len(toks) == 0 {
		return 0, fmt.Errorf("save state: the prompt is empty")
	}
	if len(toks) >= e.info.Context {
		return 0, fmt.Errorf("save state: prompt of %d tokens, context of %d: %w", len(toks), e.info.Context, engine.ErrContextFull)
	}
	s, err := e.acquire(ctx, slotID, toks)
	if err != nil {
		return 0, fmt.Errorf("save state: %w", err)
	}
	defer e.release(s)
	cached, err := s.ctx.PrepareForPrompt(toks, true)
	if err != nil {
		return 0, fmt.Errorf("save state: %w", err)
	}
	if err := s.ctx.Eval(ctx, toks[cached:], nil); err != nil {
		return 0, fmt.Errorf("save state: evaluate prompt: %w", err)
	}
	e.promptTokens.Add(int64(len(toks) - cached))
	if err := s.ctx.SaveState(path); err != nil {
		return 0, fmt.Errorf("save state: %w", err)
	}
	return len(toks), nil
}

// LoadState restores a state file into a slot; a request that starts with its prompt resumes there.
func (e *Engine) LoadState(ctx context.Context, slotID int, path string) (int, error) {
	if _, err := os.Stat(path); err != nil {
		return 0, fmt.Errorf("load state: %w", err)
	}
	s, err := e.acquire(ctx, slotID, nil)
	if err != nil {
		return 0, fmt.Errorf("load state: %w", err)
	}
	defer e.release(s)
	toks, err := s.ctx.LoadState(path)
	if err != nil {
		return 0, fmt.Errorf("load state into slot %d: %w", s.id, err)
	}
	return len(toks), nil
}

// Stats reports live counters.
func (e *Engine) Stats() engine.Stats {
	st := engine.Stats{
		RSSBytes:        residentBytes(),
		PromptTokens:    e.promptTokens.Load(),
		GeneratedTokens: e.generatedTokens.Load(),
	}
	if e.stats != nil {
		e.stats.FillStats(&st)
	}
	return st
}

// Close waits for running requests to finish (cancel them first to be quick), then frees the slots
// and the model. It is idempotent.
func (e *Engine) Close() error {
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		return nil
	}
	e.closed = true
	for {
		busy := false
		for _, s := range e.slots {
			busy = busy || s.busy
		}
		if !busy {
			break
		}
		ch := e.changed
		e.mu.Unlock()
		<-ch
		e.mu.Lock()
	}
	e.mu.Unlock()
	return e.closeAll()
}

func (e *Engine) closeAll() error {
	var errs []error
	e.embedMu.Lock()
	if e.embedCtx != nil {
		errs = append(errs, e.embedCtx.Close())
		e.embedCtx = nil
	}
	e.embedMu.Unlock()
	for _, s := range e.slots {
		errs = append(errs, s.ctx.Close())
	}
	errs = append(errs, e.model.Close())
	return errors.Join(errs...)
}

// sniperStats fills the streaming fields from a streamed model's sniper.
type sniperStats struct{ sn *sniper.Sniper }

func (s sniperStats) FillStats(st *engine.Stats) {
	ss := s.sn.Stats()
	st.BytesRead = ss.BytesRead
	st.Reads = ss.Reads
	st.CacheHits = ss.Hits
	st.CacheMisses = ss.Misses
	st.CacheBytes = ss.CacheBytes
	st.CacheBudget = ss.CacheBudget
	st.ReadP50Micros = ss.ReadP50.Microseconds()
	st.ReadP99Micros = ss.ReadP99.Microseconds()
	st.LayerExpertActivations = ss.ExpertActivations
}
