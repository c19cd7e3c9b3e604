// Package hookapi holds the plain types of binding's two generic hooks — a model whose tensors the
// user places (binding.LoadFromUser) and a graph evaluation hook filtered in C — so that a pure-Go
// package (stream/, which wires the sniper to them) can implement the hooks without cgo and without
// importing binding. Memory crosses as unsafe.Pointer plus shape; nothing here calls C.
package hookapi

import (
	"context"
	"unsafe"

	"github.com/expertsniper/expertsniper/gguf"
)

// Tensor is one tensor llama.cpp allocated while creating a model, handed to UserModel.SetTensorData.
// The sink either fills the Size bytes at Data (llama.cpp's own memory for it) or points Data, and if
// it must Ne and Nb, at memory of its own that outlives the model; binding writes Data, Ne and Nb back
// to the tensor afterwards.
type Tensor struct {
	Name string
	Type gguf.Type
	Ne   [4]int64 // elements per dimension
	Nb   [4]int64 // bytes between consecutive elements of each dimension
	Size int64    // ggml_nbytes at creation
	Data unsafe.Pointer
	// Alloc returns size zeroed bytes of C memory that lives as long as the model (for a tensor whose
	// data the sink reshapes). Only valid during SetTensorData.
	Alloc func(size int64) (unsafe.Pointer, error)
	// ToFloat32 converts the tensor's rows (Ne[1] rows of Ne[0] values, Nb[1] bytes apart) to float32
	// with ggml's own conversion, into out (at least Ne[0]*Ne[1] values). Only valid during
	// SetTensorData, after Data holds the tensor's bytes.
	ToFloat32 func(out []float32) error
	// Repacking returns the repacked layout llama.cpp's default load would give this tensor as the
	// weight of op (MUL_MAT_ID for experts when id, else MUL_MAT), or nil for the file's layout.
	// Only valid during SetTensorData.
	Repacking func(id bool) Layout
	// Layout, set by the sink, says the bytes at Data are in that layout (one Repacking returned):
	// binding then makes llama.cpp compute with its kernels.
	Layout Layout
}

// Layout is one of llama.cpp's repacked CPU weight layouts (its CPU device's "extra" buffer types:
// CPU_REPACK, AMX, ...) for one tensor's type and row length. Conversions are ggml's own.
type Layout interface {
	// Name is the buffer type's name, e.g. "CPU_REPACK".
	Name() string
	// RowBytes is the size of one row in the file's layout; conversions take whole rows.
	RowBytes() int64
	// Fits reports whether rows rows on their own convert with this layout's kernels (a part of a
	// tensor converted separately, e.g. the gate half of qwen35moe's fused gate+up experts).
	Fits(rows int64) bool
	// Convert writes src, whole rows in the file's layout, into dst in this layout (as long as src;
	// they must not overlap). Safe for concurrent use on distinct destinations.
	Convert(dst, src []byte) error
}

// TensorDecl is a tensor to add to the GGUF tensor table before llama.cpp creates the model: one the
// architecture wants that the file stores differently (e.g. qwen35moe's fused gate+up experts, which
// files keep as two tensors). Its data is never read from the file: the sink places it.
type TensorDecl struct {
	Name string
	Type gguf.Type
	Ne   [3]int64
}

// UserModel is a model whose tensors the user places (binding.LoadFromUser takes ownership of it).
type UserModel interface {
	// Declared lists the tensors to add to the file's tensor table (see TensorDecl).
	Declared() []TensorDecl
	// SetTensorData places one tensor. llama.cpp calls it once per tensor, on the loading thread;
	// the first error fails the load.
	SetTensorData(t *Tensor) error
	// Loaded runs once llama.cpp created the model; an error fails the load (e.g. the graph did not
	// allocate every tensor the user meant to place).
	Loaded() error
	// NewEvalHook returns the evaluation hook of a new context; nil means the context is not watched.
	NewEvalHook() (EvalHook, error)
	// Close releases what the user model owns. binding calls it after llama.cpp freed the model
	// (tensors' data may point into it), or when the load fails.
	Close()
}

// Watch says which graph nodes an EvalHook is called for; the C side filters them by name.
type Watch struct {
	// Experts: EvalHook.Experts for each MoE layer, when the router's choices (ffn_moe_topk-N) have
	// gathered the router's weights and before the first expert matmul.
	Experts bool
	// Dense: EvalHook.Dense before each layer's FFN (at its ffn_norm-N node).
	Dense bool
	// RouterInput: EvalHook.RouterInput right after Experts, with the router's input (Experts only).
	RouterInput bool
}

// Rows is a 2-D view of a tensor: Count rows of Len values of Type, row i at Data + i*Stride.
type Rows struct {
	Data   unsafe.Pointer
	Type   gguf.Type
	Len    int64
	Count  int64
	Stride int64
}

// EvalHook watches one context's graph evaluation. Its methods run on llama.cpp's compute thread,
// one at a time, within the llama_decode that Begin and End bracket.
type EvalHook interface {
	// Watch says which nodes to call the hook for; asked once, when the context is created.
	Watch() Watch
	// Begin starts a llama_decode; ctx is its context (long work in the hook honours it).
	Begin(ctx context.Context)
	// End finishes the decode; an error makes the decode fail (its logits are never used).
	End() error
	// Experts is called with layer's router choices: ids is I32, Len choices for each of Count
	// tokens. The hook may rewrite them in place (the expert matmuls read them next). An error
	// aborts the decode.
	Experts(layer int, ids Rows) error
	// Dense is called before layer's FFN runs. An error aborts the decode.
	Dense(layer int) error
	// RouterInput hands over the input x (F32, one row per token) of layer's router, whose top k
	// choices were just made; for prediction only: it cannot fail the decode.
	RouterInput(layer, k int, x Rows)
	// Close releases the hook; binding calls it after the context is freed.
	Close()
}
