// Package modelgen writes real, loadable GGUF models with random weights, deterministic from a seed:
// tiny ones for tests and published MoE shapes (tens of GB) for benchmarks, streamed to disk with
// several goroutines and never held in memory.
package modelgen

import (
	"context"
	"errors"
	"fmt"
	"hash/fnv"
	"io"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"slices"
	"strings"

	"github.com/expertsniper/expertsniper/gguf"
)

// Options describe one model file.
type Options struct {
	Shape Shape
	// Type of the weight matrices: F32, F16, Q8_0 or Q4_0. Norms, biases, routers and other small
	// tensors stay F32, as in real files; a matrix whose rows are not whole blocks also stays F32.
	Type gguf.Type
	Seed uint64
	// RandomQuants makes Q4_0/Q8_0 matrices random blocks (scale and quants drawn directly) instead of
	// quantized Gaussians: the same kind of real bytes, 10–20× faster. Use it for benchmark shapes.
	RandomQuants bool
	// RouterSkew > 0 scales the router rows of a few "hot" experts per layer by up to 1+RouterSkew, so
	// their logits vary more and they win the top-k more often: skewed routing for cache benchmarks.
	RouterSkew float64
	// Workers generating data in parallel; 0 means GOMAXPROCS.
	Workers int
	// ChatTemplate is the family whose chat template the file carries (see TemplateFamilies; ""
	// is ChatML).
	ChatTemplate string
	// Progress, if set, receives bytes of tensor data written so far and the total.
	Progress func(done, total int64)
}

// TypeNames lists the types Write produces directly.
var TypeNames = []string{"f32", "f16", "q8_0", "q4_0"}

func checkType(t gguf.Type) error {
	switch t {
	case gguf.TypeF32, gguf.TypeF16, gguf.TypeQ8_0, gguf.TypeQ4_0:
		return nil
	}
	return fmt.Errorf("type %s is not written directly (use F32, F16, Q8_0 or Q4_0; K-quants go through llama-quantize)", t)
}

// fileType is llama_ftype for general.file_type.
func fileType(t gguf.Type) uint32 {
	switch t {
	case gguf.TypeF16:
		return 1
	case gguf.TypeQ4_0:
		return 2
	case gguf.TypeQ8_0:
		return 7
	}
	return 0
}

// Write generates the model into path. It writes a temporary file next to path and renames it into
// place only when complete, so path never holds a partial model.
func Write(ctx context.Context, path string, opts Options) (err error) {
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return fmt.Errorf("generate model %q: %w", path, err)
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if err := WriteTo(ctx, tmp, opts); err != nil {
		return fmt.Errorf("generate model %q: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("generate model %q: close: %w", path, err)
	}
	if err := os.Chmod(tmp.Name(), 0o644); err != nil {
		return fmt.Errorf("generate model %q: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("generate model %q: %w", path, err)
	}
	return nil
}

// WriteTo generates the model into out.
func WriteTo(ctx context.Context, out io.Writer, opts Options) error {
	w, err := newWriter(out, opts)
	if err != nil {
		return err
	}
	return w.Write(ctx)
}

// DataSize is the size of the tensor data of the model opts describe: the file is a little larger (its
// header). Commands compare it with the free disk space before they write.
func DataSize(opts Options) (int64, error) {
	w, err := newWriter(io.Discard, opts)
	if err != nil {
		return 0, err
	}
	return w.DataSize(), nil
}

// newWriter declares the model's metadata and tensors on a gguf.Writer to out; nothing is generated
// until its Write.
func newWriter(out io.Writer, opts Options) (*gguf.Writer, error) {
	if err := opts.Shape.Validate(); err != nil {
		return nil, err
	}
	if err := checkType(opts.Type); err != nil {
		return nil, err
	}
	template, err := ChatTemplateOf(opts.ChatTemplate)
	if err != nil {
		return nil, err
	}
	w := gguf.NewWriter(out)
	w.Progress = opts.Progress
	for _, kv := range metadata(opts, template) {
		if err := w.AddKV(kv.Key, kv.Value); err != nil {
			return nil, err
		}
	}
	workers := opts.Workers
	if workers <= 0 {
		workers = runtime.GOMAXPROCS(0)
	}
	for _, spec := range Plan(opts) {
		spec := spec
		fill := func(ctx context.Context, w io.Writer) error {
			return generate(ctx, w, spec, opts, workers)
		}
		if err := w.AddTensor(spec.Name, spec.Type, spec.Dims, fill); err != nil {
			return nil, err
		}
	}
	return w, nil
}

// TensorSpec is one tensor of a generated model and how its values are drawn.
type TensorSpec struct {
	Name string
	Type gguf.Type
	Dims []int64
	init initKind
}

type initKind struct {
	dist     int     // distNormal or distNegative
	mean     float32 // distNormal: mean + std·N(0,1)
	std      float32
	rowScale func(row int64) float32 // optional per-row factor (router skew)
}

const (
	distNormal   = iota
	distNegative // -(0.5 + U[0,1)): DeltaNet's A = -exp(A_log) must be negative for a stable recurrence
)

var (
	initWeight = initKind{std: 0.05}
	initNorm   = initKind{mean: 1, std: 0.05}
	initBias   = initKind{std: 0.02}
	initRouter = initKind{std: 0.5}
	initConv   = initKind{std: 0.3}
	initDTBias = initKind{std: 0.5}
	initA      = initKind{dist: distNegative}
)

func metadata(o Options, template string) []gguf.KV {
	s := o.Shape
	a := s.Arch
	u := func(v int) uint32 { return uint32(v) }
	kvs := []gguf.KV{
		{Key: "general.architecture", Value: a},
		{Key: "general.name", Value: fmt.Sprintf("expertsniper-%s-%s-seed%d", a, s.Name, o.Seed)},
		{Key: "general.file_type", Value: fileType(o.Type)},
		{Key: "general.quantization_version", Value: uint32(2)},
		{Key: a + ".block_count", Value: u(s.Layers)},
		{Key: a + ".context_length", Value: u(s.Context)},
		{Key: a + ".embedding_length", Value: u(s.Embd)},
		{Key: a + ".feed_forward_length", Value: u(s.DenseFF)},
		{Key: a + ".attention.head_count", Value: u(s.Heads)},
		{Key: a + ".attention.head_count_kv", Value: u(s.KVHeads)},
		{Key: a + ".attention.key_length", Value: u(s.HeadDim)},
		{Key: a + ".attention.value_length", Value: u(s.HeadDim)},
		{Key: a + ".attention.layer_norm_rms_epsilon", Value: float32(1e-6)},
		{Key: a + ".rope.freq_base", Value: s.RopeBase},
	}
	if s.IsMoE() {
		kvs = append(kvs,
			gguf.KV{Key: a + ".expert_count", Value: u(s.Experts)},
			gguf.KV{Key: a + ".expert_used_count", Value: u(s.ExpertsUsed)},
			gguf.KV{Key: a + ".expert_feed_forward_length", Value: u(s.ExpertFF)})
	}
	if s.SharedFF > 0 {
		kvs = append(kvs, gguf.KV{Key: a + ".expert_shared_feed_forward_length", Value: u(s.SharedFF)})
	}
	if s.Arch == ArchQwen35MoE {
		kvs = append(kvs,
			gguf.KV{Key: a + ".rope.dimension_count", Value: u(s.RopeDim)},
			gguf.KV{Key: a + ".rope.dimension_sections", Value: s.RopeSections[:]},
			gguf.KV{Key: a + ".full_attention_interval", Value: u(s.FullAttnInterval)},
			gguf.KV{Key: a + ".ssm.conv_kernel", Value: u(s.SSMConvKernel)},
			gguf.KV{Key: a + ".ssm.state_size", Value: u(s.SSMStateSize)},
			gguf.KV{Key: a + ".ssm.group_count", Value: u(s.SSMGroups)},
			gguf.KV{Key: a + ".ssm.time_step_rank", Value: u(s.SSMTimeStepRank)},
			gguf.KV{Key: a + ".ssm.inner_size", Value: u(s.SSMInner())})
	}
	tok := TokenizerFor(o.ChatTemplate)
	tokens, types := tok.Tokens, tok.Types
	if pad := o.vocabSize() - len(tokens); pad > 0 {
		tokens = append(slices.Clone(tokens), make([]string, pad)...)
		types = append(slices.Clone(types), make([]int32, pad)...)
		for i := len(tok.Tokens); i < len(tokens); i++ {
			tokens[i] = fmt.Sprintf("[PAD%d]", i)
			types[i] = tokenUnused
		}
	}
	kvs = append(kvs,
		gguf.KV{Key: "tokenizer.ggml.model", Value: "gpt2"},
		gguf.KV{Key: "tokenizer.ggml.pre", Value: "qwen2"},
		gguf.KV{Key: "tokenizer.ggml.tokens", Value: tokens},
		gguf.KV{Key: "tokenizer.ggml.token_type", Value: types},
		gguf.KV{Key: "tokenizer.ggml.merges", Value: tok.Merges},
		gguf.KV{Key: "tokenizer.ggml.eos_token_id", Value: tok.EOS},
		gguf.KV{Key: "tokenizer.ggml.bos_token_id", Value: tok.BOS},
		gguf.KV{Key: "tokenizer.ggml.padding_token_id", Value: tok.Pad},
		gguf.KV{Key: "tokenizer.ggml.add_bos_token", Value: false},
		gguf.KV{Key: "tokenizer.chat_template", Value: template})
	return kvs
}

// vocabSize is the shape's vocabulary, grown by the control tokens the chat template needs when
// the shape has no padding to hold them.
func (o Options) vocabSize() int {
	return max(o.Shape.VocabSize(), len(TokenizerFor(o.ChatTemplate).Tokens))
}

// Plan lists the tensors of the model in file order.
func Plan(o Options) []TensorSpec {
	s := o.Shape
	E, V := int64(s.Embd), int64(o.vocabSize())
	hd, H, KV := int64(s.HeadDim), int64(s.Heads), int64(s.KVHeads)
	var specs []TensorSpec
	matrix := func(name string, init initKind, dims ...int64) {
		t := o.Type
		if dims[0]%int64(t.BlockSize()) != 0 {
			t = gguf.TypeF32
		}
		specs = append(specs, TensorSpec{Name: name, Type: t, Dims: dims, init: init})
	}
	small := func(name string, init initKind, dims ...int64) {
		specs = append(specs, TensorSpec{Name: name, Type: gguf.TypeF32, Dims: dims, init: init})
	}

	matrix("token_embd.weight", initWeight, E, V)
	for i := 0; i < s.Layers; i++ {
		blk := func(n string) string { return fmt.Sprintf("blk.%d.%s", i, n) }
		small(blk("attn_norm.weight"), initNorm, E)
		switch {
		case s.Arch == ArchQwen35MoE && (i+1)%s.FullAttnInterval != 0:
			// Gated DeltaNet (linear attention) layer.
			keyDim := int64(s.SSMStateSize * s.SSMGroups)
			valueDim := int64(s.SSMInner())
			vHeads := int64(s.SSMTimeStepRank)
			matrix(blk("attn_qkv.weight"), initWeight, E, 2*keyDim+valueDim)
			matrix(blk("attn_gate.weight"), initWeight, E, valueDim)
			small(blk("ssm_conv1d.weight"), initConv, int64(s.SSMConvKernel), 2*keyDim+valueDim)
			small(blk("ssm_dt.bias"), initDTBias, vHeads)
			small(blk("ssm_a"), initA, vHeads)
			small(blk("ssm_beta.weight"), initWeight, E, vHeads)
			small(blk("ssm_alpha.weight"), initWeight, E, vHeads)
			small(blk("ssm_norm.weight"), initNorm, int64(s.SSMStateSize))
			matrix(blk("ssm_out.weight"), initWeight, valueDim, E)
		case s.Arch == ArchQwen35MoE:
			// Gated full attention: the query projection also yields the output gate.
			matrix(blk("attn_q.weight"), initWeight, E, 2*H*hd)
			matrix(blk("attn_k.weight"), initWeight, E, KV*hd)
			matrix(blk("attn_v.weight"), initWeight, E, KV*hd)
			matrix(blk("attn_output.weight"), initWeight, H*hd, E)
			small(blk("attn_q_norm.weight"), initNorm, hd)
			small(blk("attn_k_norm.weight"), initNorm, hd)
		default:
			matrix(blk("attn_q.weight"), initWeight, E, H*hd)
			matrix(blk("attn_k.weight"), initWeight, E, KV*hd)
			matrix(blk("attn_v.weight"), initWeight, E, KV*hd)
			if s.Arch == ArchQwen2MoE {
				small(blk("attn_q.bias"), initBias, H*hd)
				small(blk("attn_k.bias"), initBias, KV*hd)
				small(blk("attn_v.bias"), initBias, KV*hd)
			}
			matrix(blk("attn_output.weight"), initWeight, H*hd, E)
			switch s.Arch {
			case ArchQwen3, ArchQwen3MoE:
				small(blk("attn_q_norm.weight"), initNorm, hd)
				small(blk("attn_k_norm.weight"), initNorm, hd)
			case ArchOLMoE:
				small(blk("attn_q_norm.weight"), initNorm, H*hd)
				small(blk("attn_k_norm.weight"), initNorm, KV*hd)
			}
		}
		if s.Arch == ArchQwen35MoE {
			small(blk("post_attention_norm.weight"), initNorm, E)
		} else {
			small(blk("ffn_norm.weight"), initNorm, E)
		}
		if !s.IsMoE() {
			D := int64(s.DenseFF)
			matrix(blk("ffn_gate.weight"), initWeight, E, D)
			matrix(blk("ffn_up.weight"), initWeight, E, D)
			matrix(blk("ffn_down.weight"), initWeight, D, E)
			continue
		}
		X, F := int64(s.Experts), int64(s.ExpertFF)
		router := initRouter
		if o.RouterSkew > 0 {
			router.rowScale = skewScale(o.Seed, i, s.Experts, o.RouterSkew)
		}
		small(blk("ffn_gate_inp.weight"), router, E, X)
		matrix(blk("ffn_gate_exps.weight"), initWeight, E, F, X)
		matrix(blk("ffn_up_exps.weight"), initWeight, E, F, X)
		matrix(blk("ffn_down_exps.weight"), initWeight, F, E, X)
		if s.SharedFF > 0 {
			S := int64(s.SharedFF)
			small(blk("ffn_gate_inp_shexp.weight"), initWeight, E)
			matrix(blk("ffn_gate_shexp.weight"), initWeight, E, S)
			matrix(blk("ffn_up_shexp.weight"), initWeight, E, S)
			matrix(blk("ffn_down_shexp.weight"), initWeight, S, E)
		}
	}
	small("output_norm.weight", initNorm, E)
	matrix("output.weight", initWeight, E, V)
	return specs
}

// skewScale gives each layer a different set of hot experts: expert e's router row is scaled by
// 1 + skew·2^-rank(e), where rank is the expert's place in a per-layer random order. Logits of
// large-norm rows spread wider, so those experts reach the top-k much more often.
func skewScale(seed uint64, layer, experts int, skew float64) func(int64) float32 {
	r := newRNG(seed, 0x5ce3, uint64(layer))
	perm := make([]int, experts)
	for i := range perm {
		perm[i] = i
	}
	for i := experts - 1; i > 0; i-- {
		j := int(r.next() % uint64(i+1))
		perm[i], perm[j] = perm[j], perm[i]
	}
	scale := make([]float32, experts)
	for rank, e := range perm {
		scale[e] = float32(1 + skew*math.Exp2(-float64(rank)/2))
	}
	return func(row int64) float32 { return scale[row] }
}

func nameHash(name string) uint64 {
	h := fnv.New64a()
	h.Write([]byte(name))
	return h.Sum64()
}

// chunkElements is the unit of parallel generation (1 MiB of F32).
const chunkElements = 1 << 18

// generate writes one tensor's bytes. Rows are cut into chunks, each with its own random stream, which
// workers fill concurrently; chunks are written in order through a bounded window, so memory stays
// at a few MiB per worker whatever the tensor size.
func generate(ctx context.Context, w io.Writer, spec TensorSpec, o Options, workers int) error {
	ne0 := spec.Dims[0]
	rows := int64(1)
	for _, d := range spec.Dims[1:] {
		rows *= d
	}
	rowsPerChunk := max(1, chunkElements/ne0)
	nChunks := (rows + rowsPerChunk - 1) / rowsPerChunk
	if nChunks == 0 {
		return nil
	}
	id := nameHash(spec.Name)
	makeChunk := func(c int64) chunk {
		r0 := c * rowsPerChunk
		r1 := min(rows, r0+rowsPerChunk)
		b, err := chunkBytes(spec, o, newRNG(o.Seed, id, uint64(c)), r0, r1)
		return chunk{b, err}
	}
	if nChunks == 1 || workers == 1 {
		for c := int64(0); c < nChunks; c++ {
			if err := ctx.Err(); err != nil {
				return err
			}
			ch := makeChunk(c)
			if ch.err != nil {
				return ch.err
			}
			if _, err := w.Write(ch.b); err != nil {
				return err
			}
		}
		return nil
	}

	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	type job struct {
		c   int64
		out chan chunk
	}
	jobs := make(chan job)
	order := make(chan chan chunk, 2*workers) // bounds the chunks in flight
	go func() {
		defer close(order)
		defer close(jobs)
		for c := int64(0); c < nChunks; c++ {
			out := make(chan chunk, 1)
			select {
			case order <- out:
			case <-ctx.Done():
				return
			}
			select {
			case jobs <- job{c, out}:
			case <-ctx.Done():
				return
			}
		}
	}()
	for i := 0; i < workers; i++ {
		go func() {
			for j := range jobs {
				j.out <- makeChunk(j.c)
			}
		}()
	}
	for out := range order {
		var ch chunk
		select {
		case ch = <-out:
		case <-ctx.Done():
			return ctx.Err()
		}
		if ch.err != nil {
			return ch.err
		}
		if _, err := w.Write(ch.b); err != nil {
			return err
		}
	}
	return ctx.Err()
}

type chunk struct {
	b   []byte
	err error
}

// chunkBytes encodes rows [r0, r1) of a tensor.
func chunkBytes(spec TensorSpec, o Options, r *rng, r0, r1 int64) ([]byte, error) {
	ne0 := spec.Dims[0]
	n := (r1 - r0) * ne0
	size := spec.Type.RowSize(ne0) * (r1 - r0)
	dst := make([]byte, 0, size)
	if o.RandomQuants && spec.init.rowScale == nil {
		switch spec.Type {
		case gguf.TypeQ4_0:
			return randomQ4_0(dst, r, int(n/qk)), nil
		case gguf.TypeQ8_0:
			return randomQ8_0(dst, r, int(n/qk)), nil
		}
	}
	vals := make([]float32, n)
	in := spec.init
	for i := range vals {
		switch in.dist {
		case distNegative:
			vals[i] = -(0.5 + r.uniform())
		default:
			vals[i] = in.mean + in.std*r.normal()
		}
	}
	if in.rowScale != nil {
		for row := r0; row < r1; row++ {
			f := in.rowScale(row % spec.Dims[1])
			for j := int64(0); j < ne0; j++ {
				vals[(row-r0)*ne0+j] *= f
			}
		}
	}
	enc, err := Encode(spec.Type, vals) // checkType ran before any tensor was generated
	if err != nil {
		return nil, err
	}
	return append(dst, enc...), nil
}

// ErrNoQuantizer is returned when llama-quantize is not on PATH.
var ErrNoQuantizer = errors.New("llama-quantize not found on PATH (it is in llama.cpp's tools; inside the build root run `./build.sh exec ...`)")

// Describe summarises a shape for humans.
func (s Shape) Describe() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s %s: %d layers, n_embd %d, %d/%d heads × %d", s.Arch, s.Name, s.Layers, s.Embd, s.Heads, s.KVHeads, s.HeadDim)
	if s.IsMoE() {
		fmt.Fprintf(&b, ", %d experts (%d used) of FFN %d", s.Experts, s.ExpertsUsed, s.ExpertFF)
		if s.SharedFF > 0 {
			fmt.Fprintf(&b, " + shared %d", s.SharedFF)
		}
	} else {
		fmt.Fprintf(&b, ", FFN %d", s.DenseFF)
	}
	return b.String()
}
