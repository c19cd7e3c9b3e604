package binding

/*
#include "shim.h"
*/
import "C"

import (
	"errors"
	"fmt"
	"runtime"
	"strings"
	"unsafe"
)

// Per-sequence primitives for a context with several sequences (ContextParams.NSeqMax), decoded
// together in one batch (Batch.Add with each token's sequence id, Decode). The caller keeps each
// sequence's tokens itself: Tokens and the sequence-0 helpers (Eval, Generate, SaveState) track only
// sequence 0.

// SequenceSize is how many token positions one sequence may hold: n_ctx divided among the
// sequences (llama.cpp's default cache, not unified: each sequence has cells of its own).
func (c *Context) SequenceSize() int {
	cc, err := c.ptr()
	if err != nil {
		return 0
	}
	return int(C.llama_n_ctx_seq(cc))
}

// SequenceEnd is one past the last position sequence seq holds in the cache (0 when empty): after a
// failed decode, what llama.cpp kept of the ubatches that finished.
func (c *Context) SequenceEnd(seq int) (int, error) {
	cc, err := c.ptr()
	if err != nil {
		return 0, err
	}
	return int(C.llama_memory_seq_pos_max(C.llama_get_memory(cc), C.llama_seq_id(seq))) + 1, nil
}

// SaveSequence writes sequence seq's state (its cache cells, or recurrent state) and its tokens to
// path, in llama.cpp's state file format (what SaveState writes for sequence 0).
func (c *Context) SaveSequence(seq int, path string, tokens []Token) error {
	cc, err := c.ptr()
	if err != nil {
		return err
	}
	cpath := C.CString(path)
	defer C.free(unsafe.Pointer(cpath))
	var tp *C.llama_token
	if len(tokens) > 0 {
		tp = (*C.llama_token)(unsafe.Pointer(&tokens[0]))
	}
	n := C.llama_state_seq_save_file(cc, cpath, C.llama_seq_id(seq), tp, C.size_t(len(tokens)))
	runtime.KeepAlive(tokens)
	if n == 0 {
		return fmt.Errorf("save sequence %d to %q: %w", seq, path, &Error{Op: "llama_state_seq_save_file", Msg: "could not write the state file"})
	}
	return nil
}

// ErrOtherSequenceCount: a sequence's state saved from a context with another number of sequences
// (llama.cpp b11669 writes the number of per-sequence KV buffers into the file and refuses another).
// LoadSequence then returns the saved tokens with it, for the caller to evaluate again.
var ErrOtherSequenceCount = errors.New("the state was saved from a context with another number of sequences")

// LoadSequence replaces sequence seq with the state saved in path (by SaveSequence or SaveState,
// same model, compatible cache types) and returns its tokens. On failure the sequence is empty (and
// with ErrOtherSequenceCount the saved tokens are returned).
func (c *Context) LoadSequence(seq int, path string) ([]Token, error) {
	cc, err := c.ptr()
	if err != nil {
		return nil, err
	}
	cpath := C.CString(path)
	defer C.free(unsafe.Pointer(cpath))
	C.llama_memory_seq_rm(C.llama_get_memory(cc), C.llama_seq_id(seq), -1, -1)
	if seq == 0 {
		c.past = c.past[:0]
	}
	buf := make([]Token, max(c.SequenceSize(), 1))
	var n C.size_t
	var r C.size_t
	logged := captureErrors(func() {
		r = C.llama_state_seq_load_file(cc, cpath, C.llama_seq_id(seq), (*C.llama_token)(unsafe.Pointer(&buf[0])), C.size_t(len(buf)), &n)
	})
	runtime.KeepAlive(buf)
	if r == 0 {
		C.llama_memory_seq_rm(C.llama_get_memory(cc), C.llama_seq_id(seq), -1, -1)
		if strings.Contains(logged, "n_stream mismatch") && n > 0 {
			// llama.cpp read the tokens before it refused the cells.
			return append([]Token(nil), buf[:n]...), fmt.Errorf("load sequence %d from %q: %w", seq, path, ErrOtherSequenceCount)
		}
		msg := "not a state file of this model, made with other cache types, or larger than a sequence's context"
		if logged != "" {
			msg += ": " + logged
		}
		return nil, fmt.Errorf("load sequence %d from %q: %w", seq, path, &Error{Op: "llama_state_seq_load_file", Msg: msg})
	}
	toks := append([]Token(nil), buf[:n]...)
	if seq == 0 {
		c.past = append(c.past[:0], toks...)
	}
	return toks, nil
}

// TrimSequence drops sequence seq's positions from keep on (keep 0: all of them). Recurrent models
// cannot drop a part of a sequence: it then empties the sequence and reports false, and the caller
// must evaluate its tokens again.
func (c *Context) TrimSequence(seq, keep int) (bool, error) {
	cc, err := c.ptr()
	if err != nil {
		return false, err
	}
	mem := C.llama_get_memory(cc)
	ok := bool(C.llama_memory_seq_rm(mem, C.llama_seq_id(seq), C.llama_pos(keep), -1))
	if !ok {
		C.llama_memory_seq_rm(mem, C.llama_seq_id(seq), -1, -1)
	}
	kept := keep
	if !ok {
		kept = 0
	}
	if seq == 0 {
		c.past = c.past[:min(kept, len(c.past))]
	}
	return kept == keep, nil
}

// PartialState returns sequence seq's partial state (llama_state_seq_get_data_ext with
// LLAMA_STATE_SEQ_FLAGS_PARTIAL_ONLY): for a recurrent or hybrid model, its recurrent state, which
// cannot be cut back to a prefix the way key-value cells can. Restored with RestorePartialState, it
// puts the sequence back where it was when the state was taken (what llama-server's context
// checkpoints hold).
func (c *Context) PartialState(seq int) ([]byte, error) {
	cc, err := c.ptr()
	if err != nil {
		return nil, err
	}
	const flags = C.LLAMA_STATE_SEQ_FLAGS_PARTIAL_ONLY
	size := int(C.llama_state_seq_get_size_ext(cc, C.llama_seq_id(seq), flags))
	if size == 0 {
		return nil, fmt.Errorf("partial state of sequence %d: %w", seq, &Error{Op: "llama_state_seq_get_size_ext", Msg: "no state"})
	}
	buf := make([]byte, size)
	n := int(C.llama_state_seq_get_data_ext(cc, (*C.uint8_t)(unsafe.Pointer(&buf[0])), C.size_t(size), C.llama_seq_id(seq), flags))
	runtime.KeepAlive(buf)
	if n != size {
		return nil, fmt.Errorf("partial state of sequence %d: %w", seq, &Error{Op: "llama_state_seq_get_data_ext", Msg: fmt.Sprintf("wrote %d of %d bytes", n, size)})
	}
	return buf, nil
}

// RestorePartialState replaces sequence seq's partial state with one PartialState returned (same
// context). The key-value cells are left as they are: the caller then drops the positions the state
// does not cover (TrimSequence from the state's length), which a recurrent memory allows once its
// state sits before them. On failure the sequence is emptied.
func (c *Context) RestorePartialState(seq int, state []byte) error {
	cc, err := c.ptr()
	if err != nil {
		return err
	}
	if len(state) == 0 {
		return fmt.Errorf("restore the partial state of sequence %d: empty state", seq)
	}
	const flags = C.LLAMA_STATE_SEQ_FLAGS_PARTIAL_ONLY
	var n C.size_t
	logged := captureErrors(func() {
		n = C.llama_state_seq_set_data_ext(cc, (*C.uint8_t)(unsafe.Pointer(&state[0])), C.size_t(len(state)), C.llama_seq_id(seq), flags)
	})
	runtime.KeepAlive(state)
	if int(n) != len(state) {
		C.llama_memory_seq_rm(C.llama_get_memory(cc), C.llama_seq_id(seq), -1, -1)
		if seq == 0 {
			c.past = c.past[:0]
		}
		return fmt.Errorf("restore the partial state of sequence %d: %w", seq, &Error{Op: "llama_state_seq_set_data_ext", Msg: strings.TrimSpace(fmt.Sprintf("read %d of %d bytes %s", int(n), len(state), logged))})
	}
	return nil
}
