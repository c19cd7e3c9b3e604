// Package binding is the Go API over llama.cpp b11669. It is the only package with cgo.
//
// Ownership mirrors llama.h one to one: LoadModel ↔ Model.Close, Model.NewContext ↔ Context.Close,
// NewSampler ↔ Sampler.Close, NewBatch ↔ Batch.Close. Close is idempotent and is the only release
// path; finalizers only report handles that were garbage collected without Close (and panic under
// the invariants build tag). A Model refuses to close while contexts made from it are open.
//
// Thread safety: a Model (metadata, tokenizer, templates) is safe for concurrent use. A Context,
// Sampler or Batch is not: use one Context per goroutine; several contexts per model are fine, each
// with its own KV cache. Init, SetLogger and ApplyChatTemplate are safe anywhere.
//
// Errors: every llama.cpp result code goes through one funnel, *Error{Op, Code}; the sentinels
// ErrNoKVSlot (1), ErrAborted (2) and ErrInvalidBatch (-1) match by code with errors.Is. When a
// context.Context caused an abort the error also wraps ctx.Err(), so errors.Is(err,
// context.Canceled) holds. Calls that llama.cpp reports only as NULL carry the warnings and errors
// it logged meanwhile.
//
// Cancellation: long calls take a context.Context. A decode in progress is stopped through
// llama.cpp's abort_callback, which reads a flag on the C heap that a goroutine sets when the
// context is done (compute threads never call into Go); generation also checks the context
// between tokens, so a cancel stops it within one token. Model loads are aborted through the
// progress callback.
//
// Backends: the first constructor loads ggml's backends from $EXPERTSNIPER_BACKEND_DIR, else from
// the directory build.sh compiled in, else from ggml's default path, and fails with a clear error if
// no CPU backend registered. llama.cpp's log is silent unless SetLogger routes it somewhere.
//
// Numerics: LoadModel keeps llama.cpp's defaults, including use_extra_bufts (weight repacking).
// Bit-exact comparisons with the sniper use WithExtraBufts(false), the plain path.
package binding
