package binding

// The sniper hook: load a model with llama_model_init_from_user so that the streamed tensors' data
// points at memory the sniper owns, and watch the graph so that the sniper makes the router's chosen
// experts (or a dense layer's FFN) resident just before they are used. docs/design.md §3 lists the facts
// this rests on; all of it works on unpatched llama.cpp b11669.

/*
#include "hook.h"
#include "bigalloc.h"
*/
import "C"

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"runtime/cgo"
	"strconv"
	"strings"
	"unsafe"

	"github.com/expertsniper/expertsniper/gguf"
	"github.com/expertsniper/expertsniper/sniper"
)

// StreamOptions configure a streamed load.
type StreamOptions struct {
	// Mode is sniper.ModeExperts (MoE: stream the routed experts) or sniper.ModeDense (stream each
	// layer's FFN); 0 picks by the file: experts if it has any, else dense.
	Mode sniper.Mode
	// CacheBudget is the bytes of experts kept beyond the layer being computed (sniper.Unlimited
	// keeps all; 0 rereads every expert every time).
	CacheBudget int64
	// Readers is the number of parallel reads (0: sniper.DefaultReaders).
	Readers int
	// FS opens the model file for streaming (nil: direct I/O). Tests inject faults here.
	FS sniper.FS
	// NoRecycle releases evicted experts' memory instead of moving it under the next expert read
	// (sniper.Options.NoRecycle); for measurements.
	NoRecycle bool
	// Prefetch reads the experts the next layer's router is predicted to choose while the current
	// layer computes (see stream_prefetch.go). Results are identical either way.
	Prefetch bool
	// PredictInline makes the prefetcher predict in the graph callback rather than in the
	// background, so that every prediction is scored (recall measured on every layer); for tests.
	PredictInline bool
	// Policy names the cache's eviction policy (sniper.NewPolicy: "lru", "lfu"; "" is
	// sniper.DefaultPolicy).
	Policy string
	// Contexts is how many contexts may decode at once (0: 1): with a small cache each may need
	// overflow slots for a layer's working set (sniper.Options.Contexts).
	Contexts int
}

// streamState is what a streamed Model owns besides llama_model: the sniper and the gguf context.
type streamState struct {
	sn     *sniper.Sniper
	gguf   *C.struct_gguf_context
	mode   sniper.Mode
	pinned int64 // bytes of the tensors read at load (everything not streamed)
	// routers are the layers' router matrices for prefetching (nil: prefetch off).
	routers       *sniper.Routers
	predictInline bool
}

// StreamInfo describes how a model is streamed.
type StreamInfo struct {
	Mode sniper.Mode
	// PinnedBytes are the weights held in memory all the time (attention, embeddings, norms, router,
	// shared experts); StreamedBytes those the sniper reads on demand.
	PinnedBytes   int64
	StreamedBytes int64
	Layers        int
	Experts       int
}

// Sniper returns the streaming engine of a model loaded with LoadStreamed (nil for in-RAM models).
func (m *Model) Sniper() *sniper.Sniper {
	if m.stream == nil {
		return nil
	}
	return m.stream.sn
}

// StreamInfo reports how the model is streamed; ok is false for a model held in RAM.
func (m *Model) StreamInfo() (StreamInfo, bool) {
	if m.stream == nil {
		return StreamInfo{}, false
	}
	idx := m.stream.sn.Index()
	return StreamInfo{Mode: m.stream.mode, PinnedBytes: m.stream.pinned, StreamedBytes: idx.StreamedBytes(),
		Layers: idx.Layers, Experts: idx.Experts}, true
}

// LoadStreamed loads path with its experts (or dense FFNs) streamed from disk by the sniper. The
// other weights are read into memory at load; use_extra_bufts is forced off (the sniper's tensors
// must be plain CPU tensors, and that path is the bit-exact reference). Close the Model to release
// everything, sniper included.
func LoadStreamed(ctx context.Context, path string, so StreamOptions, opts ...ModelOption) (_ *Model, err error) {
	if err := Init(); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("load model %q: %w", path, err)
	}
	if err := checkGGUFFile(path); err != nil {
		return nil, fmt.Errorf("load model %q: %w", path, err)
	}
	gf, err := gguf.Open(path)
	if err != nil {
		return nil, fmt.Errorf("load model %q: %w", path, err)
	}
	var p ModelParams
	for _, o := range opts {
		o(&p)
	}
	// The metadata checks LoadModel makes: llama.cpp abort()s the process on some of these values.
	if err := checkHParams(gf, p.KVOverrides); err != nil {
		return nil, fmt.Errorf("load model %q: %w", path, err)
	}
	mode := so.Mode
	if mode == 0 {
		mode = sniper.ModeDense
		if sniper.IsMoE(gf) {
			mode = sniper.ModeExperts
		}
	}
	idx, err := sniper.IndexGGUF(path, gf, mode)
	if err != nil {
		return nil, fmt.Errorf("load model %q: %w", path, err)
	}
	pol, err := sniper.NewPolicy(so.Policy)
	if err != nil {
		return nil, fmt.Errorf("load model %q: %w", path, err)
	}
	sn, err := sniper.Open(idx, sniper.Options{FS: so.FS, Readers: so.Readers, CacheBudget: so.CacheBudget, NoRecycle: so.NoRecycle, Policy: pol, Contexts: so.Contexts})
	if err != nil {
		return nil, fmt.Errorf("load model %q: %w", path, err)
	}
	defer func() {
		if err != nil {
			sn.Close()
		}
	}()

	cpath := C.CString(path)
	defer C.free(unsafe.Pointer(cpath))
	var g *C.struct_gguf_context
	logged := captureErrors(func() { g = C.es_gguf_open(cpath) })
	if g == nil {
		return nil, fmt.Errorf("load model %q: %w", path, &Error{Op: "gguf_init_from_file", Msg: "ggml could not read the GGUF header: " + logged})
	}
	defer func() {
		if err != nil {
			C.gguf_free(g)
		}
	}()
	// qwen35moe's graph wants fused gate+up experts: declare the tensor; the sniper serves it.
	for _, t := range idx.Tensors() {
		if t.Parts != nil && len(t.Parts) > 1 {
			cname := C.CString(t.Name)
			rc := C.es_gguf_declare(g, cname, C.int(t.Type), C.int64_t(t.Dims[0]), C.int64_t(t.Dims[1]), C.int64_t(t.Dims[2]))
			C.free(unsafe.Pointer(cname))
			if rc != 0 {
				return nil, fmt.Errorf("load model %q: declare %s: out of memory", path, t.Name)
			}
		}
	}

	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("load model %q: %w", path, err)
	}
	defer f.Close()
	ld := &tensorLoader{path: path, f: f, gf: gf, sn: sn, byName: make(map[string]gguf.TensorInfo, len(gf.Tensors))}
	for _, t := range gf.Tensors {
		ld.byName[t.Name] = t
	}
	defer func() {
		if err != nil { // no model holds them
			for _, p := range ld.owned {
				C.free(p)
			}
		}
	}()
	handle := cgo.NewHandle(ld)
	defer handle.Delete()

	p.NoExtraBufts = true
	cp, err := p.toC(ctx)
	if err != nil {
		return nil, fmt.Errorf("load model %q: %w", path, err)
	}
	defer cp.free()
	var cm *C.struct_llama_model
	logged = captureErrors(func() {
		C.es_big_alloc_arm(1)
		cm = C.es_init_from_user(g, C.uintptr_t(handle), cp.C)
		C.es_big_alloc_arm(0)
	})
	if cm != nil && ld.err != nil {
		C.llama_model_free(cm)
		cm = nil
	}
	if cm == nil {
		if ld.err != nil {
			return nil, fmt.Errorf("load model %q: %w", path, ld.err)
		}
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("load model %q: cancelled: %w", path, err)
		}
		msg := "llama.cpp could not create the model"
		if logged != "" {
			msg += ": " + logged
		}
		return nil, fmt.Errorf("load model %q: %w", path, &Error{Op: "llama_model_init_from_user", Msg: msg})
	}
	if n, want := sn.Bound(), countBindable(idx); n != want {
		C.llama_model_free(cm)
		return nil, fmt.Errorf("load model %q: llama.cpp allocated %d of the %d streamed tensors; this architecture's graph does not match the file", path, n, want)
	}
	m := newModelFromC(cm, path)
	st := &streamState{sn: sn, gguf: g, mode: mode, pinned: ld.pinned}
	if so.Prefetch && mode == sniper.ModeExperts {
		st.routers = sniper.NewRouters(idx.Layers)
		st.predictInline = so.PredictInline
		// Known before the first graph runs, so that a prompt's first micro-batch is read ahead too
		// (the hook would otherwise learn layer N+1's router only when layer N+1 first runs).
		for _, r := range ld.routers {
			if r.layer < idx.Layers {
				_ = setRouter(st.routers, r.layer, r.data, r.typ, r.ne0, r.ne1, r.nb1)
			}
		}
	}
	m.stream = st
	owned := ld.owned
	m.addOnClose(func() {
		C.gguf_free(st.gguf)
		st.gguf = nil
		st.sn.Close()
		for _, p := range owned {
			C.free(p)
		}
	})
	return m, nil
}

// countBindable is how many streamed tensors llama.cpp should allocate: all of them except the
// separate gate/up sources of a fused tensor.
func countBindable(idx *sniper.Index) int {
	n := 0
	for _, t := range idx.Tensors() {
		if t.FusedInto == "" {
			n++
		}
	}
	return n
}

// tensorLoader fills each tensor llama.cpp allocates (set_tensor_data runs synchronously, once per
// tensor, on the loading thread). The first error stops further work and fails the load.
type tensorLoader struct {
	path   string
	f      *os.File
	gf     *gguf.File
	sn     *sniper.Sniper
	byName map[string]gguf.TensorInfo
	pinned int64
	err    error
	// owned is C memory the loader gave tensors (slot-indexed expert scales), freed with the model.
	owned []unsafe.Pointer
	// routers are the layers' router weights as loaded (for the prefetcher).
	routers []routerTensor
}

// routerTensor is one layer's router weight in the model's pinned memory.
type routerTensor struct {
	layer         int
	data          unsafe.Pointer
	typ           C.int
	ne0, ne1, nb1 C.int64_t
}

// routerRE matches a layer's router (gating) weight.
var routerRE = regexp.MustCompile(`^blk\.(\d+)\.ffn_gate_inp\.weight$`)

//export goSetTensorData
func goSetTensorData(handle C.uintptr_t, t *C.struct_ggml_tensor) {
	ld := cgo.Handle(handle).Value().(*tensorLoader)
	if ld.err != nil {
		return
	}
	defer func() { // a panic must never unwind through llama.cpp's frames
		if r := recover(); r != nil {
			ld.err = fmt.Errorf("load tensor: internal error: %v", r)
		}
	}()
	if err := ld.fill(t); err != nil {
		ld.err = err
	}
}

func (ld *tensorLoader) fill(t *C.struct_ggml_tensor) error {
	name := C.GoString(&t.name[0])
	size := int64(C.ggml_nbytes(t))
	if ld.sn.Index().Streams(name) {
		b, err := ld.sn.Bind(name, int64(t.nb[2]), size)
		if err != nil {
			return err
		}
		if t.data != nil {
			C.es_big_alloc_untouched(t.data, C.size_t(size)) // llama.cpp's place for it stays unused
		}
		t.data = b.Data
		if t.ne[2] > 1 {
			// Sniper mode: llama.cpp sees the expert slots, not the experts (sniper/slots.go).
			t.ne[2] = C.int64_t(b.Experts)
			t.nb[2] = C.size_t(b.Stride)
			t.nb[3] = C.size_t(b.Stride) * C.size_t(b.Experts)
		}
		return nil
	}
	if m := expertScaleRE.FindStringSubmatch(name); m != nil {
		if layer, _ := strconv.Atoi(m[1]); ld.sn.Slots(layer) > 0 {
			return ld.slotScales(name, t, ld.sn.Slots(layer))
		}
	}
	if t.data == nil {
		return fmt.Errorf("tensor %s: llama.cpp gave it no memory", name)
	}
	dst := unsafe.Slice((*byte)(t.data), size)
	info, ok := ld.byName[name]
	if !ok {
		if !optionalTensor(name) {
			// llama_model_load_from_file refuses such a file ("tensor ... not found"); init_from_user
			// does not know which tensors are required, so the check is ours.
			return fmt.Errorf("tensor %s is missing from %q (the %s architecture needs it)", name, ld.path, ld.gf.Architecture())
		}
		return neutralFill(name, t, dst)
	}
	if info.Bytes() != size || uint32(info.Type) != uint32(t._type) {
		return fmt.Errorf("tensor %s: the file has %d bytes of type %s, llama.cpp expects %d bytes of type %s", name, info.Bytes(), info.Type, size, gguf.Type(t._type))
	}
	off := ld.gf.TensorFileOffset(info)
	n, err := ld.f.ReadAt(dst, off)
	if err != nil && !(errors.Is(err, io.EOF) && int64(n) == size) {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return fmt.Errorf("read tensor %s from %q at offset %d (%d bytes): %w", name, ld.path, off, size, err)
	}
	ld.pinned += size
	if m := routerRE.FindStringSubmatch(name); m != nil {
		layer, _ := strconv.Atoi(m[1])
		ld.routers = append(ld.routers, routerTensor{layer: layer, data: t.data, typ: C.int(t._type),
			ne0: C.int64_t(t.ne[0]), ne1: C.int64_t(t.ne[1]), nb1: C.int64_t(t.nb[1])})
	}
	return nil
}

// expertScaleRE matches the optional per-expert scales llama.cpp gathers with the router's choices.
var expertScaleRE = regexp.MustCompile(`^blk\.(\d+)\.ffn_[a-z_]+_exps\.scale$`)

// slotScales gives a per-expert scale tensor one value per slot: in sniper mode the router's choices
// are rewritten to slots before llama.cpp gathers these (sniper/slots.go). Files without such scales
// get llama.cpp's neutral 1 everywhere; a file with real per-expert scales is refused, as its values
// would have to follow the experts from slot to slot.
func (ld *tensorLoader) slotScales(name string, t *C.struct_ggml_tensor, slots int) error {
	if _, inFile := ld.byName[name]; inFile {
		return fmt.Errorf("tensor %s: per-expert scales are not supported when streaming experts (run the model in RAM)", name)
	}
	if t._type != C.GGML_TYPE_F32 || t.ne[1] != 1 || t.ne[2] != 1 || t.ne[3] != 1 {
		return fmt.Errorf("tensor %s: expected a vector of F32 per-expert scales, got type %d shape [%d,%d,%d,%d]",
			name, t._type, t.ne[0], t.ne[1], t.ne[2], t.ne[3])
	}
	mem := C.calloc(C.size_t(slots), 4)
	if mem == nil {
		return fmt.Errorf("tensor %s: out of memory for %d slot scales", name, slots)
	}
	ld.owned = append(ld.owned, mem)
	for i, v := 0, unsafe.Slice((*float32)(mem), slots); i < slots; i++ {
		v[i] = 1
	}
	t.data = mem
	t.ne[0] = C.int64_t(slots)
	for d := 1; d < 4; d++ {
		t.nb[d] = C.size_t(4 * slots)
	}
	return nil
}

// optionalTensor reports whether a tensor llama.cpp allocates may be absent from the file: the
// optional tensors init_from_user creates for every architecture (docs/design.md §3: biases, scales) and
// classifier heads of graphs this project does not run. Anything else missing is a broken file.
func optionalTensor(name string) bool {
	return strings.HasSuffix(name, ".bias") || strings.Contains(name, "scale") || strings.HasPrefix(name, "cls.")
}

// neutralFill initializes an optional tensor the architecture knows but the file lacks, so that it
// has no effect: biases 0, scales 1 (docs/design.md §3), anything else 0.
func neutralFill(name string, t *C.struct_ggml_tensor, dst []byte) error {
	if t._type != C.GGML_TYPE_F32 {
		clear(dst) // not F32: only zero is meaningful
		return nil
	}
	vals := unsafe.Slice((*float32)(unsafe.Pointer(&dst[0])), len(dst)/4)
	var v float32
	switch {
	case strings.HasSuffix(name, ".bias"):
		v = 0
	case strings.Contains(name, "scale"):
		v = 1
	default:
		// Other optional tensors (e.g. qwen3's cls.output.weight, a reranker head) are only used by
		// graphs this project does not run; zero keeps them inert. The bit-exact tests would show it
		// if a graph we run used one.
		v = 0
	}
	for i := range vals {
		vals[i] = v
	}
	return nil
}

// bigAllocations counts llama.cpp allocations the hook served with unreserved memory (Linux).
func bigAllocations() int { return int(C.es_big_alloc_count()) }
