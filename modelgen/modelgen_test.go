package modelgen

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math"
	"slices"
	"strings"
	"testing"

	"github.com/expertsniper/expertsniper/gguf"
)

func generateBytes(t *testing.T, o Options) []byte {
	t.Helper()
	var buf bytes.Buffer
	if err := WriteTo(context.Background(), &buf, o); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestDeterministic(t *testing.T) {
	s, err := Tiny(ArchQwen3MoE)
	if err != nil {
		t.Fatal(err)
	}
	s.Layers = 2
	a := generateBytes(t, Options{Shape: s, Type: gguf.TypeQ8_0, Seed: 3, Workers: 1})
	b := generateBytes(t, Options{Shape: s, Type: gguf.TypeQ8_0, Seed: 3, Workers: 4})
	if !bytes.Equal(a, b) {
		t.Fatal("same seed, different worker count: different bytes")
	}
	c := generateBytes(t, Options{Shape: s, Type: gguf.TypeQ8_0, Seed: 4})
	if len(c) != len(a) || bytes.Equal(a, c) {
		t.Fatal("a different seed must give different weights of the same layout")
	}
	f, err := gguf.Read(bytes.NewReader(a), int64(len(a)))
	if err != nil {
		t.Fatal(err)
	}
	fc, _ := gguf.Read(bytes.NewReader(c), int64(len(c)))
	// Only the weights (and general.name) differ: compare one expert tensor's bytes.
	ti, _ := f.Tensor("blk.1.ffn_down_exps.weight")
	off := f.TensorFileOffset(ti)
	if bytes.Equal(a[off:off+ti.Bytes()], c[fc.TensorFileOffset(ti):fc.TensorFileOffset(ti)+ti.Bytes()]) {
		t.Fatal("expert weights equal across seeds")
	}
}

func TestEveryArchitectureLayout(t *testing.T) {
	for _, arch := range Archs {
		t.Run(arch, func(t *testing.T) {
			s, err := Tiny(arch)
			if err != nil {
				t.Fatal(err)
			}
			data := generateBytes(t, Options{Shape: s, Type: gguf.TypeQ4_0, Seed: 1})
			f, err := gguf.Read(bytes.NewReader(data), int64(len(data)))
			if err != nil {
				t.Fatal(err)
			}
			if f.Architecture() != arch {
				t.Fatalf("architecture %q", f.Architecture())
			}
			if n, ok := f.ArchUint("block_count"); !ok || n != uint64(s.Layers) {
				t.Fatalf("block_count %d %v", n, ok)
			}
			tok, _ := f.Get("tokenizer.ggml.tokens")
			nVocab := int64(len(tok.([]string)))
			emb, ok := f.Tensor("token_embd.weight")
			if !ok || !slices.Equal(emb.Dims, []int64{int64(s.Embd), nVocab}) || emb.Type != gguf.TypeQ4_0 {
				t.Fatalf("token_embd %+v", emb)
			}
			if n, _ := f.Tensor("blk.0.attn_norm.weight"); n.Type != gguf.TypeF32 {
				t.Fatalf("norms must stay F32, got %s", n.Type)
			}
			if s.IsMoE() {
				for _, name := range []string{"ffn_gate_exps", "ffn_up_exps"} {
					ti, ok := f.Tensor("blk.0." + name + ".weight")
					if !ok || !slices.Equal(ti.Dims, []int64{int64(s.Embd), int64(s.ExpertFF), int64(s.Experts)}) {
						t.Fatalf("%s: %+v", name, ti)
					}
				}
				down, _ := f.Tensor("blk.0.ffn_down_exps.weight")
				if !slices.Equal(down.Dims, []int64{int64(s.ExpertFF), int64(s.Embd), int64(s.Experts)}) {
					t.Fatalf("down: %+v", down)
				}
				router, _ := f.Tensor("blk.0.ffn_gate_inp.weight")
				if router.Type != gguf.TypeF32 || !slices.Equal(router.Dims, []int64{int64(s.Embd), int64(s.Experts)}) {
					t.Fatalf("router: %+v", router)
				}
			} else if _, ok := f.Tensor("blk.0.ffn_down.weight"); !ok {
				t.Fatal("dense model without ffn_down")
			}
			_, hasShared := f.Tensor("blk.0.ffn_down_shexp.weight")
			if hasShared != (s.SharedFF > 0) {
				t.Fatalf("shared expert present=%v, SharedFF=%d", hasShared, s.SharedFF)
			}
			if arch == ArchQwen35MoE {
				if _, ok := f.Tensor("blk.0.ssm_conv1d.weight"); !ok {
					t.Fatal("layer 0 must be a DeltaNet layer")
				}
				if _, ok := f.Tensor("blk.3.attn_q.weight"); !ok {
					t.Fatal("layer 3 must be a full-attention layer")
				}
				secs, _ := f.Get("qwen35moe.rope.dimension_sections")
				if !slices.Equal(secs.([]int32), []int32{3, 3, 2, 0}) {
					t.Fatalf("sections %v", secs)
				}
			}
		})
	}
}

func TestTokenizer(t *testing.T) {
	tok := DefaultTokenizer()
	if len(tok.Tokens) != len(tok.Types) || len(tok.Merges) < 150 {
		t.Fatalf("%d tokens, %d types, %d merges", len(tok.Tokens), len(tok.Types), len(tok.Merges))
	}
	index := map[string]int{}
	for i, s := range tok.Tokens {
		if _, dup := index[s]; dup {
			t.Fatalf("duplicate token %q", s)
		}
		index[s] = i
	}
	for i := 0; i < 256; i++ {
		if tok.Types[i] != tokenNormal {
			t.Fatalf("byte token %d has type %d", i, tok.Types[i])
		}
	}
	if index["Ġ"] != ' ' || index["!"] != '!' || index["Ā"] != 0 {
		t.Fatalf("byte map wrong: space=%d !=%d NUL=%d", index["Ġ"], index["!"], index["Ā"])
	}
	for _, m := range tok.Merges {
		l, r, ok := strings.Cut(m, " ")
		if !ok {
			t.Fatalf("merge %q", m)
		}
		for _, s := range []string{l, r, l + r} {
			if _, ok := index[s]; !ok {
				t.Fatalf("merge %q: %q is not a token", m, s)
			}
		}
	}
	for _, s := range []string{TokenEndOfText, TokenIMStart, TokenIMEnd} {
		if tok.Types[index[s]] != tokenControl {
			t.Fatalf("%s is not a control token", s)
		}
	}
	if tok.Tokens[tok.EOS] != TokenIMEnd || tok.Tokens[tok.BOS] != TokenEndOfText {
		t.Fatal("eos/bos ids")
	}
	if _, ok := index["Ġthe"]; !ok {
		t.Fatal("common word ' the' was not learnt")
	}
	if again := buildTokenizer(trainingText, maxMerges); !slices.Equal(again.Tokens, tok.Tokens) || !slices.Equal(again.Merges, tok.Merges) {
		t.Fatal("tokenizer is not deterministic")
	}
}

func TestFP16(t *testing.T) {
	cases := []struct {
		f float32
		h uint16
	}{
		{0, 0}, {1, 0x3c00}, {-2, 0xc000}, {65504, 0x7bff}, {65520, 0x7c00}, {1e9, 0x7c00},
		{float32(math.Inf(-1)), 0xfc00}, {5.960464477539063e-08, 0x0001}, {2.98e-08, 0x0000},
		{6.103515625e-05, 0x0400}, {1.0009765625, 0x3c01},
		{1.00048828125, 0x3c00},  // tie → even
		{1.00146484375, 0x3c02},  // tie → even (up)
		{0.000060975552, 0x03ff}, // largest subnormal
	}
	for _, c := range cases {
		if got := fp32ToFP16(c.f); got != c.h {
			t.Errorf("fp16(%g) = %#04x, want %#04x", c.f, got, c.h)
		}
	}
	for h := 0; h < 1<<16; h++ {
		f := fp16ToFP32(uint16(h))
		if f != f { // NaN
			continue
		}
		if back := fp32ToFP16(f); back != uint16(h) {
			t.Fatalf("round trip %#04x → %g → %#04x", h, f, back)
		}
	}
}

func TestQuantizersDecode(t *testing.T) {
	r := newRNG(9)
	x := make([]float32, 4*qk)
	for i := range x {
		x[i] = 0.05 * r.normal()
	}
	q8 := quantizeQ8_0(nil, x)
	q4 := quantizeQ4_0(nil, x)
	if len(q8) != 4*34 || len(q4) != 4*18 {
		t.Fatalf("sizes %d %d", len(q8), len(q4))
	}
	for b := 0; b < 4; b++ {
		d8 := fp16ToFP32(uint16(q8[b*34]) | uint16(q8[b*34+1])<<8)
		d4 := fp16ToFP32(uint16(q4[b*18]) | uint16(q4[b*18+1])<<8)
		for j := 0; j < qk; j++ {
			v := x[b*qk+j]
			v8 := d8 * float32(int8(q8[b*34+2+j]))
			nib := q4[b*18+2+j%16]
			if j >= 16 {
				nib >>= 4
			}
			v4 := d4 * float32(int(nib&15)-8)
			if math.Abs(float64(v8-v)) > float64(d8)/2+1e-6 {
				t.Fatalf("q8_0 block %d elem %d: %g → %g (d=%g)", b, j, v, v8, d8)
			}
			// Q4_0 maps the largest magnitude to -8, so +8·|d| clips to 7: error up to |d| there.
			if math.Abs(float64(v4-v)) > math.Abs(float64(d4))+1e-6 {
				t.Fatalf("q4_0 block %d elem %d: %g → %g (d=%g)", b, j, v, v4, d4)
			}
		}
	}
	if _, err := Encode(gguf.TypeQ4_K, x); err == nil {
		t.Fatal("Encode accepted Q4_K")
	}
	if _, err := Encode(gguf.TypeQ8_0, x[:31]); err == nil {
		t.Fatal("Encode accepted a partial block")
	}
}

func TestRandomQuantsAndSkew(t *testing.T) {
	s, _ := Named("qwen3-30b-a3b", "")
	s.Layers, s.Embd, s.Heads, s.KVHeads, s.HeadDim, s.ExpertFF, s.Experts, s.DenseFF = 1, 256, 4, 2, 64, 128, 16, 256
	plain := generateBytes(t, Options{Shape: s, Type: gguf.TypeQ4_0, Seed: 5, RandomQuants: true})
	f, err := gguf.Read(bytes.NewReader(plain), int64(len(plain)))
	if err != nil {
		t.Fatal(err)
	}
	exps, _ := f.Tensor("blk.0.ffn_up_exps.weight")
	data := plain[f.TensorFileOffset(exps) : f.TensorFileOffset(exps)+exps.Bytes()]
	var nibbles [16]int
	var negative, blocks int
	var sum, sumAbs float64
	for b := 0; b < len(data); b += 18 {
		d := fp16ToFP32(uint16(data[b]) | uint16(data[b+1])<<8)
		if a := math.Abs(float64(d)); a < 0.75*q4Scale*0.99 || a > 1.25*q4Scale*1.01 {
			t.Fatalf("block scale %g out of range", d)
		}
		blocks++
		if d < 0 {
			negative++
		}
		for _, q := range data[b+2 : b+18] {
			nibbles[q&15]++
			nibbles[q>>4]++
			for _, v := range [2]float64{float64(int(q&15) - 8), float64(int(q>>4) - 8)} {
				sum += float64(d) * v
				sumAbs += math.Abs(float64(d) * v)
			}
		}
	}
	// Scales of both signs cancel the nibbles' -0.5 mean; without that every matrix carries a shared
	// bias that makes all tokens route alike.
	if frac := float64(negative) / float64(blocks); frac < 0.45 || frac > 0.55 {
		t.Fatalf("%.1f%% of block scales negative, want about half", 100*frac)
	}
	if mean := sum / sumAbs; math.Abs(mean) > 0.01 {
		t.Fatalf("mean weight is %.3f of the mean magnitude, want about 0", mean)
	}
	for v, n := range nibbles {
		if n == 0 {
			t.Fatalf("nibble %d never drawn", v)
		}
	}

	skewed := generateBytes(t, Options{Shape: s, Type: gguf.TypeQ4_0, Seed: 5, RandomQuants: true, RouterSkew: 4})
	router, _ := f.Tensor("blk.0.ffn_gate_inp.weight")
	norms := func(file []byte) []float64 {
		off := f.TensorFileOffset(router)
		var out []float64
		for e := 0; e < s.Experts; e++ {
			var sum float64
			for j := 0; j < s.Embd; j++ {
				p := off + int64(4*(e*s.Embd+j))
				v := math.Float32frombits(uint32(file[p]) | uint32(file[p+1])<<8 | uint32(file[p+2])<<16 | uint32(file[p+3])<<24)
				sum += float64(v) * float64(v)
			}
			out = append(out, math.Sqrt(sum))
		}
		return out
	}
	np, ns := norms(plain), norms(skewed)
	maxRatio := 0.0
	for e := range np {
		maxRatio = max(maxRatio, ns[e]/np[e])
	}
	if maxRatio < 4.9 || maxRatio > 5.1 {
		t.Fatalf("hottest router row scaled by %g, want 5", maxRatio)
	}
	if !bytes.Equal(plain[:f.TensorFileOffset(router)], skewed[:f.TensorFileOffset(router)]) {
		t.Fatal("skew changed more than the router")
	}
}

func TestRejectsBadOptions(t *testing.T) {
	s, _ := Tiny(ArchQwen3MoE)
	if err := WriteTo(context.Background(), io.Discard, Options{Shape: s, Type: gguf.TypeQ4_K}); err == nil {
		t.Error("Q4_K written directly")
	}
	bad := s
	bad.ExpertsUsed = 99
	if err := WriteTo(context.Background(), io.Discard, Options{Shape: bad, Type: gguf.TypeF32}); err == nil {
		t.Error("more experts used than exist")
	}
	hybrid, _ := Tiny(ArchQwen35MoE)
	hybrid.Layers = 3
	if err := hybrid.Validate(); err == nil || !strings.Contains(err.Error(), "no full-attention layer") {
		t.Errorf("qwen35moe without a full-attention layer: %v", err)
	}
	if _, err := Tiny("llama"); err == nil {
		t.Error("unknown architecture")
	}
	if _, err := Named("qwen35-35b-a3b", ArchOLMoE); err == nil {
		t.Error("shape with the wrong architecture")
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := WriteTo(ctx, io.Discard, Options{Shape: s, Type: gguf.TypeF32}); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled: %v", err)
	}
	if err := Write(context.Background(), "/nonexistent-dir/x.gguf", Options{Shape: s, Type: gguf.TypeF32}); err == nil || !strings.Contains(err.Error(), "/nonexistent-dir/x.gguf") {
		t.Errorf("bad path: %v", err)
	}
}

func TestNamedShapesAreValid(t *testing.T) {
	for _, n := range append(ShapeNames(), "tiny") {
		s, err := Named(n, "")
		if err != nil {
			t.Fatal(err)
		}
		if err := s.Validate(); err != nil {
			t.Fatal(err)
		}
	}
	s, _ := Named("qwen35-35b-a3b", "")
	var expertBytes int64
	for _, spec := range Plan(Options{Shape: s, Type: gguf.TypeQ4_0}) {
		if strings.HasSuffix(spec.Name, "_exps.weight") {
			expertBytes += gguf.TensorInfo{Type: spec.Type, Dims: spec.Dims}.Bytes()
		}
	}
	if expertBytes < 17e9 || expertBytes > 20e9 {
		t.Fatalf("qwen35-35b-a3b at Q4_0 has %d expert bytes, expected ~18 GB", expertBytes)
	}
}

// TestQwen3DenseShape checks the published Qwen3-32B shape at Q4_0 against the seed project's figures:
// 18.4 GB in all, of which attention, embeddings and norms (what stream mode pins) are about 4.5 GB.
func TestQwen3DenseShape(t *testing.T) {
	s, err := Named("qwen3-32b", "")
	if err != nil {
		t.Fatal(err)
	}
	if s.IsMoE() || s.Layers != 64 || s.Embd != 5120 || s.DenseFF != 25600 || s.Heads != 64 || s.KVHeads != 8 || s.HeadDim != 128 || s.VocabSize() != 151936 {
		t.Fatalf("qwen3-32b shape: %+v", s)
	}
	var ffn, total int64
	for _, spec := range Plan(Options{Shape: s, Type: gguf.TypeQ4_0}) {
		n := gguf.TensorInfo{Type: spec.Type, Dims: spec.Dims}.Bytes()
		total += n
		if strings.Contains(spec.Name, ".ffn_") && strings.HasSuffix(spec.Name, ".weight") && !strings.Contains(spec.Name, "norm") {
			ffn += n
		}
	}
	if total < 17.5e9 || total > 19.5e9 {
		t.Errorf("qwen3-32b at Q4_0 has %d bytes, expected ~18.4 GB", total)
	}
	if pinned := total - ffn; pinned < 3.5e9 || pinned > 5e9 {
		t.Errorf("qwen3-32b at Q4_0 pins %d bytes besides its FFNs, expected ~4.5 GB", pinned)
	}
}

// TestRouterSkewSkewsTopK applies generated routers to random unit-RMS hidden states and counts how
// often each expert reaches the top-k: uniform without skew, dominated by a few experts with it.
func TestRouterSkewSkewsTopK(t *testing.T) {
	s, _ := Tiny(ArchQwen3MoE)
	s.Experts, s.ExpertsUsed = 32, 4
	share := func(skew float64) (top, min float64) {
		var router TensorSpec
		for _, spec := range Plan(Options{Shape: s, Type: gguf.TypeF32, Seed: 2, RouterSkew: skew}) {
			if spec.Name == "blk.0.ffn_gate_inp.weight" {
				router = spec
			}
		}
		raw, err := chunkBytes(router, Options{Seed: 2}, newRNG(2, 77), 0, int64(s.Experts))
		if err != nil {
			t.Fatal(err)
		}
		w := make([]float32, len(raw)/4)
		for i := range w {
			w[i] = math.Float32frombits(uint32(raw[4*i]) | uint32(raw[4*i+1])<<8 | uint32(raw[4*i+2])<<16 | uint32(raw[4*i+3])<<24)
		}
		counts := make([]int, s.Experts)
		r := newRNG(99)
		const tokens = 3000
		h := make([]float32, s.Embd)
		logits := make([]float64, s.Experts)
		idx := make([]int, s.Experts)
		for tok := 0; tok < tokens; tok++ {
			for j := range h {
				h[j] = r.normal()
			}
			for e := range logits {
				var dot float64
				for j, v := range h {
					dot += float64(v) * float64(w[e*s.Embd+j])
				}
				logits[e], idx[e] = dot, e
			}
			slices.SortFunc(idx, func(a, b int) int {
				if logits[a] > logits[b] {
					return -1
				}
				return 1
			})
			for _, e := range idx[:s.ExpertsUsed] {
				counts[e]++
			}
		}
		uniform := float64(tokens*s.ExpertsUsed) / float64(s.Experts)
		return float64(slices.Max(counts)) / uniform, float64(slices.Min(counts)) / uniform
	}
	top0, min0 := share(0)
	top4, min4 := share(4)
	t.Logf("hottest/coldest expert vs uniform: no skew %.2f/%.2f, skew 4 %.2f/%.2f", top0, min0, top4, min4)
	if top0 > 1.5 || min0 < 0.5 {
		t.Errorf("without skew routing should be near uniform: %.2f/%.2f", top0, min0)
	}
	if top4 < 2.5 || min4 > 0.5 {
		t.Errorf("skew 4 should concentrate routing: %.2f/%.2f", top4, min4)
	}
}

func TestVocabPadding(t *testing.T) {
	s, _ := Tiny(ArchQwen3)
	s.Layers, s.Vocab = 1, 1000
	data := generateBytes(t, Options{Shape: s, Type: gguf.TypeF16, Seed: 1})
	f, err := gguf.Read(bytes.NewReader(data), int64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	toks, _ := f.Get("tokenizer.ggml.tokens")
	types, _ := f.Get("tokenizer.ggml.token_type")
	tl, ty := toks.([]string), types.([]int32)
	if len(tl) != 1000 || len(ty) != 1000 || tl[999] != "[PAD999]" || ty[999] != tokenUnused {
		t.Fatalf("padding: %d tokens, last %q type %d", len(tl), tl[len(tl)-1], ty[len(ty)-1])
	}
	if n := len(DefaultTokenizer().Tokens); tl[n-1] != TokenIMEnd || len(DefaultTokenizer().Tokens) != n {
		t.Fatal("padding changed the real tokens or the shared tokenizer")
	}
	for _, name := range []string{"token_embd.weight", "output.weight"} {
		if ti, _ := f.Tensor(name); !slices.Equal(ti.Dims, []int64{int64(s.Embd), 1000}) {
			t.Fatalf("%s dims %v", name, ti.Dims)
		}
	}
	s.Vocab = 10
	if err := s.Validate(); err == nil {
		t.Fatal("a vocabulary smaller than the tokenizer was accepted")
	}
}
