package binding

/*
#include "shim.h"
*/
import "C"

import (
	"sync/atomic"
)

var abortHandler atomic.Pointer[func(string)]

// SetAbortHandler has fn called with ggml's message when llama.cpp or ggml is about to end the
// process (GGML_ABORT, a failed GGML_ASSERT; e.g. the RPC client losing a worker mid-run). fn cannot
// prevent the abort: it is the last chance to say why (ggml no longer prints the message itself, so
// fn should). It runs on the thread that aborts, possibly not a Go one; nil restores ggml's printing.
func SetAbortHandler(fn func(msg string)) error {
	if err := Init(); err != nil {
		return err
	}
	if fn == nil {
		abortHandler.Store(nil)
		C.ggml_set_abort_callback(nil)
		return nil
	}
	abortHandler.Store(&fn)
	C.ggml_set_abort_callback(C.es_abort_msg_fn())
	return nil
}

//export goAbortTramp
func goAbortTramp(msg *C.char) {
	if h := abortHandler.Load(); h != nil {
		(*h)(C.GoString(msg))
	}
}
