package stream

import (
	"fmt"
	"unsafe"

	"github.com/expertsniper/expertsniper/binding/hookapi"
	"github.com/expertsniper/expertsniper/gguf"
)

// Prefetching (Options.Prefetch): right after layer N's experts are made resident, binding's hook
// hands over the router's input x of layer N (its C side finds it among the topk node's ancestors).
// The Weights keep each layer's router as float32 (the model's own memory when it is F32, converted
// once at load otherwise) and the context's sniper.Prefetcher reads the experts layer N+1's router
// would choose for x, in the background, while layer N's experts compute.

// RouterInput predicts the next layer's experts from x (never fails the decode).
func (h *contextHook) RouterInput(layer, k int, x hookapi.Rows) {
	defer func() { _ = recover() }() // only a prediction: it must never fail or unwind the decode
	routers := h.w.routers
	if h.pf == nil || routers == nil || x.Len <= 0 || x.Type != gguf.TypeF32 || !routers.Has(layer) {
		return
	}
	if !h.pf.Wanted(layer + 1) {
		return // nothing to read for the next layer: spare the copy and the prediction
	}
	// A prompt's micro-batch: predict from up to maxPredictTokens of its tokens, evenly spaced (the
	// union of their experts; routing of neighbouring tokens overlaps much, and each token costs a
	// matrix-vector product in Go).
	rows := min(int(x.Count), maxPredictTokens)
	embd := int(x.Len)
	if h.predictBuf == nil || len(h.predictBuf) < rows*embd {
		h.predictBuf = make([]float32, rows*embd)
	}
	buf := h.predictBuf[:rows*embd]
	for r := 0; r < rows; r++ {
		tok := int64(r) * x.Count / int64(rows)
		copy(buf[r*embd:(r+1)*embd], unsafe.Slice((*float32)(unsafe.Add(x.Data, uintptr(tok*x.Stride))), embd))
	}
	h.pf.PredictBatch(layer+1, buf, rows, k)
}

// setRouter records layer's router weight t (Ne[1] rows of Ne[0] values) as float32: the model's
// own pinned memory when it is F32, a converted copy otherwise.
func (w *Weights) setRouter(layer int, t *hookapi.Tensor) error {
	embd, experts := int(t.Ne[0]), int(t.Ne[1])
	if embd <= 0 || experts <= 0 || t.Data == nil {
		return fmt.Errorf("router of layer %d: shape [%d,%d]", layer, embd, experts)
	}
	var rows []float32
	if t.Type == gguf.TypeF32 && t.Nb[1] == t.Ne[0]*4 {
		// The model's own pinned weights: no copy (the model outlives its contexts' prefetchers).
		rows = unsafe.Slice((*float32)(t.Data), embd*experts)
	} else {
		rows = make([]float32, embd*experts)
		if err := t.ToFloat32(rows); err != nil {
			return fmt.Errorf("router of layer %d: %w", layer, err)
		}
	}
	return w.routers.Set(layer, embd, experts, rows)
}

// maxPredictTokens bounds the tokens of a micro-batch the prefetcher predicts from.
const maxPredictTokens = 64

// RouterKnown reports whether layer's router is known, so that its experts can be predicted (with
// Options.Prefetch, every MoE layer's is once the model has loaded).
func (w *Weights) RouterKnown(layer int) bool { return w.routers != nil && w.routers.Has(layer) }
