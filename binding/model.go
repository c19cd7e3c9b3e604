package binding

/*
#include "shim.h"
*/
import "C"

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"runtime/cgo"
	"strings"
	"sync"
	"unsafe"

	"github.com/expertsniper/expertsniper/binding/hookapi"
	"github.com/expertsniper/expertsniper/gguf"
)

// LoadMode is how llama.cpp brings the weights into memory (llama_load_mode).
type LoadMode int

// Load modes as in llama.h.
const (
	LoadAuto      LoadMode = C.LLAMA_LOAD_MODE_AUTO // mmap unless a device does not support it
	LoadRead      LoadMode = C.LLAMA_LOAD_MODE_NONE // read into allocated memory
	LoadMMap      LoadMode = C.LLAMA_LOAD_MODE_MMAP
	LoadMLock     LoadMode = C.LLAMA_LOAD_MODE_MLOCK
	LoadMMapMLock LoadMode = C.LLAMA_LOAD_MODE_MMAP_MLOCK
	LoadDirectIO  LoadMode = C.LLAMA_LOAD_MODE_DIRECT_IO
)

// KVOverride replaces one metadata value of the file at load time (llama_model_kv_override). Set
// exactly one of the value fields, chosen by Type.
type KVOverride struct {
	Key   string
	Type  KVType
	Int   int64
	Float float64
	Bool  bool
	Str   string
}

// KVType is the type of a KVOverride value.
type KVType int

// Override value types.
const (
	KVInt KVType = iota
	KVFloat
	KVBool
	KVStr
)

// ModelParams are the load options. Zero values keep llama.cpp's defaults except where a field's
// comment says otherwise; use the With* options rather than filling it by hand.
type ModelParams struct {
	GPULayers    *int // nil: llama.cpp's default (all layers on a GPU when there is one)
	LoadMode     *LoadMode
	NoExtraBufts bool // use_extra_bufts=false: no weight repacking (bit-exact comparisons need this)
	VocabOnly    bool
	CheckTensors bool
	KVOverrides  []KVOverride
	// Progress is called with the load progress in [0,1]; returning false aborts the load.
	Progress func(progress float32) bool
	// Devices and TensorSplit place offloaded layers (rpc.go: WithDevices, WithTensorSplit).
	Devices     []Device
	TensorSplit []float32
}

// ModelOption sets one load option.
type ModelOption func(*ModelParams)

// WithGPULayers sets how many layers to offload to a GPU (negative: all).
func WithGPULayers(n int) ModelOption { return func(p *ModelParams) { p.GPULayers = &n } }

// WithLoadMode chooses how the weights are loaded (mmap, read, mlock, direct I/O).
func WithLoadMode(m LoadMode) ModelOption { return func(p *ModelParams) { p.LoadMode = &m } }

// WithMMap enables or disables memory mapping (go-llama.cpp's SetMMap).
func WithMMap(on bool) ModelOption {
	return func(p *ModelParams) {
		m := LoadRead
		if on {
			m = LoadMMap
		}
		if p.LoadMode != nil && (*p.LoadMode == LoadMLock || *p.LoadMode == LoadMMapMLock) {
			m = LoadMLock
			if on {
				m = LoadMMapMLock
			}
		}
		p.LoadMode = &m
	}
}

// WithMLock keeps the weights locked in RAM (combined with the mmap choice, default mmap).
func WithMLock() ModelOption {
	return func(p *ModelParams) {
		m := LoadMMapMLock
		if p.LoadMode != nil && *p.LoadMode == LoadRead {
			m = LoadMLock
		}
		p.LoadMode = &m
	}
}

// WithExtraBufts sets use_extra_bufts. llama.cpp's default (true) repacks some weights for faster
// kernels (AMX, CPU_REPACK) and takes another numeric path; false gives the plain path that the
// sniper reproduces bit-exactly (docs/design.md §3).
func WithExtraBufts(on bool) ModelOption { return func(p *ModelParams) { p.NoExtraBufts = !on } }

// WithVocabOnly loads only the vocabulary (tokenize and templates work; contexts do not).
func WithVocabOnly() ModelOption { return func(p *ModelParams) { p.VocabOnly = true } }

// WithCheckTensors validates tensor data while loading.
func WithCheckTensors() ModelOption { return func(p *ModelParams) { p.CheckTensors = true } }

// WithKVOverride replaces a metadata value at load time.
func WithKVOverride(o KVOverride) ModelOption {
	return func(p *ModelParams) { p.KVOverrides = append(p.KVOverrides, o) }
}

// WithProgress reports load progress; returning false aborts the load.
func WithProgress(fn func(progress float32) bool) ModelOption {
	return func(p *ModelParams) { p.Progress = fn }
}

// progressState is what the C progress callback reaches through a cgo.Handle.
type progressState struct {
	ctx context.Context
	fn  func(float32) bool
}

//export goProgressTramp
func goProgressTramp(progress C.float, handle C.uintptr_t) C.bool {
	st := cgo.Handle(handle).Value().(*progressState)
	if st.ctx.Err() != nil {
		return false
	}
	if st.fn != nil && !st.fn(float32(progress)) {
		return false
	}
	return true
}

// cModelParams is llama_model_params plus the C memory it points to; free releases that memory
// once llama.cpp no longer needs it (after the load call returns).
type cModelParams struct {
	C    C.struct_llama_model_params
	free func()
}

// toC builds llama_model_params from llama.cpp's defaults, overriding only what p sets. The
// progress callback is wired to ctx (cancelling ctx aborts the load). Call free after the load
// call returns. LoadFromUser (userload.go) uses this for llama_model_init_from_user.
func (p *ModelParams) toC(ctx context.Context) (cModelParams, error) {
	cp := C.llama_model_default_params()
	var frees []func()
	free := func() {
		for i := len(frees) - 1; i >= 0; i-- {
			frees[i]()
		}
	}
	if p.GPULayers != nil {
		cp.n_gpu_layers = C.int32_t(*p.GPULayers)
	}
	if p.LoadMode != nil {
		cp.load_mode = C.enum_llama_load_mode(*p.LoadMode)
	}
	cp.use_extra_bufts = C.bool(!p.NoExtraBufts)
	cp.vocab_only = C.bool(p.VocabOnly)
	cp.check_tensors = C.bool(p.CheckTensors)

	if len(p.KVOverrides) > 0 {
		n := len(p.KVOverrides) + 1 // terminated by an entry with an empty key
		size := C.size_t(n) * C.size_t(unsafe.Sizeof(C.struct_llama_model_kv_override{}))
		arr := (*C.struct_llama_model_kv_override)(C.calloc(1, size))
		frees = append(frees, func() { C.free(unsafe.Pointer(arr)) })
		ovs := unsafe.Slice(arr, n)
		for i, o := range p.KVOverrides {
			if len(o.Key) == 0 || len(o.Key) >= 128 {
				free()
				return cModelParams{}, fmt.Errorf("binding: kv override key %q: must be 1 to 127 bytes", o.Key)
			}
			ov := &ovs[i]
			copyCString(unsafe.Pointer(&ov.key[0]), 128, o.Key)
			val := unsafe.Pointer(&ov.anon0[0])
			switch o.Type {
			case KVInt:
				ov.tag = C.LLAMA_KV_OVERRIDE_TYPE_INT
				*(*int64)(val) = o.Int
			case KVFloat:
				ov.tag = C.LLAMA_KV_OVERRIDE_TYPE_FLOAT
				*(*float64)(val) = o.Float
			case KVBool:
				ov.tag = C.LLAMA_KV_OVERRIDE_TYPE_BOOL
				*(*bool)(val) = o.Bool
			case KVStr:
				if len(o.Str) >= 128 {
					free()
					return cModelParams{}, fmt.Errorf("binding: kv override %q: string value longer than 127 bytes", o.Key)
				}
				ov.tag = C.LLAMA_KV_OVERRIDE_TYPE_STR
				copyCString(val, 128, o.Str)
			default:
				free()
				return cModelParams{}, fmt.Errorf("binding: kv override %q: unknown type %d", o.Key, o.Type)
			}
		}
		cp.kv_overrides = arr
	}

	freeDevices, err := p.setDevices(&cp)
	if err != nil {
		free()
		return cModelParams{}, err
	}
	frees = append(frees, freeDevices)

	h := cgo.NewHandle(&progressState{ctx: ctx, fn: p.Progress})
	frees = append(frees, h.Delete)
	C.es_set_progress(&cp, C.uintptr_t(h))
	return cModelParams{C: cp, free: free}, nil
}

// copyCString writes s and a terminating NUL into the C buffer dst of size n (s must be < n bytes).
func copyCString(dst unsafe.Pointer, n int, s string) {
	b := unsafe.Slice((*byte)(dst), n)
	copy(b, s)
	b[len(s)] = 0
}

// Model is a loaded GGUF model. Its methods are safe for concurrent use (llama.cpp's model and
// vocabulary are read-only after loading); Close must not race with other calls and fails while
// contexts made from the model are still open.
type Model struct {
	mu       sync.Mutex
	c        *C.struct_llama_model
	vocab    *C.struct_llama_vocab
	path     string
	contexts int      // open contexts; Close refuses while > 0
	onClose  []func() // extra resources owned with the model (e.g. the hook's gguf context)
	// user places the tensors of a model loaded by LoadFromUser (userload.go) and gives its contexts
	// their evaluation hook; nil for LoadModel's models.
	user hookapi.UserModel
}

// LoadModel loads the GGUF file at path. Cancelling ctx aborts the load (through llama.cpp's
// progress callback). The file is checked first (exists, readable, GGUF header plausible) so that
// bad input gets an error naming the problem instead of a NULL from llama.cpp.
func LoadModel(ctx context.Context, path string, opts ...ModelOption) (*Model, error) {
	p, err := checkLoad(ctx, path, opts)
	if err != nil {
		return nil, err
	}
	cp, err := p.toC(ctx)
	if err != nil {
		return nil, fmt.Errorf("load model %q: %w", path, err)
	}
	defer cp.free()
	cpath := C.CString(path)
	defer C.free(unsafe.Pointer(cpath))
	var cm *C.struct_llama_model
	logged := captureErrors(func() { cm = C.llama_model_load_from_file(cpath, cp.C) })
	if cm == nil {
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("load model %q: cancelled: %w", path, err)
		}
		msg := "llama.cpp could not load the model"
		if logged != "" {
			msg += ": " + logged
		}
		return nil, fmt.Errorf("load model %q: %w", path, &Error{Op: "llama_model_load_from_file", Msg: msg})
	}
	return newModelFromC(cm, path), nil
}

// checkLoad is what every load does before llama.cpp sees the file: the backends are loaded, ctx is
// live, the file is checked (exists, readable, GGUF header plausible) and its metadata holds no value
// llama.cpp would abort() the process on. It returns the parameters opts set.
func checkLoad(ctx context.Context, path string, opts []ModelOption) (ModelParams, error) {
	var p ModelParams
	if err := Init(); err != nil {
		return p, err
	}
	for _, o := range opts {
		o(&p)
	}
	if err := ctx.Err(); err != nil {
		return p, fmt.Errorf("load model %q: %w", path, err)
	}
	if err := checkGGUFFile(path); err != nil {
		return p, fmt.Errorf("load model %q: %w", path, err)
	}
	// llama.cpp's own reader trusts more of the file than it should on some inputs; the pure-Go
	// reader validates the whole header, metadata and tensor table first and names the problem.
	gf, err := gguf.Open(path)
	if err != nil {
		return p, fmt.Errorf("load model %q: %w", path, err)
	}
	if err := checkHParams(gf, p.KVOverrides); err != nil {
		return p, fmt.Errorf("load model %q: %w", path, err)
	}
	return p, nil
}

// newModelFromC wraps a model llama.cpp created (by llama_model_load_from_file or, for
// LoadFromUser, llama_model_init_from_user). The Model owns cm and frees it in Close.
func newModelFromC(cm *C.struct_llama_model, path string) *Model {
	m := &Model{c: cm, vocab: C.llama_model_get_vocab(cm), path: path}
	setLeakCheck(m, "Model", func(m *Model) bool { m.mu.Lock(); defer m.mu.Unlock(); return m.c != nil })
	return m
}

// addOnClose registers cleanup that runs after the model is freed (used by LoadFromUser for the gguf
// context and the user's memory, which must outlive llama_model).
func (m *Model) addOnClose(fn func()) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.onClose = append(m.onClose, fn)
}

// Close frees the model. It is idempotent, and fails while contexts made from it are open.
func (m *Model) Close() error {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.c == nil {
		return nil
	}
	if m.contexts > 0 {
		return fmt.Errorf("close model %q: %d context(s) still open; close them first", m.path, m.contexts)
	}
	C.llama_model_free(m.c)
	m.c = nil
	m.vocab = nil
	for _, fn := range m.onClose {
		fn()
	}
	m.onClose = nil
	return nil
}

// ptr returns the live C model or ErrClosed.
func (m *Model) ptr() (*C.struct_llama_model, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if m.c == nil {
		return nil, ErrClosed
	}
	return m.c, nil
}

// Path is the file the model was loaded from.
func (m *Model) Path() string { return m.path }

// Name is the file name without its directory.
func (m *Model) Name() string { return filepath.Base(m.path) }

// Meta returns the metadata string stored under key, and whether it exists.
func (m *Model) Meta(key string) (string, bool) {
	cm, err := m.ptr()
	if err != nil {
		return "", false
	}
	ckey := C.CString(key)
	defer C.free(unsafe.Pointer(ckey))
	buf := make([]byte, 256)
	for {
		n := C.llama_model_meta_val_str(cm, ckey, (*C.char)(unsafe.Pointer(&buf[0])), C.size_t(len(buf)))
		if n < 0 {
			return "", false
		}
		if int(n) < len(buf) {
			return string(buf[:n]), true
		}
		buf = make([]byte, int(n)+1)
	}
}

// MetaKeys lists every metadata key of the model.
func (m *Model) MetaKeys() []string {
	cm, err := m.ptr()
	if err != nil {
		return nil
	}
	n := int(C.llama_model_meta_count(cm))
	keys := make([]string, 0, n)
	buf := make([]byte, 512)
	for i := 0; i < n; i++ {
		r := C.llama_model_meta_key_by_index(cm, C.int32_t(i), (*C.char)(unsafe.Pointer(&buf[0])), C.size_t(len(buf)))
		if r < 0 {
			continue
		}
		if int(r) >= len(buf) {
			buf = make([]byte, int(r)+1)
			r = C.llama_model_meta_key_by_index(cm, C.int32_t(i), (*C.char)(unsafe.Pointer(&buf[0])), C.size_t(len(buf)))
		}
		keys = append(keys, string(buf[:r]))
	}
	return keys
}

// Architecture is general.architecture (e.g. "qwen3moe").
func (m *Model) Architecture() string { s, _ := m.Meta("general.architecture"); return s }

// Description is llama.cpp's one-line description (architecture, size, type).
func (m *Model) Description() string {
	cm, err := m.ptr()
	if err != nil {
		return ""
	}
	buf := make([]byte, 256)
	n := C.llama_model_desc(cm, (*C.char)(unsafe.Pointer(&buf[0])), C.size_t(len(buf)))
	if n < 0 {
		return ""
	}
	if int(n) >= len(buf) {
		n = C.int32_t(len(buf) - 1)
	}
	return string(buf[:n])
}

// ModelStats are the model's sizes and shape.
type ModelStats struct {
	Parameters   uint64 // total parameters
	SizeBytes    uint64 // bytes of all weights
	ContextTrain int    // context length the model was trained with
	Embedding    int    // n_embd
	Layers       int
	Heads        int
	HeadsKV      int
	Vocab        int
}

// Stats reports the model's shape (zero after Close).
func (m *Model) Stats() ModelStats {
	cm, err := m.ptr()
	if err != nil {
		return ModelStats{}
	}
	return ModelStats{
		Parameters:   uint64(C.llama_model_n_params(cm)),
		SizeBytes:    uint64(C.llama_model_size(cm)),
		ContextTrain: int(C.llama_model_n_ctx_train(cm)),
		Embedding:    int(C.llama_model_n_embd(cm)),
		Layers:       int(C.llama_model_n_layer(cm)),
		Heads:        int(C.llama_model_n_head(cm)),
		HeadsKV:      int(C.llama_model_n_head_kv(cm)),
		Vocab:        int(C.llama_vocab_n_tokens(C.llama_model_get_vocab(cm))),
	}
}

// ChatTemplate is the model's default chat template ("" when it has none).
func (m *Model) ChatTemplate() string {
	cm, err := m.ptr()
	if err != nil {
		return ""
	}
	t := C.llama_model_chat_template(cm, nil)
	if t == nil {
		return ""
	}
	return C.GoString(t)
}

// HasEncoder / HasDecoder / IsRecurrent describe the architecture.
func (m *Model) HasEncoder() bool {
	cm, err := m.ptr()
	return err == nil && bool(C.llama_model_has_encoder(cm))
}

// HasDecoder reports whether the model can generate.
func (m *Model) HasDecoder() bool {
	cm, err := m.ptr()
	return err == nil && bool(C.llama_model_has_decoder(cm))
}

// IsRecurrent reports a recurrent or hybrid model, whose memory cannot drop a suffix of a sequence.
func (m *Model) IsRecurrent() bool {
	cm, err := m.ptr()
	return err == nil && (bool(C.llama_model_is_recurrent(cm)) || bool(C.llama_model_is_hybrid(cm)))
}

var errNotGGUF = errors.New("not a GGUF file")

// checkGGUFFile rejects what llama.cpp would reject with a bare NULL (or worse), with a reason:
// a missing, unreadable, non-regular or empty file, a wrong magic, an unsupported version, and
// tensor or metadata counts that cannot fit in the file.
func checkGGUFFile(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	st, err := f.Stat()
	if err != nil {
		return err
	}
	if !st.Mode().IsRegular() {
		return fmt.Errorf("%w: not a regular file (%s)", errNotGGUF, st.Mode().Type())
	}
	if st.Size() == 0 {
		return fmt.Errorf("%w: the file is empty", errNotGGUF)
	}
	var hdr [24]byte
	n, _ := f.ReadAt(hdr[:], 0)
	if n < 4 || string(hdr[:4]) != "GGUF" {
		return fmt.Errorf("%w: wrong magic %q (want \"GGUF\")", errNotGGUF, hdr[:min(n, 4)])
	}
	if n < len(hdr) {
		return fmt.Errorf("%w: truncated header (%d bytes, need %d)", errNotGGUF, n, len(hdr))
	}
	le := func(b []byte) uint64 {
		var v uint64
		for i := len(b) - 1; i >= 0; i-- {
			v = v<<8 | uint64(b[i])
		}
		return v
	}
	version := le(hdr[4:8])
	if version != 2 && version != 3 {
		return fmt.Errorf("%w: unsupported GGUF version %d (llama.cpp reads 2 and 3)", errNotGGUF, version)
	}
	nTensors, nKV := le(hdr[8:16]), le(hdr[16:24])
	// Each tensor info takes at least 8 (name length) + 4 (n_dims) + 4 (type) + 8 (offset) bytes,
	// each key/value at least 8 (key length) + 4 (type) + 1 byte.
	rest := uint64(st.Size()) - 24
	if nTensors > rest/24 {
		return fmt.Errorf("%w: header claims %d tensors, more than a %d-byte file can describe", errNotGGUF, nTensors, st.Size())
	}
	if nKV > rest/13 {
		return fmt.Errorf("%w: header claims %d metadata entries, more than a %d-byte file can hold", errNotGGUF, nKV, st.Size())
	}
	return nil
}

// setLeakCheck installs a finalizer that never frees anything: it reports a handle that was garbage
// collected while still open (open must not capture obj, or obj would never be collected).
func setLeakCheck[T any](obj *T, kind string, open func(*T) bool) {
	where := creator()
	runtime.SetFinalizer(obj, func(o *T) {
		if open(o) {
			leakReport(fmt.Sprintf("binding: %s created at %s was garbage collected without Close", kind, where))
		}
	})
}

// creator is the first caller outside the binding's own (non-test) files: the code that owns the
// handle and should have closed it.
func creator() string {
	pcs := make([]uintptr, 16)
	n := runtime.Callers(3, pcs)
	frames := runtime.CallersFrames(pcs[:n])
	for {
		f, more := frames.Next()
		inBinding := strings.Contains(f.Function, "/binding.") && !strings.HasSuffix(f.File, "_test.go")
		if !inBinding || !more {
			return fmt.Sprintf("%s:%d", f.File, f.Line)
		}
	}
}
