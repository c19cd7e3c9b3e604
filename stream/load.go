// Package stream wires the sniper to binding's generic hooks: it is the hookapi.UserModel whose
// tensors the sniper places (which tensors stream, per-slot expert scales, neutral fills of optional
// tensors) and the per-context evaluation hook that makes the router's chosen experts (or a dense
// layer's FFN) resident just before they are used, with the next layer's experts read ahead.
// docs/design.md §3 lists the llama.cpp facts this rests on; all of it works on unpatched llama.cpp
// b11669. Pure Go: binding's C only filters graph nodes and forwards.
//
// Loading a streamed model is two calls, and the *Weights stays valid while the model is open:
//
//	w, err := stream.Open(path, stream.Options{CacheBudget: budget})
//	m, err := binding.LoadFromUser(ctx, path, w) // m owns w from here on, failure included
package stream

import (
	"errors"
	"fmt"
	"io"
	"os"
	"regexp"
	"runtime/debug"
	"strconv"
	"strings"
	"unsafe"

	"github.com/expertsniper/expertsniper/binding/hookapi"
	"github.com/expertsniper/expertsniper/gguf"
	"github.com/expertsniper/expertsniper/sniper"
)

// Options configure a streamed load.
type Options struct {
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
	// layer computes (see prefetch.go); in dense mode, the next layer's FFN (sniper.Options.
	// ReadAhead). Results are identical either way.
	Prefetch bool
	// PredictInline makes the prefetcher predict in the graph callback rather than in the
	// background, so that every prediction is scored (recall measured on every layer); for tests.
	PredictInline bool
	// Policy names the cache's eviction policy (sniper.NewPolicy: "lru", "lfu", "fixed"; "" is the
	// mode's default, sniper.PolicyFor).
	Policy string
	// Contexts is how many contexts may decode at once (0: 1): with a small cache each may need
	// overflow slots for a layer's working set (sniper.Options.Contexts).
	Contexts int
	// NoRepack keeps every weight in the file's layout (llama.cpp's use_extra_bufts=false); by default
	// weights go into the repacked layouts llama.cpp's default load gives them (repack.go).
	NoRepack bool
}

// Weights are a model's streamed weights: the sniper, and the rules that place every tensor
// llama.cpp allocates. It implements hookapi.UserModel; the binding.Model it is loaded into owns it.
type Weights struct {
	path   string
	gf     *gguf.File
	byName map[string]gguf.TensorInfo
	sn     *sniper.Sniper
	mode   sniper.Mode
	// f reads the pinned tensors at load (closed when the load ends).
	f      *os.File
	pinned int64 // bytes of the tensors read at load (everything not streamed)
	// routers are the layers' router matrices for prefetching (nil: prefetch off).
	routers       *sniper.Routers
	predictInline bool
	// repack puts weights in llama.cpp's repacked layouts; repacked counts them. scratch holds the
	// file's bytes of the pinned weight being converted (reused, dropped when the load ends).
	repack   bool
	repacked int
	scratch  []byte
}

var _ hookapi.UserModel = (*Weights)(nil)

// Info describes how a model is streamed.
type Info struct {
	Mode sniper.Mode
	// PinnedBytes are the weights held in memory all the time (attention, embeddings, norms, router,
	// shared experts); StreamedBytes those the sniper reads on demand.
	PinnedBytes   int64
	StreamedBytes int64
	Layers        int
	Experts       int
	// RepackedTensors counts the weights in llama.cpp's repacked CPU layouts (repack.go).
	RepackedTensors int
}

// Open indexes the model at path and opens its sniper, ready for binding.LoadFromUser. On error
// nothing is left open.
func Open(path string, o Options) (_ *Weights, err error) {
	gf, err := gguf.Open(path)
	if err != nil {
		return nil, fmt.Errorf("stream model %q: %w", path, err)
	}
	mode := o.Mode
	if mode == 0 {
		mode = sniper.ModeDense
		if sniper.IsMoE(gf) {
			mode = sniper.ModeExperts
		}
	}
	idx, err := sniper.IndexGGUF(path, gf, mode)
	if err != nil {
		return nil, fmt.Errorf("stream model %q: %w", path, err)
	}
	pol, err := sniper.PolicyFor(mode, o.Policy)
	if err != nil {
		return nil, fmt.Errorf("stream model %q: %w", path, err)
	}
	sn, err := sniper.Open(idx, sniper.Options{FS: o.FS, Readers: o.Readers, CacheBudget: o.CacheBudget, NoRecycle: o.NoRecycle, Policy: pol, Contexts: o.Contexts,
		ReadAhead: o.Prefetch})
	if err != nil {
		return nil, fmt.Errorf("stream model %q: %w", path, err)
	}
	f, err := sniper.OpenUncached(path)
	if err != nil {
		sn.Close()
		return nil, fmt.Errorf("stream model %q: %w", path, err)
	}
	w := &Weights{path: path, gf: gf, sn: sn, mode: mode, f: f, byName: make(map[string]gguf.TensorInfo, len(gf.Tensors)), repack: !o.NoRepack}
	for _, t := range gf.Tensors {
		w.byName[t.Name] = t
	}
	if o.Prefetch && mode == sniper.ModeExperts {
		// Filled as the routers load, so that a prompt's first micro-batch is read ahead too (the
		// hook would otherwise learn layer N+1's router only when layer N+1 first runs).
		w.routers = sniper.NewRouters(idx.Layers)
		w.predictInline = o.PredictInline
	}
	return w, nil
}

// Sniper is the streaming engine.
func (w *Weights) Sniper() *sniper.Sniper { return w.sn }

// Info reports how the model is streamed.
func (w *Weights) Info() Info {
	idx := w.sn.Index()
	return Info{Mode: w.mode, PinnedBytes: w.pinned, StreamedBytes: idx.StreamedBytes(), Layers: idx.Layers, Experts: idx.Experts,
		RepackedTensors: w.repacked}
}

// Declared declares qwen35moe's fused gate+up experts, which the graph wants and the sniper serves
// from the file's separate gate and up tensors.
func (w *Weights) Declared() []hookapi.TensorDecl {
	var decl []hookapi.TensorDecl
	for _, t := range w.sn.Index().Tensors() {
		if len(t.Parts) > 1 {
			decl = append(decl, hookapi.TensorDecl{Name: t.Name, Type: gguf.Type(t.Type), Ne: [3]int64{int64(t.Dims[0]), int64(t.Dims[1]), int64(t.Dims[2])}})
		}
	}
	return decl
}

// Loaded checks that llama.cpp allocated every streamed tensor, and closes the file the pinned
// tensors were read from.
func (w *Weights) Loaded() error {
	w.closeFile()
	if w.scratch != nil {
		// Up to the largest pinned weight's bytes: give them back now, not when the Go runtime
		// would (the expert cache is about to fill the memory budget).
		w.scratch = nil
		debug.FreeOSMemory()
	}
	if n, want := w.sn.Bound(), countBindable(w.sn.Index()); n != want {
		return fmt.Errorf("llama.cpp allocated %d of the %d streamed tensors; this architecture's graph does not match the file", n, want)
	}
	return nil
}

// DropPageCache drops what is left of the model file in the page cache once the model is loaded:
// the header that llama.cpp and our own parsers read buffered would otherwise stay charged to the
// run beside its budget. Nothing streams through the page cache, and pages other processes map stay.
func (w *Weights) DropPageCache() { sniper.DropCache(w.f, 0, 0) }

// Close closes the sniper (after llama.cpp freed the model: streamed tensors point into it).
func (w *Weights) Close() {
	w.closeFile()
	w.sn.Close()
}

func (w *Weights) closeFile() {
	if w.f != nil {
		w.f.Close()
		w.f = nil
	}
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

// routerRE matches a layer's router (gating) weight.
var routerRE = regexp.MustCompile(`^blk\.(\d+)\.ffn_gate_inp\.weight$`)

// SetTensorData places one tensor: a streamed one at the sniper's memory, a per-expert scale at
// slot-indexed memory, a tensor of the file read from it, an optional one the file lacks filled
// neutrally.
func (w *Weights) SetTensorData(t *hookapi.Tensor) error {
	name := t.Name
	if w.sn.Index().Streams(name) {
		var convs []sniper.Convert
		if w.repack {
			t.Layout, convs = streamedConversions(t, w.sn.Index().Tensor(name))
		}
		b, err := w.sn.BindConverted(name, t.Nb[2], t.Size, convs)
		if err != nil {
			return err
		}
		if convs != nil {
			w.repacked++
		}
		t.Data = b.Data
		if t.Ne[2] > 1 {
			// Sniper mode: llama.cpp sees the expert slots, not the experts (sniper/slots.go).
			t.Ne[2] = int64(b.Experts)
			t.Nb[2] = b.Stride
			t.Nb[3] = b.Stride * int64(b.Experts)
		}
		return nil
	}
	if m := expertScaleRE.FindStringSubmatch(name); m != nil {
		if layer, _ := strconv.Atoi(m[1]); w.sn.Slots(layer) > 0 {
			return w.slotScales(t, w.sn.Slots(layer))
		}
	}
	if t.Data == nil {
		return fmt.Errorf("tensor %s: llama.cpp gave it no memory", name)
	}
	dst := unsafe.Slice((*byte)(t.Data), t.Size)
	info, ok := w.byName[name]
	if !ok {
		if !optionalTensor(name) {
			// llama_model_load_from_file refuses such a file ("tensor ... not found"); init_from_user
			// does not know which tensors are required, so the check is ours.
			return fmt.Errorf("tensor %s is missing from %q (the %s architecture needs it)", name, w.path, w.gf.Architecture())
		}
		neutralFill(name, t.Type, dst)
		return nil
	}
	if info.Bytes() != t.Size || info.Type != t.Type {
		return fmt.Errorf("tensor %s: the file has %d bytes of type %s, llama.cpp expects %d bytes of type %s", name, info.Bytes(), info.Type, t.Size, t.Type)
	}
	off := w.gf.TensorFileOffset(info)
	n, err := w.f.ReadAt(dst, off)
	if err != nil && !(errors.Is(err, io.EOF) && int64(n) == t.Size) {
		if errors.Is(err, io.EOF) {
			err = io.ErrUnexpectedEOF
		}
		return fmt.Errorf("read tensor %s from %q at offset %d (%d bytes): %w", name, w.path, off, t.Size, err)
	}
	// The pinned weights live in llama.cpp's buffer: their page cache would count twice.
	sniper.DropCache(w.f, off, t.Size)
	w.pinned += t.Size
	if m := routerRE.FindStringSubmatch(name); m != nil && w.routers != nil {
		if layer, _ := strconv.Atoi(m[1]); layer < w.sn.Index().Layers {
			_ = w.setRouter(layer, t) // without it, the layer is simply not predicted
		}
	}
	if w.repack {
		if l := pinnedLayout(t); l != nil {
			// Converted in place from a copy of the file's bytes (after the router's were read).
			if cap(w.scratch) < len(dst) {
				w.scratch = make([]byte, len(dst))
			}
			src := w.scratch[:len(dst)]
			copy(src, dst)
			if err := l.Convert(dst, src); err != nil {
				return fmt.Errorf("tensor %s: %w", name, err)
			}
			t.Layout = l
			w.repacked++
		}
	}
	return nil
}

// expertScaleRE matches the optional per-expert scales llama.cpp gathers with the router's choices.
var expertScaleRE = regexp.MustCompile(`^blk\.(\d+)\.ffn_[a-z_]+_exps\.scale$`)

// slotScales gives a per-expert scale tensor one value per slot: in sniper mode the router's choices
// are rewritten to slots before llama.cpp gathers these (sniper/slots.go). Files without such scales
// get llama.cpp's neutral 1 everywhere; a file with real per-expert scales is refused, as its values
// would have to follow the experts from slot to slot.
func (w *Weights) slotScales(t *hookapi.Tensor, slots int) error {
	if _, inFile := w.byName[t.Name]; inFile {
		return fmt.Errorf("tensor %s: per-expert scales are not supported when streaming experts (run the model in RAM)", t.Name)
	}
	if t.Type != gguf.TypeF32 || t.Ne[1] != 1 || t.Ne[2] != 1 || t.Ne[3] != 1 {
		return fmt.Errorf("tensor %s: expected a vector of F32 per-expert scales, got type %s shape %v", t.Name, t.Type, t.Ne)
	}
	mem, err := t.Alloc(int64(4 * slots))
	if err != nil {
		return fmt.Errorf("tensor %s: %d slot scales: %w", t.Name, slots, err)
	}
	for i, v := 0, unsafe.Slice((*float32)(mem), slots); i < slots; i++ {
		v[i] = 1
	}
	t.Data = mem
	t.Ne[0] = int64(slots)
	for d := 1; d < 4; d++ {
		t.Nb[d] = int64(4 * slots)
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
func neutralFill(name string, typ gguf.Type, dst []byte) {
	if typ != gguf.TypeF32 || len(dst) < 4 {
		clear(dst) // not F32: only zero is meaningful
		return
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
}
