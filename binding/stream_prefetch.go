package binding

/*
#include "hook.h"
*/
import "C"

import (
	"fmt"
	"runtime/cgo"
	"unsafe"

	"github.com/expertsniper/expertsniper/sniper"
)

// Prefetching (StreamOptions.Prefetch): right after layer N's experts are made resident, the hook
// hands Go the router's input x of layer N (hook.c finds it among the topk node's ancestors) and the
// router weight. Go keeps each layer's router as float32 (the model's own memory when it is F32,
// converted once otherwise) and asks the context's sniper.Prefetcher to read the experts layer N+1's
// router would choose for x, in the background, while layer N's experts compute.

// startPrefetch gives the hook a prefetcher (nil-safe for in-RAM contexts and when prefetch is off).
func (s *streamState) startPrefetch(h *contextHook) {
	if s == nil || h == nil || s.routers == nil {
		return
	}
	h.pf = s.sn.NewPrefetcher(s.routers)
	h.pf.PredictInline(s.predictInline)
	C.es_hook_set_prefetch(h.c, 1)
}

//export goHookRouterInput
func goHookRouterInput(handle C.uintptr_t, layer, k C.int, x unsafe.Pointer, xne0, xne1, xnb1 C.int64_t,
	w unsafe.Pointer, wtype C.int, wne0, wne1, wnb1 C.int64_t) {
	h := cgo.Handle(handle).Value().(*contextHook)
	defer func() { _ = recover() }() // only a prediction: it must never fail or unwind the decode
	if h.pf == nil || h.routers == nil || xne0 <= 0 || wne0 != xne0 || wne1 <= 0 {
		return
	}
	l := int(layer)
	if !h.routers.Has(l) && setRouter(h.routers, l, w, wtype, wne0, wne1, wnb1) != nil {
		return
	}
	if !h.pf.Wanted(l + 1) {
		return // nothing to read for the next layer: spare the copy and the prediction
	}
	// A prompt's micro-batch: predict from up to maxPredictTokens of its tokens, evenly spaced (the
	// union of their experts; routing of neighbouring tokens overlaps much, and each token costs a
	// matrix-vector product in Go).
	rows := min(int(xne1), maxPredictTokens)
	embd := int(xne0)
	if h.predictBuf == nil || len(h.predictBuf) < rows*embd {
		h.predictBuf = make([]float32, rows*embd)
	}
	buf := h.predictBuf[:rows*embd]
	for r := 0; r < rows; r++ {
		tok := int64(r) * int64(xne1) / int64(rows)
		copy(buf[r*embd:(r+1)*embd], unsafe.Slice((*float32)(unsafe.Add(x, uintptr(tok*int64(xnb1)))), embd))
	}
	h.pf.PredictBatch(l+1, buf, rows, int(k))
}

// setRouter records layer's router weight w (wne1 rows of wne0 values, nb1 bytes apart, of ggml
// type wtype) as float32: the model's own pinned memory when it is F32, a converted copy otherwise.
func setRouter(routers *sniper.Routers, layer int, w unsafe.Pointer, wtype C.int, wne0, wne1, wnb1 C.int64_t) error {
	embd, experts := int(wne0), int(wne1)
	if embd <= 0 || experts <= 0 || w == nil {
		return fmt.Errorf("router of layer %d: shape [%d,%d]", layer, embd, experts)
	}
	var rows []float32
	if wtype == C.GGML_TYPE_F32 && wnb1 == wne0*4 {
		// The model's own pinned weights: no copy (the model outlives its contexts' prefetchers).
		rows = unsafe.Slice((*float32)(w), embd*experts)
	} else {
		rows = make([]float32, embd*experts)
		if C.es_rows_to_float(w, wtype, wne0, wne1, C.size_t(wnb1), (*C.float)(unsafe.Pointer(&rows[0]))) != 0 {
			return fmt.Errorf("router of layer %d: cannot convert type %d to float", layer, int(wtype))
		}
	}
	return routers.Set(layer, embd, experts, rows)
}

// maxPredictTokens bounds the tokens of a micro-batch the prefetcher predicts from.
const maxPredictTokens = 64

// routersFor is what contexts of this model predict with (nil when prefetch is off).
func (s *streamState) routersFor() *sniper.Routers {
	if s == nil {
		return nil
	}
	return s.routers
}
