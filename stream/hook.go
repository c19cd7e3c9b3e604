package stream

import (
	"context"
	"fmt"
	"slices"
	"unsafe"

	"github.com/expertsniper/expertsniper/binding/hookapi"
	"github.com/expertsniper/expertsniper/sniper"
)

// contextHook connects one context's graph evaluation to the model's sniper (a hookapi.EvalHook).
// binding's C side filters node names and calls Experts / Dense only for the nodes that matter.
type contextHook struct {
	w   *Weights
	pin *sniper.Pin // this context's working set: never evicted by other contexts' decodes
	// ctx is the context.Context of the decode in progress (reads honour its cancellation).
	ctx   context.Context
	slots []int32
	ids   []int32
	// calls counts the router (or dense FFN) callbacks of the decode in progress: a decode that
	// completes without any ran on weights nobody loaded.
	calls int
	// pf reads the next layer's predicted experts ahead (nil unless Options.Prefetch), with the
	// model's routers.
	pf         *sniper.Prefetcher
	predictBuf []float32
}

var _ hookapi.EvalHook = (*contextHook)(nil)

// NewEvalHook gives a new context its hook: its own pin on the sniper and, with prefetch, its own
// prefetcher.
func (w *Weights) NewEvalHook() (hookapi.EvalHook, error) {
	h := &contextHook{w: w, pin: w.sn.NewPin(), ctx: context.Background()}
	if w.routers != nil {
		h.pf = w.sn.NewPrefetcher(w.routers)
		h.pf.PredictInline(w.predictInline)
	}
	return h, nil
}

// Watch: the router's choices in sniper mode, each layer's FFN in dense mode.
func (h *contextHook) Watch() hookapi.Watch {
	if h.w.mode == sniper.ModeDense {
		return hookapi.Watch{Dense: true}
	}
	return hookapi.Watch{Experts: true, RouterInput: h.pf != nil}
}

// Begin prepares the hook for one llama_decode.
func (h *contextHook) Begin(ctx context.Context) {
	h.ctx, h.calls = ctx, 0
}

// End reports a decode that never reached the nodes the sniper watches: it would have computed on
// weights nobody loaded.
func (h *contextHook) End() error {
	var err error
	if h.calls == 0 && h.ctx.Err() == nil {
		err = fmt.Errorf("sniper hook: the graph never reached a router (ffn_moe_topk-N) or dense FFN (ffn_norm-N) node; streaming is not supported for this architecture")
	}
	h.ctx = context.Background()
	return err
}

// Close releases the prefetcher and the context's pin.
func (h *contextHook) Close() {
	h.pf.Close()
	h.pin.Release()
}

// Experts makes the chosen experts resident and rewrites the choices to the slots they are in.
func (h *contextHook) Experts(layer int, ids hookapi.Rows) error {
	h.calls++
	if ids.Count == 0 {
		// llama.cpp computes only the output rows in the last layer; a micro-batch of a long prompt
		// that needs no output there routes no token, so no expert runs and nothing is loaded.
		return nil
	}
	if ids.Len <= 0 || ids.Count < 0 || ids.Stride < ids.Len*4 {
		return fmt.Errorf("sniper hook: router ids of layer %d have shape [%d,%d] stride %d", layer, ids.Len, ids.Count, ids.Stride)
	}
	// ids is [n_expert_used, n_tokens] with row stride Stride (a view: rows need not be contiguous).
	perToken := int(ids.Len)
	row := func(tok int64) []int32 {
		return unsafe.Slice((*int32)(unsafe.Add(ids.Data, uintptr(tok*ids.Stride))), perToken)
	}
	h.ids = h.ids[:0]
	for tok := int64(0); tok < ids.Count; tok++ {
		h.ids = append(h.ids, row(tok)...)
	}
	h.slots = slices.Grow(h.slots[:0], len(h.ids))[:len(h.ids)]
	if err := h.pin.EnsureSlots(h.ctx, layer, h.ids, h.slots); err != nil {
		return err
	}
	// The expert matmuls read the expert tensors at the slots (see sniper/slots.go).
	for tok := int64(0); tok < ids.Count; tok++ {
		copy(row(tok), h.slots[int(tok)*perToken:])
	}
	return nil
}

// Dense makes layer's FFN weights resident.
func (h *contextHook) Dense(layer int) error {
	h.calls++
	return h.pin.Ensure(h.ctx, layer, nil)
}
