package binding

/*
#include "shim.h"
*/
import "C"

import (
	"context"
	"fmt"
	"sync"
	"unsafe"
)

// FlashAttn selects flash attention. The zero value is FlashAttnAuto (llama.cpp decides).
type FlashAttn int

// Flash attention modes.
const (
	FlashAttnAuto FlashAttn = iota
	FlashAttnOn
	FlashAttnOff
)

func (f FlashAttn) c() C.enum_llama_flash_attn_type {
	switch f {
	case FlashAttnOn:
		return C.LLAMA_FLASH_ATTN_TYPE_ENABLED
	case FlashAttnOff:
		return C.LLAMA_FLASH_ATTN_TYPE_DISABLED
	}
	return C.LLAMA_FLASH_ATTN_TYPE_AUTO
}

// String is the llama-server flag spelling (auto, on, off).
func (f FlashAttn) String() string {
	switch f {
	case FlashAttnOn:
		return "on"
	case FlashAttnOff:
		return "off"
	}
	return "auto"
}

// ParseFlashAttn parses "auto", "on"/"true"/"1" or "off"/"false"/"0".
func ParseFlashAttn(s string) (FlashAttn, error) {
	switch s {
	case "", "auto":
		return FlashAttnAuto, nil
	case "on", "true", "1", "enabled":
		return FlashAttnOn, nil
	case "off", "false", "0", "disabled":
		return FlashAttnOff, nil
	}
	return FlashAttnAuto, fmt.Errorf("flash attention %q: want auto, on or off", s)
}

// CacheType is the element type of the K or V cache.
type CacheType string

// KV cache types. Quantized V caches need flash attention in llama.cpp.
const (
	CacheF16  CacheType = "f16"
	CacheF32  CacheType = "f32"
	CacheBF16 CacheType = "bf16"
	CacheQ8_0 CacheType = "q8_0"
	CacheQ4_0 CacheType = "q4_0"
	CacheQ4_1 CacheType = "q4_1"
	CacheQ5_0 CacheType = "q5_0"
	CacheQ5_1 CacheType = "q5_1"
)

func (t CacheType) ggml() (C.enum_ggml_type, error) {
	switch t {
	case "", CacheF16:
		return C.GGML_TYPE_F16, nil
	case CacheF32:
		return C.GGML_TYPE_F32, nil
	case CacheBF16:
		return C.GGML_TYPE_BF16, nil
	case CacheQ8_0:
		return C.GGML_TYPE_Q8_0, nil
	case CacheQ4_0:
		return C.GGML_TYPE_Q4_0, nil
	case CacheQ4_1:
		return C.GGML_TYPE_Q4_1, nil
	case CacheQ5_0:
		return C.GGML_TYPE_Q5_0, nil
	case CacheQ5_1:
		return C.GGML_TYPE_Q5_1, nil
	}
	return 0, fmt.Errorf("unknown KV cache type %q (want f16, f32, bf16, q8_0, q4_0, q4_1, q5_0 or q5_1)", string(t))
}

func (t CacheType) quantized() bool {
	switch t {
	case "", CacheF16, CacheF32, CacheBF16:
		return false
	}
	return true
}

// Pooling is how embeddings of a sequence are pooled.
type Pooling int

// Pooling types as in llama.h.
const (
	PoolingDefault Pooling = C.LLAMA_POOLING_TYPE_UNSPECIFIED // the model's own
	PoolingNone    Pooling = C.LLAMA_POOLING_TYPE_NONE
	PoolingMean    Pooling = C.LLAMA_POOLING_TYPE_MEAN
	PoolingCLS     Pooling = C.LLAMA_POOLING_TYPE_CLS
	PoolingLast    Pooling = C.LLAMA_POOLING_TYPE_LAST
)

// ContextParams configure a context. Zero values mean llama.cpp's defaults, except NCtx (0 = the
// model's training context, capped at 4096 to keep memory modest; set it explicitly for more).
type ContextParams struct {
	NCtx         int
	NBatch       int // logical batch: the most tokens one Decode call takes (default 2048, capped at NCtx)
	NUBatch      int // physical batch (default 512)
	NSeqMax      int // sequences (default 1)
	Threads      int // threads for generation (0 = llama.cpp's default)
	ThreadsBatch int // threads for prompt processing (0 = Threads)
	FlashAttn    FlashAttn
	// CacheTypeK and CacheTypeV default to f16. A quantized V cache needs flash attention: with
	// FlashAttnAuto it is switched on; with FlashAttnOff NewContext returns an error.
	CacheTypeK CacheType
	CacheTypeV CacheType
	Embeddings bool // compute embeddings (see Context.Embeddings)
	Pooling    Pooling
	NoPerf     bool

	// evalCallback and evalCallbackData are llama_context_params.cb_eval/cb_eval_user_data: ggml's
	// scheduler calls it for every graph node (ask=true) and, for nodes it accepted, after computing
	// them (ask=false). The evaluation hook (hook.c, evalhook.go) sets them to observe the
	// router's ffn_moe_topk-N nodes; nothing else in the binding uses them.
	evalCallback     C.ggml_backend_sched_eval_callback
	evalCallbackData unsafe.Pointer
}

// ContextOption sets one context parameter.
type ContextOption func(*ContextParams)

// WithContextSize sets n_ctx.
func WithContextSize(n int) ContextOption { return func(p *ContextParams) { p.NCtx = n } }

// WithBatch sets n_batch and n_ubatch (0 keeps the default).
func WithBatch(nBatch, nUBatch int) ContextOption {
	return func(p *ContextParams) { p.NBatch, p.NUBatch = nBatch, nUBatch }
}

// WithThreads sets the generation and batch thread counts (batch 0 = same as threads).
func WithThreads(threads, batchThreads int) ContextOption {
	return func(p *ContextParams) { p.Threads, p.ThreadsBatch = threads, batchThreads }
}

// WithFlashAttn selects flash attention.
func WithFlashAttn(f FlashAttn) ContextOption { return func(p *ContextParams) { p.FlashAttn = f } }

// WithCacheTypes sets the K and V cache types.
func WithCacheTypes(k, v CacheType) ContextOption {
	return func(p *ContextParams) { p.CacheTypeK, p.CacheTypeV = k, v }
}

// WithEmbeddings enables embeddings with the given pooling.
func WithEmbeddings(pooling Pooling) ContextOption {
	return func(p *ContextParams) { p.Embeddings, p.Pooling = true, pooling }
}

// WithSequences sets the number of parallel sequences.
func WithSequences(n int) ContextOption { return func(p *ContextParams) { p.NSeqMax = n } }

// toC builds llama_context_params from llama.cpp's defaults and p. abortFlag is the C-heap flag the
// context's abort callback reads.
func (p *ContextParams) toC(ctxTrain int, abortFlag *C.int) (C.struct_llama_context_params, error) {
	cp := C.llama_context_default_params()
	nctx := p.NCtx
	if nctx < 0 {
		return cp, fmt.Errorf("context size %d is negative", nctx)
	}
	if nctx == 0 {
		nctx = min(ctxTrain, 4096)
	}
	cp.n_ctx = C.uint32_t(nctx)
	if p.NBatch < 0 || p.NUBatch < 0 || p.NSeqMax < 0 || p.Threads < 0 || p.ThreadsBatch < 0 {
		return cp, fmt.Errorf("batch sizes, sequences and threads must not be negative")
	}
	if p.NBatch > 0 {
		cp.n_batch = C.uint32_t(p.NBatch)
	}
	if int(cp.n_batch) > nctx {
		cp.n_batch = C.uint32_t(nctx)
	}
	if p.NUBatch > 0 {
		cp.n_ubatch = C.uint32_t(p.NUBatch)
	}
	if cp.n_ubatch > cp.n_batch {
		cp.n_ubatch = cp.n_batch
	}
	if p.NSeqMax > 0 {
		cp.n_seq_max = C.uint32_t(p.NSeqMax)
	}
	if p.Threads > 0 {
		cp.n_threads = C.int32_t(p.Threads)
		cp.n_threads_batch = C.int32_t(p.Threads)
	}
	if p.ThreadsBatch > 0 {
		cp.n_threads_batch = C.int32_t(p.ThreadsBatch)
	}
	kt, err := p.CacheTypeK.ggml()
	if err != nil {
		return cp, fmt.Errorf("K cache: %w", err)
	}
	vt, err := p.CacheTypeV.ggml()
	if err != nil {
		return cp, fmt.Errorf("V cache: %w", err)
	}
	cp.type_k, cp.type_v = kt, vt
	fa := p.FlashAttn
	if p.CacheTypeV.quantized() {
		switch fa {
		case FlashAttnOff:
			return cp, fmt.Errorf("a quantized V cache (%s) needs flash attention, which is off", p.CacheTypeV)
		case FlashAttnAuto:
			fa = FlashAttnOn
		}
	}
	cp.flash_attn_type = fa.c()
	cp.embeddings = C.bool(p.Embeddings)
	if p.Embeddings {
		cp.pooling_type = C.enum_llama_pooling_type(p.Pooling)
	}
	cp.no_perf = C.bool(p.NoPerf)
	cp.abort_callback = C.es_abort_fn()
	cp.abort_callback_data = unsafe.Pointer(abortFlag)
	cp.cb_eval = p.evalCallback
	cp.cb_eval_user_data = p.evalCallbackData
	return cp, nil
}

// Context is a session over a model: its own KV cache, batch buffers and logits. A Context is not
// safe for concurrent use: use one per goroutine (several per model are fine, each with its own
// KV cache). Methods that run the model take a context.Context; cancelling it aborts the current
// llama_decode through the abort callback and stops generation within one token.
type Context struct {
	mu     sync.Mutex // guards c against Close racing a call; calls themselves must not overlap
	c      *C.struct_llama_context
	model  *Model
	params ContextParams
	nCtx   int
	nBatch int
	// nUBatch is n_ubatch: llama_decode computes a batch in micro-batches of this many tokens.
	nUBatch int
	abort   *C.int         // read by es_abort_cb on compute threads; set by a goroutine on ctx.Done()
	hook    *contextHook   // the evaluation hook of a LoadFromUser model (evalhook.go), else nil
	compute *computeThread // where llama_decode runs (computethread.go)

	// past holds the tokens of sequence 0 whose keys and values are in the cache, in order.
	past []Token
	// logitsRows maps the batch index of each output of the last decode to its position.
	lastOutputs int
}

// NewContext creates a context (session) over m.
func (m *Model) NewContext(opts ...ContextOption) (*Context, error) {
	var p ContextParams
	for _, o := range opts {
		o(&p)
	}
	return m.NewContextWithParams(p)
}

// NewContextWithParams creates a context from explicit parameters.
func (m *Model) NewContextWithParams(p ContextParams) (*Context, error) {
	ctxTrain := m.Stats().ContextTrain // before locking: Stats locks too
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.c == nil {
		return nil, fmt.Errorf("new context: %w", ErrClosed)
	}
	flag := C.es_flag_new()
	if flag == nil {
		return nil, fmt.Errorf("new context: out of memory")
	}
	hook, err := m.attachHook(&p, flag) // evalhook.go; nil for models without one
	if err != nil {
		C.free(unsafe.Pointer(flag))
		return nil, fmt.Errorf("new context for %q: %w", m.Name(), err)
	}
	cp, err := p.toC(ctxTrain, flag)
	if err != nil {
		hook.free()
		C.free(unsafe.Pointer(flag))
		return nil, fmt.Errorf("new context for %q: %w", m.Name(), err)
	}
	var cc *C.struct_llama_context
	logged := captureErrors(func() { cc = C.llama_init_from_model(m.c, cp) })
	if cc == nil {
		hook.free()
		C.free(unsafe.Pointer(flag))
		msg := fmt.Sprintf("llama.cpp could not create a context of %d tokens", cp.n_ctx)
		if logged != "" {
			msg += ": " + logged
		}
		return nil, fmt.Errorf("new context for %q: %w", m.Name(), &Error{Op: "llama_init_from_model", Msg: msg})
	}
	m.contexts++
	ctx := &Context{c: cc, model: m, params: p, abort: flag, hook: hook, compute: newComputeThread(),
		nCtx: int(C.llama_n_ctx(cc)), nBatch: int(C.llama_n_batch(cc)), nUBatch: int(C.llama_n_ubatch(cc))}
	setLeakCheck(ctx, "Context", func(c *Context) bool { c.mu.Lock(); defer c.mu.Unlock(); return c.c != nil })
	return ctx, nil
}

// Close frees the context. It is idempotent.
func (c *Context) Close() error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.c == nil {
		return nil
	}
	C.llama_free(c.c)
	c.c = nil
	c.compute.stop()
	c.hook.free()
	C.free(unsafe.Pointer(c.abort))
	c.abort = nil
	c.model.mu.Lock()
	c.model.contexts--
	c.model.mu.Unlock()
	return nil
}

func (c *Context) ptr() (*C.struct_llama_context, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.c == nil {
		return nil, ErrClosed
	}
	return c.c, nil
}

// Model is the model the context runs.
func (c *Context) Model() *Model { return c.model }

// Size is n_ctx, the number of token positions the KV cache holds.
func (c *Context) Size() int { return c.nCtx }

// BatchSize is n_batch, the most tokens one llama_decode takes.
func (c *Context) BatchSize() int { return c.nBatch }

// MicroBatchSize is n_ubatch: llama_decode computes a batch in micro-batches of this many tokens.
func (c *Context) MicroBatchSize() int { return c.nUBatch }

// Tokens returns the tokens of sequence 0 whose keys and values are in the cache.
func (c *Context) Tokens() []Token { return append([]Token(nil), c.past...) }

// ClearMemory empties the KV cache (all sequences).
func (c *Context) ClearMemory() error {
	cc, err := c.ptr()
	if err != nil {
		return err
	}
	C.llama_memory_clear(C.llama_get_memory(cc), C.bool(true))
	c.past = c.past[:0]
	return nil
}

// RemoveTokens drops positions [p0, p1) of sequence seq from the cache (p1 < 0: to the end).
// Recurrent models cannot drop a part of a sequence: the result is then false and nothing changes.
func (c *Context) RemoveTokens(seq, p0, p1 int) (bool, error) {
	cc, err := c.ptr()
	if err != nil {
		return false, err
	}
	ok := bool(C.llama_memory_seq_rm(C.llama_get_memory(cc), C.llama_seq_id(seq), C.llama_pos(p0), C.llama_pos(p1)))
	if ok && seq == 0 && p0 < len(c.past) {
		if p1 < 0 || p1 >= len(c.past) {
			c.past = c.past[:p0]
		} else {
			// A hole in the middle: positions no longer follow the token list; forget it.
			c.past = c.past[:0]
		}
	}
	return ok, nil
}

// StateSize is the size in bytes of sequence seq's state (its KV cache cells and, for recurrent
// models, its recurrent state): what SaveState writes, apart from the header and tokens.
func (c *Context) StateSize(seq int) (int, error) {
	cc, err := c.ptr()
	if err != nil {
		return 0, err
	}
	return int(C.llama_state_seq_get_size(cc, C.llama_seq_id(seq))), nil
}

// SaveState writes the KV state of sequence 0 and its tokens to path (SaveSequence of sequence 0).
func (c *Context) SaveState(path string) error {
	return c.SaveSequence(0, path, c.past)
}

// LoadState replaces sequence 0 with the state saved in path (by SaveState, with the same model
// and compatible cache types) and returns its tokens.
func (c *Context) LoadState(path string) ([]Token, error) {
	if _, err := c.LoadSequence(0, path); err != nil {
		return nil, err
	}
	return c.Tokens(), nil
}

// abortOn arms the abort flag for the duration of one C call: when ctx is cancelled a goroutine sets
// the flag, and llama.cpp's compute threads see it at their next check. Call the returned disarm
// after the C call returns; it waits for a flag write in flight, so the flag outlives every writer.
func (c *Context) abortOn(ctx context.Context) (disarm func()) {
	if ctx.Err() != nil {
		// Already cancelled: set the flag now rather than from a goroutine that a short decode
		// could outrun.
		C.es_flag_store(c.abort, 1)
		return func() {}
	}
	C.es_flag_store(c.abort, 0)
	if ctx.Done() == nil {
		return func() {}
	}
	flag := c.abort
	wrote := make(chan struct{})
	stopAfter := context.AfterFunc(ctx, func() {
		C.es_flag_store(flag, 1)
		close(wrote)
	})
	return func() {
		if !stopAfter() {
			<-wrote // the AfterFunc started: let it finish before the flag can be freed or re-armed
		}
	}
}

// Perf returns llama.cpp's own counters for this context.
type Perf struct {
	PromptMS, EvalMS   float64
	PromptTokens, Eval int
}

// Perf reads llama_perf_context.
func (c *Context) Perf() Perf {
	cc, err := c.ptr()
	if err != nil {
		return Perf{}
	}
	d := C.llama_perf_context(cc)
	return Perf{PromptMS: float64(d.t_p_eval_ms), EvalMS: float64(d.t_eval_ms), PromptTokens: int(d.n_p_eval), Eval: int(d.n_eval)}
}
