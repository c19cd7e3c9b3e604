package stream

import (
	"bytes"
	"errors"
	"os"
	"strings"
	"testing"
	"unsafe"

	"github.com/expertsniper/expertsniper/binding/hookapi"
	"github.com/expertsniper/expertsniper/gguf"
	"github.com/expertsniper/expertsniper/modelgen/testmodels"
	"github.com/expertsniper/expertsniper/sniper"
)

// These tests drive the tensor rules the way binding.LoadFromUser does, without llama.cpp: each
// tensor is described as llama.cpp would allocate it (a Go buffer stands in for its memory). The
// bit-exact tests of a real load are binding/stream_test.go and engine/local/batch_exact_test.go.

// fakeTensor describes info as llama.cpp allocates it: contiguous, with its own zeroed memory.
func fakeTensor(info gguf.TensorInfo) *hookapi.Tensor {
	t := &hookapi.Tensor{Name: info.Name, Type: info.Type, Size: info.Bytes()}
	for d := range t.Ne {
		t.Ne[d] = 1
		if d < len(info.Dims) {
			t.Ne[d] = info.Dims[d]
		}
	}
	rowBytes := info.Bytes() / (t.Ne[1] * t.Ne[2] * t.Ne[3])
	t.Nb[0], t.Nb[1] = rowBytes/t.Ne[0], rowBytes
	t.Nb[2], t.Nb[3] = t.Nb[1]*t.Ne[1], t.Nb[1]*t.Ne[1]*t.Ne[2]
	mem := make([]byte, t.Size)
	t.Data = unsafe.Pointer(&mem[0])
	t.Alloc = func(size int64) (unsafe.Pointer, error) {
		b := make([]byte, size)
		return unsafe.Pointer(&b[0]), nil
	}
	t.ToFloat32 = func([]float32) error { return errors.New("no conversion in this test") }
	return t
}

// missingTensor is one the architecture allocates but the file lacks: an F32 vector of n values.
func missingTensor(name string, n int64) *hookapi.Tensor {
	return fakeTensor(gguf.TensorInfo{Name: name, Type: gguf.TypeF32, Dims: []int64{n}})
}

func openWeights(t *testing.T, model string, o Options) (*Weights, string) {
	t.Helper()
	path := testmodels.Path(t, model)
	w, err := Open(path, o)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(w.Close)
	return w, path
}

// floats is an F32 vector tensor's values.
func floats(t *hookapi.Tensor) []float32 {
	return unsafe.Slice((*float32)(t.Data), t.Ne[0])
}

func TestTensorsArePlacedByTheRules(t *testing.T) {
	w, path := openWeights(t, "qwen3moe-q8_0", Options{CacheBudget: 0, Prefetch: true})
	raw, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	idx := w.Sniper().Index()
	var pinned int64
	for _, info := range w.gf.Tensors {
		tt := fakeTensor(info)
		llamaMem := tt.Data
		if err := w.SetTensorData(tt); err != nil {
			t.Fatalf("%s: %v", info.Name, err)
		}
		if idx.Streams(info.Name) {
			// The sniper's slots, not llama.cpp's memory; ne[2] counts slots.
			if tt.Data == llamaMem || tt.Data == nil {
				t.Fatalf("%s: streamed tensor left at llama.cpp's memory", info.Name)
			}
			if tt.Ne[2] > 1 && (tt.Ne[2] != int64(w.sn.Slots(idx.Tensor(info.Name).Layer)) || tt.Nb[3] != tt.Nb[2]*tt.Ne[2]) {
				t.Fatalf("%s: ne[2]=%d nb[2]=%d nb[3]=%d, want %d slots", info.Name, tt.Ne[2], tt.Nb[2], tt.Nb[3], w.sn.Slots(idx.Tensor(info.Name).Layer))
			}
			continue
		}
		// Pinned: llama.cpp's memory, filled with the file's bytes.
		off := w.gf.TensorFileOffset(info)
		if tt.Data != llamaMem || !bytes.Equal(unsafe.Slice((*byte)(tt.Data), tt.Size), raw[off:off+info.Bytes()]) {
			t.Fatalf("%s: pinned tensor not read from the file", info.Name)
		}
		pinned += info.Bytes()
	}
	if err := w.Loaded(); err != nil {
		t.Fatal(err)
	}
	if got := w.Info().PinnedBytes; got != pinned || pinned == 0 {
		t.Fatalf("pinned bytes %d, want %d", got, pinned)
	}
	for l := 0; l < idx.Layers; l++ {
		if len(idx.LayerTensors(l)) > 0 && !w.RouterKnown(l) {
			t.Fatalf("router of layer %d unknown after load (prefetch on)", l)
		}
	}

	// Optional tensors the file lacks get neutral values; per-expert scales one 1 per slot.
	bias := missingTensor("blk.0.attn_q.bias", 8)
	scale := missingTensor("blk.0.attn_q.scale", 8)
	expScale := missingTensor("blk.0.ffn_down_exps.scale", int64(idx.Experts))
	for _, tt := range []*hookapi.Tensor{bias, scale, expScale} {
		for i := range floats(tt) {
			floats(tt)[i] = 7 // not what the rule writes
		}
		if err := w.SetTensorData(tt); err != nil {
			t.Fatalf("%s: %v", tt.Name, err)
		}
	}
	for _, c := range []struct {
		t    *hookapi.Tensor
		want float32
		n    int
	}{{bias, 0, 8}, {scale, 1, 8}, {expScale, 1, w.sn.Slots(0)}} {
		v := floats(c.t)
		if len(v) != c.n {
			t.Fatalf("%s: %d values, want %d", c.t.Name, len(v), c.n)
		}
		for i, x := range v {
			if x != c.want {
				t.Fatalf("%s[%d] = %v, want %v", c.t.Name, i, x, c.want)
			}
		}
	}
}

func TestTensorRulesRefuseBadTensors(t *testing.T) {
	w, path := openWeights(t, "qwen3moe-q8_0", Options{CacheBudget: 0})
	// A required tensor the file lacks is an error naming it and the file, not a tensor of zeros.
	err := w.SetTensorData(missingTensor("blk.0.attn_x.weight", 8))
	if err == nil || !strings.Contains(err.Error(), "blk.0.attn_x.weight is missing") || !strings.Contains(err.Error(), path) {
		t.Fatalf("missing required tensor: %v", err)
	}
	// A tensor whose type or size differs from the file's.
	info, _ := w.gf.Tensor("blk.0.attn_q.weight")
	tt := fakeTensor(info)
	tt.Type = gguf.TypeF16
	if err := w.SetTensorData(tt); err == nil || !strings.Contains(err.Error(), "llama.cpp expects") {
		t.Fatalf("type mismatch: %v", err)
	}
	// A per-expert scale that is not an F32 vector.
	bad := missingTensor("blk.0.ffn_up_exps.scale", 8)
	bad.Type = gguf.TypeF16
	if err := w.SetTensorData(bad); err == nil || !strings.Contains(err.Error(), "per-expert scales") {
		t.Fatalf("bad per-expert scale: %v", err)
	}
	// A load that placed none of the streamed tensors does not match the file.
	if err := w.Loaded(); err == nil || !strings.Contains(err.Error(), "streamed tensors") {
		t.Fatalf("nothing bound: %v", err)
	}
}

func TestFusedExpertsAreDeclared(t *testing.T) {
	w, _ := openWeights(t, "qwen35moe-q8_0", Options{CacheBudget: 0})
	decl := w.Declared()
	if len(decl) == 0 {
		t.Fatal("qwen35moe: no fused gate+up expert tensor declared")
	}
	for _, d := range decl {
		st := w.Sniper().Index().Tensor(d.Name)
		if st == nil || len(st.Parts) < 2 || d.Ne[2] != int64(st.Dims[2]) || uint32(d.Type) != st.Type {
			t.Fatalf("declared %+v does not describe a fused streamed tensor", d)
		}
	}
	w2, _ := openWeights(t, "qwen3moe-q8_0", Options{CacheBudget: 0})
	if d := w2.Declared(); len(d) != 0 {
		t.Fatalf("qwen3moe declares %v", d)
	}
}

func TestOpenRefusesBadInput(t *testing.T) {
	if _, err := Open("/nonexistent/model.gguf", Options{}); err == nil || !strings.Contains(err.Error(), "/nonexistent/model.gguf") {
		t.Fatalf("missing file: %v", err)
	}
	path := testmodels.Path(t, "qwen3moe-q8_0")
	if _, err := Open(path, Options{Mode: sniper.ModeDense}); err == nil || !strings.Contains(err.Error(), "no tensors to stream") {
		t.Fatalf("dense mode on a MoE model: %v", err)
	}
	if _, err := Open(path, Options{Policy: "nope"}); err == nil || !strings.Contains(err.Error(), "nope") {
		t.Fatalf("unknown policy: %v", err)
	}
}
