package binding

import (
	"context"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/expertsniper/expertsniper/gguf"
	"github.com/expertsniper/expertsniper/modelgen"
	"github.com/expertsniper/expertsniper/modelgen/testmodels"
)

// TestGGUFReaderAgreesWithGGML compares the pure-Go reader with ggml's gguf_init_from_file on every
// generated test model: header, metadata keys, and each tensor's name, type, shape and offset.
// EXPERTSNIPER_ORACLE_MODELS (paths separated by commas) adds more files, e.g. real downloads or
// the big benchmark models.
func TestGGUFReaderAgreesWithGGML(t *testing.T) {
	for _, name := range testmodels.Names() {
		t.Run(name, func(t *testing.T) {
			got := compareWithGGML(t, testmodels.Path(t, name))
			types := map[gguf.Type]int{}
			for _, ti := range got.Tensors {
				types[ti.Type]++
			}
			// The K-quant models really hold K-quant tensors (rows are whole super-blocks).
			if _, typ, _ := testmodels.Parse(name); typ == "q4_k_m" && (types[gguf.TypeQ4_K] == 0 || types[gguf.TypeQ6_K] == 0) {
				t.Errorf("%s has no Q4_K or no Q6_K tensors: %v", name, types)
			}
			if arch, _, _ := testmodels.Parse(name); got.Architecture() != arch {
				t.Errorf("architecture %q, want %q", got.Architecture(), arch)
			}
		})
	}
	for _, path := range strings.Split(os.Getenv("EXPERTSNIPER_ORACLE_MODELS"), ",") {
		if path = strings.TrimSpace(path); path != "" {
			t.Run(filepath.Base(path), func(t *testing.T) {
				f := compareWithGGML(t, path)
				t.Logf("%s: %s, %d tensors, data at %d", path, f.Architecture(), len(f.Tensors), f.DataOffset)
			})
		}
	}
}

func compareWithGGML(t *testing.T, path string) *gguf.File {
	t.Helper()
	want, err := ReadGGUFWithGGML(path)
	if err != nil {
		t.Fatal(err)
	}
	got, err := gguf.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	if got.Version != want.Version || got.Alignment != want.Alignment || got.DataOffset != want.DataOffset {
		t.Fatalf("header: Go version %d alignment %d data offset %d; ggml %d %d %d",
			got.Version, got.Alignment, got.DataOffset, want.Version, want.Alignment, want.DataOffset)
	}
	var keys []string
	for _, kv := range got.KVs {
		keys = append(keys, kv.Key)
	}
	if !slices.Equal(keys, want.Keys) {
		t.Fatalf("metadata keys differ:\nGo   %v\nggml %v", keys, want.Keys)
	}
	if len(got.Tensors) != len(want.Tensors) || len(got.Tensors) == 0 {
		t.Fatalf("Go reads %d tensors, ggml %d", len(got.Tensors), len(want.Tensors))
	}
	for i, g := range got.Tensors {
		w := want.Tensors[i]
		dims := [4]int64{1, 1, 1, 1}
		copy(dims[:], g.Dims)
		if g.Name != w.Name || uint32(g.Type) != w.Type || dims != w.Dims || g.Offset != w.Offset {
			t.Fatalf("tensor %d: Go %s %s %v @%d; ggml %s type %d %v @%d",
				i, g.Name, g.Type, g.Dims, g.Offset, w.Name, w.Type, w.Dims, w.Offset)
		}
		if g.Offset+g.Bytes() > got.FileSize-got.DataOffset {
			t.Fatalf("tensor %s ends past the file", g.Name)
		}
	}
	return got
}

// TestGeneratedModelsLoadAndGenerate loads every test model in llama.cpp and decodes a few tokens
// greedily; the chat template must apply and the output must not be empty.
func TestGeneratedModelsLoadAndGenerate(t *testing.T) {
	for _, name := range testmodels.Names() {
		t.Run(name, func(t *testing.T) {
			path := testmodels.Path(t, name)
			m, err := LoadModel(context.Background(), path, WithExtraBufts(false))
			if err != nil {
				t.Fatalf("load %s: %v", name, err)
			}
			defer m.Close()
			if m.ChatTemplate() == "" {
				t.Errorf("no chat template")
			}
			toks, err := m.Tokenize("<|im_start|>user\nThe capital of France<|im_end|>", false, true)
			if err != nil || len(toks) < 4 || len(toks) > 12 {
				t.Fatalf("tokenize: %v %v (merges should make this a handful of tokens)", toks, err)
			}
			c, err := m.NewContext(WithContextSize(128), WithThreads(2, 2))
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			r, err := c.Generate(context.Background(), "The capital of France is", WithMaxTokens(4))
			if err != nil {
				t.Fatalf("generate: %v", err)
			}
			if len(r.Tokens) == 0 {
				t.Fatalf("generated nothing: %+v", r)
			}
		})
	}
}

// TestGoQuantizersMatchGGML checks modelgen's F16, Q8_0 and Q4_0 encoders byte for byte against
// ggml_quantize_chunk, including zeros, ties, subnormals and large values.
func TestGoQuantizersMatchGGML(t *testing.T) {
	rng := rand.New(rand.NewPCG(7, 11))
	const perRow = 256
	var x []float32
	for i := 0; i < 64*perRow; i++ {
		switch block := i / 32; block % 8 {
		case 0:
			x = append(x, 0) // an all-zero block
		case 1:
			x = append(x, float32(rng.NormFloat64()*1e-6)) // fp16 subnormal scales
		case 2:
			x = append(x, float32(int(rng.IntN(17))-8)) // exact halves and ties after scaling
		case 3:
			x = append(x, float32(rng.NormFloat64()*3e4))
		default:
			x = append(x, float32(rng.NormFloat64()*0.05))
		}
	}
	x[100] = float32(math.Inf(1)) // ggml's F16 conversion handles Inf; only F16 is checked with it
	for _, typ := range []gguf.Type{gguf.TypeF16, gguf.TypeQ8_0, gguf.TypeQ4_0} {
		in := x
		if typ != gguf.TypeF16 {
			in = slices.Clone(x)
			in[100] = 1
		}
		got, err := modelgen.Encode(typ, in)
		if err != nil {
			t.Fatal(err)
		}
		want, err := QuantizeWithGGML(uint32(typ), in, perRow)
		if err != nil {
			t.Fatal(err)
		}
		if len(got) != len(want) {
			t.Fatalf("%s: %d bytes, ggml %d", typ, len(got), len(want))
		}
		for i := range got {
			if got[i] != want[i] {
				t.Fatalf("%s: byte %d is %#x, ggml %#x (block %d)", typ, i, got[i], want[i], i/typ.TypeSize())
			}
		}
	}
}

// TestGGMLAndGoRejectTheSameGarbage: both readers refuse empty, truncated and random files.
func TestGGMLAndGoRejectTheSameGarbage(t *testing.T) {
	src, err := os.ReadFile(testmodels.Path(t, "qwen3-q8_0"))
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	cases := map[string][]byte{
		"empty":       nil,
		"magic only":  []byte("GGUF"),
		"header half": src[:2000],
		"data cut":    src[:len(src)/2],
		"wrong magic": append([]byte("GGML"), src[4:]...),
	}
	rnd := make([]byte, 4096)
	r := rand.New(rand.NewPCG(1, 1))
	for i := range rnd {
		rnd[i] = byte(r.Uint32())
	}
	cases["random"] = rnd
	for name, data := range cases {
		p := filepath.Join(dir, name+".gguf")
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
		if _, err := gguf.Open(p); err == nil {
			t.Errorf("%s: Go reader accepted it", name)
		}
		// ggml with no_alloc does not read tensor data, so it accepts a file cut in the data section;
		// the Go reader is stricter there on purpose (the sniper reads those bytes later).
		if _, err := ReadGGUFWithGGML(p); err == nil && name != "data cut" {
			t.Errorf("%s: ggml accepted it", name)
		}
	}
}
