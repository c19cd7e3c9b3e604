package binding

/*
#include "hook.h"
*/
import "C"

import (
	"context"
	"fmt"
	"runtime/cgo"
	"slices"
	"unsafe"

	"github.com/expertsniper/expertsniper/sniper"
)

// contextHook connects one Context's graph callback to the model's sniper. The C side (hook.c)
// filters node names and calls goHookExperts / goHookDense only for the nodes that matter.
type contextHook struct {
	c      *C.struct_es_hook
	handle cgo.Handle
	sn     *sniper.Sniper
	pin    *sniper.Pin // this context's working set: never evicted by other contexts' decodes
	// ctx is the context.Context of the decode in progress (reads honour its cancellation).
	ctx context.Context
	// err is the first error of the decode in progress; the C side has set the abort flag.
	err        error
	ids, slots []int32
	// calls counts the router (or dense FFN) callbacks of the decode in progress: a decode that
	// completes without any ran on weights nobody loaded.
	calls int
	// pf reads the next layer's predicted experts ahead (nil unless StreamOptions.Prefetch), with
	// the model's routers.
	pf         *sniper.Prefetcher
	routers    *sniper.Routers
	predictBuf []float32
}

// attach installs the hook into the parameters of a context being created; abortFlag is that
// context's abort flag, which the hook sets when the sniper fails so that the decode stops.
func (s *streamState) attach(p *ContextParams, abortFlag *C.int) (*contextHook, error) {
	if s == nil {
		return nil, nil
	}
	kind := C.ES_HOOK_EXPERTS
	if s.mode == sniper.ModeDense {
		kind = C.ES_HOOK_DENSE
	}
	h := &contextHook{sn: s.sn, pin: s.sn.NewPin(), ctx: context.Background()}
	h.handle = cgo.NewHandle(h)
	h.c = C.es_hook_new(C.int(kind), C.uintptr_t(h.handle), abortFlag)
	if h.c == nil {
		h.handle.Delete()
		return nil, fmt.Errorf("attach sniper hook: out of memory")
	}
	p.evalCallback = C.es_hook_eval_fn()
	p.evalCallbackData = unsafe.Pointer(h.c)
	h.routers = s.routersFor()
	s.startPrefetch(h)
	return h, nil
}

// begin prepares the hook for one llama_decode (nil-safe: in-RAM contexts have no hook).
func (h *contextHook) begin(ctx context.Context) {
	if h == nil {
		return
	}
	h.ctx, h.err, h.calls = ctx, nil, 0
	C.es_hook_reset(h.c)
}

// end returns the error the sniper reported during the decode, if any.
func (h *contextHook) end() error {
	if h == nil {
		return nil
	}
	err := h.err
	if err == nil && h.calls == 0 && h.ctx.Err() == nil {
		// Only reported when llama_decode says it computed (decode() ignores it otherwise).
		err = fmt.Errorf("sniper hook: the graph never reached a router (ffn_moe_topk-N) or dense FFN (ffn_norm-N) node; streaming is not supported for this architecture")
	}
	h.ctx, h.err = context.Background(), nil
	return err
}

// free releases the hook; call it after llama_free of the context.
func (h *contextHook) free() {
	if h == nil || h.c == nil {
		return
	}
	h.pf.Close()
	C.free(unsafe.Pointer(h.c))
	h.c = nil
	h.handle.Delete()
	h.pin.Release()
}

// recoverInto turns a panic in a callback from C into the decode's error: a panic must never
// unwind through llama.cpp's frames.
func (h *contextHook) recoverInto(ok *C.bool) {
	if r := recover(); r != nil {
		h.err = fmt.Errorf("sniper hook: internal error: %v", r)
		*ok = false
	}
}

//export goHookExperts
func goHookExperts(handle C.uintptr_t, layer C.int, data unsafe.Pointer, ne0, ne1, nb1 C.int64_t) (ok C.bool) {
	h := cgo.Handle(handle).Value().(*contextHook)
	defer h.recoverInto(&ok)
	h.calls++
	if ne1 == 0 {
		// llama.cpp computes only the output rows in the last layer; a micro-batch of a long prompt
		// that needs no output there routes no token, so no expert runs and nothing is loaded.
		return true
	}
	if ne0 <= 0 || ne1 < 0 || nb1 < ne0*4 {
		h.err = fmt.Errorf("sniper hook: router ids of layer %d have shape [%d,%d] stride %d", layer, ne0, ne1, nb1)
		return false
	}
	// ids is [n_expert_used, n_tokens] with row stride nb1 (a view: rows need not be contiguous).
	h.ids = h.ids[:0]
	for tok := C.int64_t(0); tok < ne1; tok++ {
		row := unsafe.Slice((*int32)(unsafe.Add(data, uintptr(tok*nb1))), int(ne0))
		h.ids = append(h.ids, row...)
	}
	h.slots = slices.Grow(h.slots[:0], len(h.ids))[:len(h.ids)]
	if err := h.pin.EnsureSlots(h.ctx, int(layer), h.ids, h.slots); err != nil {
		h.err = err
		return false
	}
	// The expert matmuls read the expert tensors at the slots (see sniper/slots.go).
	for tok := C.int64_t(0); tok < ne1; tok++ {
		row := unsafe.Slice((*int32)(unsafe.Add(data, uintptr(tok*nb1))), int(ne0))
		copy(row, h.slots[int(tok)*int(ne0):])
	}
	return true
}

//export goHookDense
func goHookDense(handle C.uintptr_t, layer C.int) (ok C.bool) {
	h := cgo.Handle(handle).Value().(*contextHook)
	defer h.recoverInto(&ok)
	h.calls++
	if err := h.pin.Ensure(h.ctx, int(layer), nil); err != nil {
		h.err = err
		return false
	}
	return true
}

//export goHookFail
func goHookFail(handle C.uintptr_t, layer C.int, msg *C.char) C.bool {
	h := cgo.Handle(handle).Value().(*contextHook)
	h.err = fmt.Errorf("sniper hook, layer %d: %s", layer, C.GoString(msg))
	return false
}
