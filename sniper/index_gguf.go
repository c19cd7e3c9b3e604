package sniper

import (
	"fmt"

	"github.com/expertsniper/expertsniper/gguf"
)

// OpenIndex reads the GGUF header of path and indexes its streamed tensors. For qwen35moe, whose
// llama.cpp graph uses a fused gate_up expert tensor, the fused tensor is synthesized from the file's
// separate gate and up experts when the file does not have it.
func OpenIndex(path string, mode Mode) (*Index, *gguf.File, error) {
	f, err := gguf.Open(path)
	if err != nil {
		return nil, nil, fmt.Errorf("index %q: %w", path, err)
	}
	idx, err := IndexGGUF(path, f, mode)
	return idx, f, err
}

// IndexGGUF indexes the streamed tensors of an already parsed GGUF file.
func IndexGGUF(path string, f *gguf.File, mode Mode) (*Index, error) {
	descs := make([]TensorDesc, len(f.Tensors))
	for i, t := range f.Tensors {
		dims := make([]uint64, len(t.Dims))
		for j, d := range t.Dims {
			dims[j] = uint64(d)
		}
		descs[i] = TensorDesc{Name: t.Name, Type: uint32(t.Type), Dims: dims, FileOffset: f.TensorFileOffset(t), Bytes: t.Bytes()}
	}
	return NewIndex(path, descs, mode, NeedsFusedGateUp(f))
}

// NeedsFusedGateUp reports whether llama.cpp's graph for this file wants blk.N.ffn_gate_up_exps.weight
// and the file has separate gate and up experts instead (qwen35moe).
func NeedsFusedGateUp(f *gguf.File) bool {
	if f.Architecture() != "qwen35moe" {
		return false
	}
	_, hasFused := f.Tensor(FusedGateUpName(0))
	_, hasGate := f.Tensor("blk.0.ffn_gate_exps.weight")
	return !hasFused && hasGate
}

// IsMoE reports whether the file has routed expert tensors.
func IsMoE(f *gguf.File) bool {
	for _, t := range f.Tensors {
		if expertTensorRE.MatchString(t.Name) {
			return true
		}
	}
	return false
}
