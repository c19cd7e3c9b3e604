// Package local is the real engine.Engine: a model loaded through binding/ (in RAM, or streamed by
// the sniper) with N slots, the sequences of one llama.cpp context, decoded together by one
// scheduler (continuous batching: scheduler.go). Requests wait in a queue when every slot is busy; a
// slot keeps its cache between requests, so a prompt that extends what a slot already holds only
// evaluates the new suffix.
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
	"time"

	"github.com/expertsniper/expertsniper/binding"
	"github.com/expertsniper/expertsniper/engine"
	"github.com/expertsniper/expertsniper/gguf"
	"github.com/expertsniper/expertsniper/plan"
	"github.com/expertsniper/expertsniper/sniper"
	"github.com/expertsniper/expertsniper/stream"
)

// Options configure Open. Zero values are sensible defaults.
type Options struct {
	Slots        int // parallel requests: sequences decoded together (default 1)
	Context      int // context size of each slot in tokens (0: the model's, at most 4096)
	Batch        int // n_batch (0: llama.cpp's default, capped at Context)
	UBatch       int // n_ubatch
	Threads      int // generation threads (0: llama.cpp's default)
	BatchThreads int // prompt threads (0: Threads)
	CacheTypeK   string
	CacheTypeV   string // a quantized V cache turns flash attention on (auto) or is refused (off)
	FlashAttn    string // "auto" (default), "on", "off"
	// Checkpoints is how many context checkpoints each slot keeps for a recurrent or hybrid model
	// (llama-server's --ctx-checkpoints; 0: none): recurrent states that let a request which
	// diverges from what its slot holds resume from a point before it instead of from the start
	// (checkpoints.go). The memory plan counts them.
	Checkpoints int

	// Mode is ModeRAM (llama.cpp's own load, mmap), ModeSniper (stream routed experts), ModeStream
	// (stream dense FFNs), or ModeAuto ("" too): decided by Decide from the memory plan.
	Mode Mode
	// RAM is the memory budget of the whole model (weights held in RAM, expert cache, KV cache and
	// compute buffers), a size such as "8GiB" or "unlimited" ("": plan.DefaultBudget). Cache is the
	// sniper's expert cache, a size or "unlimited" ("0" rereads every expert; "": what RAM leaves).
	// Both are parsed by ParseSize; see Decide for what they mean in each mode.
	RAM, Cache string
	// Policy names the cache's eviction policy ("": DefaultPolicy), Readers the parallel disk reads
	// (0: DefaultReaders), NoRecycle releases evicted experts' memory instead of reusing it (for
	// measurements). Streamed modes only.
	Policy    string
	Readers   int
	NoRecycle bool
	// NoPrefetch turns off the sniper's next-layer prefetch (on by default, as in agent run: it reads
	// the experts the next layer is predicted to choose, or in stream mode the next layer's FFN, while
	// this one computes; results are the same).
	NoPrefetch bool
	// NoRepack keeps every weight in the file's layout (use_extra_bufts=false), in every mode: by
	// default weights llama.cpp's CPU kernels repack are repacked, in RAM by llama.cpp and when
	// streaming by the loader, as each expert is read (binding/repack.go). Each mode equals --mode ram
	// with the same setting bit for bit; repacking is faster where the CPU has the kernels.
	NoRepack bool
	// Repack converts every streamed read into llama.cpp's repacked layout even when the cache
	// cannot hold every streamed weight. By default (neither Repack nor NoRepack) streamed modes
	// repack only when it can (Decision.Repack says why): each read is then converted once, while
	// with a smaller cache the same experts are read and converted again and again, and the
	// conversion costs more than the repacked kernels save (docs/benchmarks.md, issue 16).
	Repack bool
	// StreamFS opens the model file for streaming in sniper and stream modes (nil: direct I/O);
	// tests inject faults and stalls here (sniper/faultfs).
	StreamFS sniper.FS `json:"-"`
	// PredictInline makes the prefetcher score every prediction (stream.Options.PredictInline;
	// for tests).
	PredictInline bool
	// OnDecision, when set, is told how the model will run (mode, budget, warnings) before it loads.
	OnDecision func(Decision) `json:"-"`
	// Distributed says ModelOptions spread the layers over RPC workers: the model runs in RAM mode
	// (auto picks it), and this machine holds only its share, so --ram is not held against the whole.
	Distributed bool
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
	// weights are the streamed model's weights (its sniper), owned by model; nil in RAM mode.
	weights  *stream.Weights
	info     engine.ModelInfo
	opts     Options
	decision Decision

	// The one context, its batch and its slots (its sequences) belong to the loop (scheduler.go).
	lctx      *binding.Context
	batch     *binding.Batch
	batchSize int
	slots     []*slot
	loopCtx   context.Context
	wake      chan struct{} // capacity 1: a job was queued or the engine closed
	loopDone  chan struct{}

	// logitsHook, when set (by tests, before the first request), receives the logits of every
	// output the loop samples from, with its slot.
	logitsHook func(slot int, logits []float32)
	// promptGather is how long a streamed step that would start a prompt waits for others (see the
	// constant; tests lengthen it, before the first request).
	promptGather time.Duration

	mu        sync.Mutex // guards queue, tasks, closed and published
	queue     []*job
	tasks     int64 // jobs admitted so far: the next one's number is tasks+1
	closed    bool
	published []engine.SlotState

	embedMu  sync.Mutex
	embedCtx *binding.Context
	embedErr error

	promptTokens    atomic.Int64
	generatedTokens atomic.Int64
	// recurrent: the model's memory cannot be cut back to a prefix (checkpoints.go).
	recurrent                             bool
	checkpointsTaken, checkpointsRestored atomic.Int64
	stats                                 StatsSource
}

var _ engine.Engine = (*Engine)(nil)

// Open loads the model at path and creates its slots.
func Open(ctx context.Context, path string, o Options) (_ *Engine, err error) {
	if err := o.Validate(); err != nil {
		return nil, fmt.Errorf("open engine: %w", err)
	}
	fa, _ := binding.ParseFlashAttn(o.FlashAttn)
	o.CacheTypeK, _ = plan.ParseKVType(o.CacheTypeK)
	o.CacheTypeV, _ = plan.ParseKVType(o.CacheTypeV)
	if o.Slots <= 0 {
		o.Slots = 1
	}
	pm, err := plan.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open engine: %w", err)
	}
	d, err := Decide(pm, o)
	if err != nil {
		return nil, err
	}
	if o.OnDecision != nil {
		o.OnDecision(d)
	}
	m, w, err := loadModel(ctx, path, o, d)
	if err != nil {
		return nil, fmt.Errorf("open engine: %w", err)
	}
	e := &Engine{model: m, weights: w, opts: o, decision: d, stats: o.StatsSource, loopCtx: context.Background(),
		wake: make(chan struct{}, 1), loopDone: make(chan struct{}), promptGather: promptGather}
	defer func() {
		if err != nil {
			e.closeAll()
		}
	}()
	if e.stats == nil {
		if w != nil {
			e.stats = sniperStats{w.Sniper()}
		}
	}
	nctx := o.Context
	if nctx == 0 {
		nctx = min(m.Stats().ContextTrain, 4096)
	}
	// KV cells of its own for each slot (llama.cpp's default, not unified; llama-server's with -np
	// N): a sequence's attention spans its own cells only, so its logits do not depend on what the
	// other slots hold, and they equal llama-server's with the same -c and -np (a unified cache
	// computes attention over every slot's cells, masked, which changes the sums' last bits). The
	// price: a sequence's saved state loads only into a context with as many slots; LoadState then
	// evaluates the saved tokens again.
	cparams := binding.ContextParams{
		NCtx: nctx * o.Slots, NBatch: o.Batch, NUBatch: o.UBatch, NSeqMax: o.Slots,
		Threads: o.Threads, ThreadsBatch: o.BatchThreads,
		FlashAttn: fa, CacheTypeK: binding.CacheType(o.CacheTypeK), CacheTypeV: binding.CacheType(o.CacheTypeV),
	}
	if cparams.NBatch == 0 {
		cparams.NBatch = min(2048, nctx) // llama.cpp's default, within one slot's context
	}
	e.recurrent = m.IsRecurrent()
	if e.lctx, err = m.NewContextWithParams(cparams); err != nil {
		return nil, fmt.Errorf("open engine: context for %d slots: %w", o.Slots, err)
	}
	e.batchSize = e.lctx.BatchSize()
	if e.batch, err = binding.NewBatch(e.batchSize, 1); err != nil {
		return nil, fmt.Errorf("open engine: %w", err)
	}
	for i := 0; i < o.Slots; i++ {
		e.slots = append(e.slots, &slot{id: i})
		e.published = append(e.published, engine.SlotState{ID: i})
	}
	fingerprint, err := gguf.Fingerprint(path)
	if err != nil {
		return nil, fmt.Errorf("open engine: %w", err)
	}
	st := m.Stats()
	e.info = engine.ModelInfo{
		Name: filepath.Base(path), Path: path, Fingerprint: fingerprint, Architecture: m.Architecture(), Description: m.Description(),
		Parameters: st.Parameters, SizeBytes: st.SizeBytes, ContextTrain: st.ContextTrain,
		Context: e.lctx.SequenceSize(), Vocab: st.Vocab, Embedding: st.Embedding,
		HasChatTemplate: m.ChatTemplate() != "", Mode: string(d.Mode), Slots: o.Slots,
		ChatTemplate: m.ChatTemplate(),
	}
	if m.BOS() != binding.NoToken {
		e.info.BOSText, _ = m.TokenToPiece(m.BOS(), true)
	}
	if m.EOS() != binding.NoToken {
		e.info.EOSText, _ = m.TokenToPiece(m.EOS(), true)
	}
	go e.loop()
	return e, nil
}

// Model is the loaded model (for callers that need the binding directly).
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
	return e.complete(ctx, req, nil, onToken)
}

// complete runs a completion through the loop, watched by obs (nil: not watched).
func (e *Engine) complete(ctx context.Context, req engine.Request, obs *Observer, onToken func(engine.Token) error) (engine.Result, error) {
	var res engine.Result
	toks := req.PromptTokens
	if toks == nil {
		var err error
		if toks, err = e.model.Tokenize(req.Prompt, true, true); err != nil {
			return res, fmt.Errorf("complete: %w", err)
		}
	}
	if err := e.checkPrompt(toks); err != nil {
		return res, fmt.Errorf("complete: %w", err)
	}
	keepAt, err := e.keepPosition(req, toks)
	if err != nil {
		return res, fmt.Errorf("complete: %w", err)
	}
	if len(toks) >= e.info.Context {
		return res, fmt.Errorf("complete: prompt of %d tokens, context of %d: %w", len(toks), e.info.Context, engine.ErrContextFull)
	}
	if err := e.checkSlot(req.Slot); err != nil {
		return res, fmt.Errorf("complete: %w", err)
	}
	smpl, err := binding.NewSampler(e.model, samplerParams(req))
	if err != nil {
		return res, fmt.Errorf("complete: %w", err)
	}
	j := &job{want: req.Slot, prompt: toks, generate: true, req: req, sampler: smpl, stop: binding.NewStopFilter(req.Stop), obs: obs, keepAt: keepAt}
	err = e.submit(ctx, j, onToken)
	// The loop is done with j: its result is ours to read.
	res = j.res
	if err != nil {
		return res, fmt.Errorf("complete: %w", err)
	}
	return res, nil
}

// checkPrompt refuses an empty prompt and tokens outside the vocabulary.
func (e *Engine) checkPrompt(toks []int32) error {
	for i, t := range toks {
		if t < 0 || int(t) >= e.info.Vocab {
			return fmt.Errorf("prompt token %d (position %d) is outside the vocabulary of %d", t, i, e.info.Vocab)
		}
	}
	if len(toks) == 0 {
		return fmt.Errorf("the prompt is empty")
	}
	return nil
}

// checkSlot refuses a slot number the engine does not have.
func (e *Engine) checkSlot(want int) error {
	if want >= len(e.slots) || want < -1 {
		return fmt.Errorf("slot %d does not exist (the engine has %d: 0..%d, or -1 for any)", want, len(e.slots), len(e.slots)-1)
	}
	return nil
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
func (e *Engine) SaveState(ctx context.Context, slotID int, prompt, path string) (engine.StateInfo, error) {
	info := engine.StateInfo{Slot: slotID}
	toks, err := e.model.Tokenize(prompt, true, true)
	if err != nil {
		return info, fmt.Errorf("save state: %w", err)
	}
	if len(toks) == 0 {
		return info, fmt.Errorf("save state: the prompt is empty")
	}
	if len(toks) >= e.info.Context {
		return info, fmt.Errorf("save state: prompt of %d tokens, context of %d: %w", len(toks), e.info.Context, engine.ErrContextFull)
	}
	if err := e.checkSlot(slotID); err != nil {
		return info, fmt.Errorf("save state: %w", err)
	}
	j := &job{want: slotID, prompt: toks, onSlot: func(s *slot) error {
		info.Slot = s.id
		return e.lctx.SaveSequence(s.id, path, s.tokens)
	}}
	if err := e.submit(ctx, j, nil); err != nil {
		return info, fmt.Errorf("save state: %w", err)
	}
	info.Tokens = len(toks)
	return info, nil
}

// LoadState restores a state file into a slot (-1: the least recently used free one); a request
// that starts with its prompt resumes there.
func (e *Engine) LoadState(ctx context.Context, slotID int, path string) (engine.StateInfo, error) {
	info := engine.StateInfo{Slot: slotID}
	if _, err := os.Stat(path); err != nil {
		return info, fmt.Errorf("load state: %w", err)
	}
	if err := e.checkSlot(slotID); err != nil {
		return info, fmt.Errorf("load state: %w", err)
	}
	var toks []int32
	j := &job{want: slotID, onSlot: func(s *slot) error {
		t, err := e.lctx.LoadSequence(s.id, path)
		toks, info.Slot = t, s.id
		if err == nil {
			s.tokens = t
		} else {
			s.tokens = s.tokens[:0]
		}
		s.dropCheckpointsFrom(0)
		return err
	}}
	err := e.submit(ctx, j, nil)
	if errors.Is(err, binding.ErrOtherSequenceCount) && len(toks) > 0 && len(toks) < e.info.Context {
		// Saved with another number of slots: evaluate its tokens into the slot instead (the same
		// cache, at the price of a prompt evaluation).
		err = e.submit(ctx, &job{want: info.Slot, prompt: toks, onSlot: func(*slot) error { return nil }}, nil)
	}
	if err != nil {
		return info, fmt.Errorf("load state: %w", err)
	}
	info.Tokens = len(toks)
	return info, nil
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
	e.mu.Unlock()
	e.wakeLoop()
	<-e.loopDone
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
	if e.batch != nil {
		errs = append(errs, e.batch.Close())
	}
	if e.lctx != nil {
		errs = append(errs, e.lctx.Close())
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
	if s.sn.Index().Mode == sniper.ModeDense {
		// A layer read ahead came from disk all the same: the hit rate of layers is what the cache
		// holds (budget / total with the fixed set), the read-ahead what overlapped compute.
		st.CacheHits -= ss.PrefetchHits
		st.CacheMisses += ss.PrefetchHits
		st.ReadAheadHits = ss.PrefetchHits
	}
	st.CacheBytes = ss.CacheBytes
	st.CacheBudget = ss.CacheBudget
	st.ReadP50Micros = ss.ReadP50.Microseconds()
	st.ReadP99Micros = ss.ReadP99.Microseconds()
	if s.sn.Index().Mode != sniper.ModeDense {
		st.LayerExpertActivations = ss.ExpertActivations // a dense layer has no experts to chart
	}
}
