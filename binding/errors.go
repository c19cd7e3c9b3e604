package binding

import (
	"errors"
	"fmt"
)

// Error is a failed llama.cpp call: Op names the C function (or the binding method) and Code is its
// documented result code. Every C result code goes through newError so that callers can match codes
// with errors.Is against the sentinels below, and cancellations with errors.Is(err, context.Canceled).
type Error struct {
	Op   string // e.g. "llama_decode"
	Code int    // the C return value
	Msg  string // what went wrong, in words (may be empty)
	// cause is the error behind the code, e.g. ctx.Err() when the context caused an abort.
	cause error
}

func (e *Error) Error() string {
	s := fmt.Sprintf("binding: %s failed (code %d)", e.Op, e.Code)
	if e.Msg != "" {
		s = fmt.Sprintf("binding: %s: %s (code %d)", e.Op, e.Msg, e.Code)
	}
	if e.cause != nil {
		s += ": " + e.cause.Error()
	}
	return s
}

// Unwrap exposes the cause (ctx.Err() for aborts caused by the context).
func (e *Error) Unwrap() error { return e.cause }

// Is matches the sentinels by code, so errors.Is(err, ErrNoKVSlot) works on any *Error with code 1
// whatever its Op.
func (e *Error) Is(target error) bool {
	t, ok := target.(*Error)
	if !ok {
		return false
	}
	return t.Op == "" && t.Code == e.Code
}

// Sentinels for llama_decode's documented result codes. They carry no Op; compare with errors.Is.
var (
	// ErrNoKVSlot: the KV cache has no room for the batch (llama_decode returned 1). The context
	// needs a larger n_ctx or memory must be freed.
	ErrNoKVSlot = &Error{Code: 1, Msg: "no KV cache slot for the batch"}
	// ErrAborted: the abort callback stopped the computation (llama_decode returned 2).
	ErrAborted = &Error{Code: 2, Msg: "aborted"}
	// ErrInvalidBatch: llama_decode rejected the batch (returned -1).
	ErrInvalidBatch = &Error{Code: -1, Msg: "invalid batch"}
)

// ErrClosed is returned by methods called after Close.
var ErrClosed = errors.New("binding: use after Close")

// decodeError maps llama_decode/llama_encode's return value to an error (nil for 0).
func decodeError(op string, code int, cause error) error {
	if code == 0 {
		return nil
	}
	e := &Error{Op: op, Code: code}
	switch code {
	case 1:
		e.Msg = ErrNoKVSlot.Msg
	case 2:
		e.Msg = ErrAborted.Msg
		e.cause = cause
	case -1:
		e.Msg = ErrInvalidBatch.Msg
	default:
		e.Msg = "fatal error in the computation"
	}
	return e
}
