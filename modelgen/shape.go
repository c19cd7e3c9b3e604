package modelgen

import (
	"fmt"
	"sort"
	"strings"
)

// Architectures the generator writes (general.architecture values of llama.cpp b11669).
const (
	ArchQwen3MoE  = "qwen3moe"
	ArchQwen35MoE = "qwen35moe"
	ArchOLMoE     = "olmoe"
	ArchQwen2MoE  = "qwen2moe"
	ArchQwen3     = "qwen3" // dense
)

// Archs lists every supported architecture.
var Archs = []string{ArchQwen3MoE, ArchQwen35MoE, ArchOLMoE, ArchQwen2MoE, ArchQwen3}

// Shape is the architecture and every dimension of a model.
type Shape struct {
	Name    string // e.g. "tiny", "qwen3-30b-a3b"
	Arch    string
	Layers  int
	Embd    int
	Heads   int
	KVHeads int
	HeadDim int
	Context int
	// Vocab pads the vocabulary to this many tokens with unused "[PADn]" tokens, as converted real
	// models are padded, so embedding and output matrices have their real size; 0 = the tokenizer's.
	Vocab int

	DenseFF     int // FFN length of dense models (and feed_forward_length metadata)
	Experts     int // 0 for dense models
	ExpertsUsed int
	ExpertFF    int
	SharedFF    int // shared expert FFN length (qwen2moe, qwen35moe); 0 = none

	RopeBase float32

	// qwen35moe: Gated DeltaNet layers, with full attention every FullAttnInterval-th layer.
	RopeDim          int      // rotary dimensions (partial rotary)
	RopeSections     [4]int32 // multi-section rope; sums to RopeDim/2
	FullAttnInterval int
	SSMConvKernel    int
	SSMStateSize     int // head dimension of keys and values in DeltaNet layers
	SSMGroups        int // key heads
	SSMTimeStepRank  int // value heads
}

// VocabSize is the number of tokens the model file holds.
func (s Shape) VocabSize() int { return max(s.Vocab, len(DefaultTokenizer().Tokens)) }

// IsMoE reports whether the shape has routed experts.
func (s Shape) IsMoE() bool { return s.Experts > 0 }

// SSMInner is the DeltaNet value dimension (ssm.inner_size).
func (s Shape) SSMInner() int { return s.SSMStateSize * s.SSMTimeStepRank }

// Tiny returns the default test shape of an architecture. Widths are 256 so that every matrix row is
// a whole number of K-quant super-blocks: llama-quantize then really writes Q4_K/Q6_K instead of
// falling back to legacy types, as it does for real models.
func Tiny(arch string) (Shape, error) {
	s := Shape{Name: "tiny", Arch: arch, Layers: 4, Embd: 256, Heads: 4, KVHeads: 2, HeadDim: 64,
		Context: 4096, DenseFF: 512, Experts: 8, ExpertsUsed: 2, ExpertFF: 256, RopeBase: 1e6}
	switch arch {
	case ArchQwen3MoE:
	case ArchQwen2MoE:
		s.SharedFF = 256
	case ArchOLMoE:
		// OLMoE normalises q and k over the whole embedding, so it needs as many KV heads as heads.
		s.KVHeads = s.Heads
		s.RopeBase = 10000
		s.DenseFF = s.ExpertFF // olmoe reads the expert length from feed_forward_length
	case ArchQwen35MoE:
		s.SharedFF = 256
		s.RopeBase = 1e7
		s.RopeDim = 16
		s.RopeSections = [4]int32{3, 3, 2, 0}
		s.FullAttnInterval = 4
		s.SSMConvKernel = 4
		s.SSMStateSize = 32
		s.SSMGroups = 2
		s.SSMTimeStepRank = 4
	case ArchQwen3:
		s.Experts, s.ExpertsUsed, s.ExpertFF = 0, 0, 0
	default:
		return Shape{}, fmt.Errorf("unknown architecture %q (known: %s)", arch, strings.Join(Archs, ", "))
	}
	return s, nil
}

// Published shapes for benchmarks.
var namedShapes = map[string]Shape{
	// Qwen3-30B-A3B (config.json of Qwen/Qwen3-30B-A3B).
	"qwen3-30b-a3b": {Name: "qwen3-30b-a3b", Arch: ArchQwen3MoE, Layers: 48, Embd: 2048, Heads: 32, KVHeads: 4,
		HeadDim: 128, Context: 40960, Vocab: 151936, DenseFF: 6144, Experts: 128, ExpertsUsed: 8, ExpertFF: 768, RopeBase: 1e6},
	// Qwen3-32B (config.json of Qwen/Qwen3-32B): dense, untied output; the seed project streamed it at
	// 4 bits (18.4 GB) on a 16 GB Mac.
	"qwen3-32b": {Name: "qwen3-32b", Arch: ArchQwen3, Layers: 64, Embd: 5120, Heads: 64, KVHeads: 8,
		HeadDim: 128, Context: 40960, Vocab: 151936, DenseFF: 25600, RopeBase: 1e6},
	// Qwen3.5-35B-A3B: 40 layers, 3 Gated DeltaNet layers then 1 gated full-attention layer; 16 query /
	// 2 KV heads of 256 with 64 rotary dimensions; DeltaNet with 16 key heads and 32 value heads of 128.
	"qwen35-35b-a3b": {Name: "qwen35-35b-a3b", Arch: ArchQwen35MoE, Layers: 40, Embd: 2048, Heads: 16, KVHeads: 2,
		HeadDim: 256, Context: 262144, Vocab: 248320, DenseFF: 512, Experts: 256, ExpertsUsed: 8, ExpertFF: 512, SharedFF: 512,
		RopeBase: 1e7, RopeDim: 64, RopeSections: [4]int32{11, 11, 10, 0}, FullAttnInterval: 4,
		SSMConvKernel: 4, SSMStateSize: 128, SSMGroups: 16, SSMTimeStepRank: 32},
}

// ShapeNames lists the names Named accepts besides "tiny".
func ShapeNames() []string {
	var out []string
	for n := range namedShapes {
		out = append(out, n)
	}
	sort.Strings(out)
	return out
}

// Named returns "tiny" for arch, or a published shape (whose architecture is fixed; arch may be empty).
func Named(name, arch string) (Shape, error) {
	if name == "" || name == "tiny" {
		if arch == "" {
			arch = ArchQwen3MoE
		}
		return Tiny(arch)
	}
	s, ok := namedShapes[name]
	if !ok {
		return Shape{}, fmt.Errorf("unknown shape %q (known: tiny, %s)", name, strings.Join(ShapeNames(), ", "))
	}
	if arch != "" && arch != s.Arch {
		return Shape{}, fmt.Errorf("shape %q is a %s model, not %s", name, s.Arch, arch)
	}
	return s, nil
}

// Validate checks the relations llama.cpp relies on.
func (s Shape) Validate() error {
	bad := func(format string, args ...any) error {
		return fmt.Errorf("shape %s/%s: %s", s.Name, s.Arch, fmt.Sprintf(format, args...))
	}
	if s.Layers <= 0 || s.Embd <= 0 || s.Heads <= 0 || s.KVHeads <= 0 || s.HeadDim <= 0 {
		return bad("layers, embedding, heads, KV heads and head dimension must be positive")
	}
	if s.Heads%s.KVHeads != 0 {
		return bad("%d heads are not a multiple of %d KV heads", s.Heads, s.KVHeads)
	}
	if s.Vocab != 0 && s.Vocab < len(DefaultTokenizer().Tokens) {
		return bad("vocabulary %d is smaller than the tokenizer's %d tokens", s.Vocab, len(DefaultTokenizer().Tokens))
	}
	if s.Embd%32 != 0 {
		return bad("embedding length %d is not a multiple of 32", s.Embd)
	}
	switch s.Arch {
	case ArchQwen3:
		if s.DenseFF <= 0 || s.Experts != 0 {
			return bad("a dense model needs a feed-forward length and no experts")
		}
	case ArchQwen3MoE, ArchQwen2MoE, ArchOLMoE, ArchQwen35MoE:
		if s.Experts <= 0 || s.ExpertsUsed <= 0 || s.ExpertsUsed > s.Experts || s.ExpertFF <= 0 {
			return bad("experts %d, used %d, expert FFN %d are not a valid MoE", s.Experts, s.ExpertsUsed, s.ExpertFF)
		}
	default:
		return bad("unknown architecture")
	}
	if (s.Arch == ArchQwen2MoE || s.Arch == ArchOLMoE) && s.Heads*s.HeadDim != s.Embd {
		return bad("%s needs heads × head dimension (%d) = embedding length (%d)", s.Arch, s.Heads*s.HeadDim, s.Embd)
	}
	if s.Arch == ArchOLMoE && s.KVHeads != s.Heads {
		return bad("olmoe needs as many KV heads as heads")
	}
	if (s.Arch == ArchQwen2MoE || s.Arch == ArchQwen35MoE) && s.SharedFF <= 0 {
		return bad("%s needs a shared expert FFN length", s.Arch)
	}
	if s.Arch == ArchQwen35MoE {
		sum := s.RopeSections[0] + s.RopeSections[1] + s.RopeSections[2] + s.RopeSections[3]
		if s.RopeDim <= 0 || s.RopeDim > s.HeadDim || int(sum)*2 != s.RopeDim {
			return bad("rope dimension %d and sections %v do not match (sections sum to half the rope dimension)", s.RopeDim, s.RopeSections)
		}
		if s.FullAttnInterval <= 0 || s.SSMConvKernel <= 0 || s.SSMStateSize <= 0 || s.SSMGroups <= 0 || s.SSMTimeStepRank <= 0 {
			return bad("full attention interval and ssm.* sizes must be positive")
		}
		if s.Layers < s.FullAttnInterval {
			// llama.cpp b11669 aborts in its KV cache when a hybrid model has no attention layer.
			return bad("%d layers hold no full-attention layer (every %dth is one); use at least %d", s.Layers, s.FullAttnInterval, s.FullAttnInterval)
		}
		if s.SSMTimeStepRank%s.SSMGroups != 0 {
			return bad("value heads %d are not a multiple of key heads %d", s.SSMTimeStepRank, s.SSMGroups)
		}
	}
	return nil
}
