package binding

// A tiny qwen3moe model written by the tests themselves (no downloads): random F32 weights from a
// fixed seed, a GPT-2 style byte-level tokenizer with a few merges, and ChatML control tokens, the
// minimum llama.cpp accepts (docs/design.md §4). The project's modelgen/testmodels package supersedes
// this once it lands; this file keeps binding's tests self-contained meanwhile.

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"sync"
	"testing"
)

type ggufBuf struct{ bytes.Buffer }

func (b *ggufBuf) u32(v uint32) { binary.Write(&b.Buffer, binary.LittleEndian, v) }
func (b *ggufBuf) u64(v uint64) { binary.Write(&b.Buffer, binary.LittleEndian, v) }
func (b *ggufBuf) str(s string) { b.u64(uint64(len(s))); b.WriteString(s) }

type kv struct {
	key string
	val any
}

func (b *ggufBuf) kv(k kv) {
	b.str(k.key)
	switch v := k.val.(type) {
	case uint32:
		b.u32(4)
		b.u32(v)
	case float32:
		b.u32(6)
		binary.Write(&b.Buffer, binary.LittleEndian, v)
	case bool:
		b.u32(7)
		if v {
			b.WriteByte(1)
		} else {
			b.WriteByte(0)
		}
	case string:
		b.u32(8)
		b.str(v)
	case []string:
		b.u32(9)
		b.u32(8)
		b.u64(uint64(len(v)))
		for _, s := range v {
			b.str(s)
		}
	case []int32:
		b.u32(9)
		b.u32(5)
		b.u64(uint64(len(v)))
		for _, x := range v {
			binary.Write(&b.Buffer, binary.LittleEndian, x)
		}
	default:
		panic(fmt.Sprintf("kv %s: type %T", k.key, v))
	}
}

type tensorSpec struct {
	name  string
	dims  []uint64
	fill  float32 // 0: random with std; else constant
	std   float64
	data  []float32
	bytes uint64
}

// byteToUnicode is GPT-2's reversible map from bytes to printable runes.
func byteToUnicode() []string {
	var bs []int
	for b := '!'; b <= '~'; b++ {
		bs = append(bs, int(b))
	}
	for b := 0xA1; b <= 0xAC; b++ {
		bs = append(bs, b)
	}
	for b := 0xAE; b <= 0xFF; b++ {
		bs = append(bs, b)
	}
	in := map[int]bool{}
	for _, b := range bs {
		in[b] = true
	}
	m := make([]string, 256)
	for _, b := range bs {
		m[b] = string(rune(b))
	}
	n := 0
	for b := 0; b < 256; b++ {
		if !in[b] {
			m[b] = string(rune(256 + n))
			n++
		}
	}
	return m
}

// writeTinyQwen3MoE writes the model to path.
func writeTinyQwen3MoE(path string, seed uint64) error {
	const (
		arch     = "qwen3moe"
		nEmbd    = 128
		nHead    = 4
		nHeadKV  = 2
		headDim  = 32
		nLayer   = 2
		nExpert  = 4
		nUsed    = 2
		nFFExp   = 64
		ctxTrain = 512
	)
	b2u := byteToUnicode()
	tokens := append([]string(nil), b2u...)
	merges := []string{"Ġ t", "h e", "i n", "Ġ a", "e r", "o n", "Ġt he", "r e", "l l", "Ġ s"}
	for _, mg := range merges {
		var a, c string
		fmt.Sscanf(mg, "%s %s", &a, &c)
		tokens = append(tokens, a+c)
	}
	types := make([]int32, len(tokens))
	for i := range types {
		types[i] = 1
	}
	specials := []string{"<|endoftext|>", "<|im_start|>", "<|im_end|>"}
	eos := uint32(len(tokens))
	for _, s := range specials {
		tokens = append(tokens, s)
		types = append(types, 3)
	}
	nVocab := uint64(len(tokens))
	chatTemplate := "{% for message in messages %}{{'<|im_start|>' + message['role'] + '\n' + message['content'] + '<|im_end|>' + '\n'}}{% endfor %}{% if add_generation_prompt %}{{ '<|im_start|>assistant\n' }}{% endif %}"

	kvs := []kv{
		{"general.architecture", arch},
		{"general.name", "tiny-qwen3moe-test"},
		{arch + ".block_count", uint32(nLayer)},
		{arch + ".context_length", uint32(ctxTrain)},
		{arch + ".embedding_length", uint32(nEmbd)},
		{arch + ".feed_forward_length", uint32(nFFExp)},
		{arch + ".attention.head_count", uint32(nHead)},
		{arch + ".attention.head_count_kv", uint32(nHeadKV)},
		{arch + ".attention.key_length", uint32(headDim)},
		{arch + ".attention.value_length", uint32(headDim)},
		{arch + ".attention.layer_norm_rms_epsilon", float32(1e-6)},
		{arch + ".rope.freq_base", float32(10000)},
		{arch + ".expert_count", uint32(nExpert)},
		{arch + ".expert_used_count", uint32(nUsed)},
		{arch + ".expert_feed_forward_length", uint32(nFFExp)},
		{"general.file_type", uint32(0)},
		{"tokenizer.ggml.model", "gpt2"},
		{"tokenizer.ggml.pre", "qwen2"},
		{"tokenizer.ggml.tokens", tokens},
		{"tokenizer.ggml.token_type", types},
		{"tokenizer.ggml.merges", merges},
		{"tokenizer.ggml.eos_token_id", eos},
		{"tokenizer.ggml.padding_token_id", eos},
		{"tokenizer.ggml.bos_token_id", eos},
		{"tokenizer.ggml.add_bos_token", false},
		{"tokenizer.chat_template", chatTemplate},
	}

	var ts []*tensorSpec
	add := func(name string, std float64, fill float32, dims ...uint64) {
		ts = append(ts, &tensorSpec{name: name, dims: dims, std: std, fill: fill})
	}
	add("token_embd.weight", 0.5, 0, nEmbd, nVocab)
	for l := 0; l < nLayer; l++ {
		p := fmt.Sprintf("blk.%d.", l)
		add(p+"attn_norm.weight", 0, 1, nEmbd)
		add(p+"attn_q.weight", 0.05, 0, nEmbd, nHead*headDim)
		add(p+"attn_k.weight", 0.05, 0, nEmbd, nHeadKV*headDim)
		add(p+"attn_v.weight", 0.05, 0, nEmbd, nHeadKV*headDim)
		add(p+"attn_output.weight", 0.05, 0, nHead*headDim, nEmbd)
		add(p+"attn_q_norm.weight", 0, 1, headDim)
		add(p+"attn_k_norm.weight", 0, 1, headDim)
		add(p+"ffn_norm.weight", 0, 1, nEmbd)
		add(p+"ffn_gate_inp.weight", 0.5, 0, nEmbd, nExpert)
		add(p+"ffn_gate_exps.weight", 0.05, 0, nEmbd, nFFExp, nExpert)
		add(p+"ffn_up_exps.weight", 0.05, 0, nEmbd, nFFExp, nExpert)
		add(p+"ffn_down_exps.weight", 0.05, 0, nFFExp, nEmbd, nExpert)
	}
	add("output_norm.weight", 0, 1, nEmbd)
	add("output.weight", 0.3, 0, nEmbd, nVocab)

	rng := rand.New(rand.NewPCG(seed, 0x9e3779b97f4a7c15))
	for _, t := range ts {
		n := uint64(1)
		for _, d := range t.dims {
			n *= d
		}
		t.data = make([]float32, n)
		for i := range t.data {
			if t.fill != 0 {
				t.data[i] = t.fill
			} else {
				t.data[i] = float32(rng.NormFloat64() * t.std)
			}
		}
		t.bytes = n * 4
	}

	var b ggufBuf
	b.WriteString("GGUF")
	b.u32(3)
	b.u64(uint64(len(ts)))
	b.u64(uint64(len(kvs)))
	for _, k := range kvs {
		b.kv(k)
	}
	const align = 32
	off := uint64(0)
	for _, t := range ts {
		b.str(t.name)
		b.u32(uint32(len(t.dims)))
		for _, d := range t.dims {
			b.u64(d)
		}
		b.u32(0) // F32
		b.u64(off)
		off += (t.bytes + align - 1) / align * align
	}
	for b.Len()%align != 0 {
		b.WriteByte(0)
	}
	for _, t := range ts {
		for _, x := range t.data {
			binary.Write(&b.Buffer, binary.LittleEndian, math.Float32bits(x))
		}
		for b.Len()%align != 0 {
			b.WriteByte(0)
		}
	}
	return os.WriteFile(path, b.Bytes(), 0o644)
}

var (
	tinyOnce sync.Once
	tinyPath string
	tinyErr  error
	tinyDir  string
)

// tinyModelPath returns the path of the generated test model (written once per test binary).
func tinyModelPath(t testing.TB) string {
	t.Helper()
	tinyOnce.Do(func() {
		tinyDir, tinyErr = os.MkdirTemp("", "binding-test-")
		if tinyErr != nil {
			return
		}
		tinyPath = filepath.Join(tinyDir, "tiny-qwen3moe-f32.gguf")
		tinyErr = writeTinyQwen3MoE(tinyPath, 42)
	})
	if tinyErr != nil {
		t.Fatalf("generate test model: %v", tinyErr)
	}
	return tinyPath
}
