package binding

/*
#include "shim.h"
*/
import "C"

import (
	"context"
	"fmt"
	"unsafe"
)

// Batch is a llama_batch of token ids allocated by llama_batch_init. It is not safe for concurrent
// use. Close frees it.
type Batch struct {
	c        C.struct_llama_batch
	capacity int
	nSeqMax  int
	closed   bool
}

// NewBatch allocates a batch for up to capacity tokens, each in up to nSeqMax sequences.
func NewBatch(capacity, nSeqMax int) (*Batch, error) {
	if capacity <= 0 || nSeqMax <= 0 {
		return nil, fmt.Errorf("new batch: capacity %d and sequences %d must be positive", capacity, nSeqMax)
	}
	b := &Batch{c: C.llama_batch_init(C.int32_t(capacity), 0, C.int32_t(nSeqMax)), capacity: capacity, nSeqMax: nSeqMax}
	setLeakCheck(b, "Batch", func(b *Batch) bool { return !b.closed })
	return b, nil
}

// Len is the number of tokens in the batch.
func (b *Batch) Len() int { return int(b.c.n_tokens) }

// Clear empties the batch.
func (b *Batch) Clear() { b.c.n_tokens = 0 }

// Add appends token tok at position pos to the given sequences; logits requests its output.
func (b *Batch) Add(tok Token, pos int, seqs []int, logits bool) error {
	if b.closed {
		return ErrClosed
	}
	i := int(b.c.n_tokens)
	if i >= b.capacity {
		return fmt.Errorf("batch add: batch is full (%d tokens)", b.capacity)
	}
	if len(seqs) == 0 || len(seqs) > b.nSeqMax {
		return fmt.Errorf("batch add: %d sequence ids (want 1 to %d)", len(seqs), b.nSeqMax)
	}
	unsafe.Slice(b.c.token, b.capacity)[i] = C.llama_token(tok)
	unsafe.Slice(b.c.pos, b.capacity)[i] = C.llama_pos(pos)
	unsafe.Slice(b.c.n_seq_id, b.capacity)[i] = C.int32_t(len(seqs))
	ids := unsafe.Slice(unsafe.Slice(b.c.seq_id, b.capacity)[i], b.nSeqMax)
	for j, s := range seqs {
		ids[j] = C.llama_seq_id(s)
	}
	var l C.int8_t
	if logits {
		l = 1
	}
	unsafe.Slice(b.c.logits, b.capacity)[i] = l
	b.c.n_tokens++
	return nil
}

// Close frees the batch. It is idempotent.
func (b *Batch) Close() error {
	if !b.closed {
		b.closed = true
		C.llama_batch_free(b.c)
	}
	return nil
}

// Decode runs the model on a batch. Cancelling ctx aborts the computation (the error then wraps
// ctx.Err() and matches ErrAborted). On an error, Tokens() is resynchronised with what llama.cpp
// kept in memory. Decode does not update Tokens() for batches built by hand unless they only
// append to sequence 0 at the next positions (Eval does that for you).
func (c *Context) Decode(ctx context.Context, b *Batch) error {
	cc, err := c.ptr()
	if err != nil {
		return err
	}
	if b.closed {
		return fmt.Errorf("decode: batch: %w", ErrClosed)
	}
	if b.Len() == 0 {
		return fmt.Errorf("decode: %w", &Error{Op: "llama_decode", Code: -1, Msg: "empty batch"})
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("decode: %w", err)
	}
	return c.decode(ctx, cc, b)
}

// decode calls llama_decode with the abort flag armed on ctx.
func (c *Context) decode(ctx context.Context, cc *C.struct_llama_context, b *Batch) error {
	disarm := c.abortOn(ctx)
	c.hook.begin(ctx)
	var code int
	// On the context's one compute thread (computethread.go), whichever thread the caller is on.
	c.compute.run(func() { code = int(C.llama_decode(cc, b.c)) })
	hookErr := c.hook.end() // the hook failed (e.g. a streaming read): it set the abort flag (evalhook.go)
	disarm()
	if code == 0 && hookErr != nil {
		code = 2 // never let logits computed on missing weights through
	}
	if code != 0 {
		var cause error
		if code == 2 {
			cause = ctx.Err()
			if hookErr != nil {
				cause = hookErr
			}
		}
		c.resyncPast()
		return decodeError("llama_decode", code, cause)
	}
	c.lastOutputs = 0
	for _, l := range unsafe.Slice(b.c.logits, b.Len()) {
		if l != 0 {
			c.lastOutputs++
		}
	}
	return nil
}

// resyncPast trims the token history to what sequence 0 holds after a failed decode (llama.cpp
// keeps ubatches that finished before an abort).
func (c *Context) resyncPast() {
	maxPos := int(C.llama_memory_seq_pos_max(C.llama_get_memory(c.c), 0))
	if maxPos+1 < len(c.past) {
		c.past = c.past[:maxPos+1]
	}
}

// LogitsFunc receives the logits of one evaluated position (a copy, owned by the callee).
type LogitsFunc func(pos int, logits []float32) error

// Eval appends tokens to sequence 0 and runs the model on them, split into batches of n_batch. It
// computes the logits of the last token (read them with Logits(-1) or sample); with onLogits set it
// computes the logits of every token and passes each, in order, to onLogits.
func (c *Context) Eval(ctx context.Context, tokens []Token, onLogits LogitsFunc) error {
	if _, err := c.ptr(); err != nil {
		return err
	}
	if len(tokens) == 0 {
		return nil
	}
	if len(c.past)+len(tokens) > c.nCtx {
		return fmt.Errorf("eval %d tokens after %d: %w", len(tokens), len(c.past), &Error{Op: "llama_decode", Code: 1,
			Msg: fmt.Sprintf("the context holds %d tokens", c.nCtx)})
	}
	nv := c.model.VocabSize()
	for i, t := range tokens {
		if t < 0 || int(t) >= nv {
			return fmt.Errorf("eval: token %d at index %d is outside the vocabulary (0..%d)", t, i, nv-1)
		}
	}
	b, err := NewBatch(c.nBatch, 1)
	if err != nil {
		return err
	}
	defer b.Close()
	seq0 := []int{0}
	for start := 0; start < len(tokens); start += c.nBatch {
		end := min(start+c.nBatch, len(tokens))
		b.Clear()
		base := len(c.past)
		for i := start; i < end; i++ {
			want := onLogits != nil || i == len(tokens)-1
			if err := b.Add(tokens[i], base+i-start, seq0, want); err != nil {
				return err
			}
		}
		if err := c.Decode(ctx, b); err != nil {
			return fmt.Errorf("eval tokens %d..%d of %d: %w", start, end, len(tokens), err)
		}
		c.past = append(c.past, tokens[start:end]...)
		if onLogits != nil {
			for i := 0; i < end-start; i++ {
				l, err := c.Logits(i)
				if err != nil {
					return err
				}
				if err := onLogits(base+i, l); err != nil {
					return err
				}
			}
		}
	}
	return nil
}

// Logits returns a copy of the logits of output i of the last decode (negative i counts from the
// end: -1 is the last output).
func (c *Context) Logits(i int) ([]float32, error) {
	cc, err := c.ptr()
	if err != nil {
		return nil, err
	}
	p := C.llama_get_logits_ith(cc, C.int32_t(i))
	if p == nil {
		return nil, &Error{Op: "llama_get_logits_ith", Code: i, Msg: fmt.Sprintf("no logits for output %d of the last decode (%d outputs)", i, c.lastOutputs)}
	}
	n := c.model.VocabSize()
	return append([]float32(nil), unsafe.Slice((*float32)(unsafe.Pointer(p)), n)...), nil
}
