package binding

// The evaluation hook of a context whose model was loaded with LoadFromUser: the C side (hook.c)
// filters graph nodes by name and forwards only the ones the hookapi.EvalHook watches; this file
// turns them into the hook's calls and its errors into an aborted decode.

/*
#include "hook.h"
*/
import "C"

import (
	"context"
	"fmt"
	"runtime/cgo"
	"unsafe"

	"github.com/expertsniper/expertsniper/binding/hookapi"
	"github.com/expertsniper/expertsniper/gguf"
)

// contextHook is one context's hook: the C state llama.cpp calls and the user's EvalHook.
type contextHook struct {
	c      *C.struct_es_hook
	handle cgo.Handle
	user   hookapi.EvalHook
	// err is the first error of the decode in progress; the C side has set the abort flag.
	err error
}

// attachHook installs the model's evaluation hook (if its UserModel has one) into the parameters of
// a context being created; abortFlag is that context's abort flag, which the hook sets when the
// user's hook fails so that the decode stops. nil for a model without one.
func (m *Model) attachHook(p *ContextParams, abortFlag *C.int) (*contextHook, error) {
	if m.user == nil {
		return nil, nil
	}
	user, err := m.user.NewEvalHook()
	if err != nil || user == nil {
		return nil, err
	}
	w := user.Watch()
	var kind C.int
	switch {
	case w.Experts:
		kind = C.ES_HOOK_EXPERTS
	case w.Dense:
		kind = C.ES_HOOK_DENSE
	default:
		user.Close()
		return nil, nil
	}
	h := &contextHook{user: user}
	h.handle = cgo.NewHandle(h)
	h.c = C.es_hook_new(kind, C.uintptr_t(h.handle), abortFlag)
	if h.c == nil {
		h.handle.Delete()
		user.Close()
		return nil, fmt.Errorf("attach evaluation hook: out of memory")
	}
	if w.Experts && w.RouterInput {
		C.es_hook_set_prefetch(h.c, 1)
	}
	p.evalCallback = C.es_hook_eval_fn()
	p.evalCallbackData = unsafe.Pointer(h.c)
	return h, nil
}

// begin prepares the hook for one llama_decode (nil-safe: most contexts have no hook).
func (h *contextHook) begin(ctx context.Context) {
	if h == nil {
		return
	}
	h.err = nil
	C.es_hook_reset(h.c)
	h.user.Begin(ctx)
}

// end returns the error the hook reported during the decode, if any.
func (h *contextHook) end() error {
	if h == nil {
		return nil
	}
	err := h.user.End()
	if h.err != nil {
		err = h.err
	}
	h.err = nil
	return err
}

// free releases the hook; call it after llama_free of the context.
func (h *contextHook) free() {
	if h == nil || h.c == nil {
		return
	}
	h.user.Close()
	C.free(unsafe.Pointer(h.c))
	h.c = nil
	h.handle.Delete()
}

// fail records err as the decode's error; false tells the C side to abort the decode.
func (h *contextHook) fail(err error) C.bool {
	if err == nil {
		return true
	}
	h.err = err
	return false
}

// recoverInto turns a panic in a callback from C into the decode's error: a panic must never
// unwind through llama.cpp's frames.
func (h *contextHook) recoverInto(ok *C.bool) {
	if r := recover(); r != nil {
		h.err = fmt.Errorf("evaluation hook: internal error: %v", r)
		*ok = false
	}
}

//export goHookExperts
func goHookExperts(handle C.uintptr_t, layer C.int, data unsafe.Pointer, ne0, ne1, nb1 C.int64_t) (ok C.bool) {
	h := cgo.Handle(handle).Value().(*contextHook)
	defer h.recoverInto(&ok)
	ids := hookapi.Rows{Data: data, Type: gguf.TypeI32, Len: int64(ne0), Count: int64(ne1), Stride: int64(nb1)}
	return h.fail(h.user.Experts(int(layer), ids))
}

//export goHookDense
func goHookDense(handle C.uintptr_t, layer C.int) (ok C.bool) {
	h := cgo.Handle(handle).Value().(*contextHook)
	defer h.recoverInto(&ok)
	return h.fail(h.user.Dense(int(layer)))
}

//export goHookFail
func goHookFail(handle C.uintptr_t, layer C.int, msg *C.char) C.bool {
	h := cgo.Handle(handle).Value().(*contextHook)
	return h.fail(fmt.Errorf("evaluation hook, layer %d: %s", layer, C.GoString(msg)))
}

//export goHookRouterInput
func goHookRouterInput(handle C.uintptr_t, layer, k C.int, x unsafe.Pointer, xne0, xne1, xnb1 C.int64_t) {
	h := cgo.Handle(handle).Value().(*contextHook)
	defer func() { _ = recover() }() // only a prediction: it must never fail or unwind the decode
	h.user.RouterInput(int(layer), int(k), hookapi.Rows{Data: x, Type: gguf.TypeF32, Len: int64(xne0), Count: int64(xne1), Stride: int64(xnb1)})
}
