package binding

/*
#include "shim.h"
*/
import "C"

import (
	"context"
	"errors"
	"fmt"
	"unsafe"
)

// ErrNoEmbeddings is returned by Embeddings on a context made without WithEmbeddings(pooling) or
// with PoolingNone, and for models that cannot produce them.
var ErrNoEmbeddings = errors.New("embeddings not available")

// Embeddings evaluates tokens as a fresh sequence 0 and returns its pooled embedding. The context
// must be created with WithEmbeddings and a pooling other than PoolingNone; the whole input must fit
// in one physical batch (n_ubatch), as llama.cpp pools within a ubatch. The cache is cleared.
func (c *Context) Embeddings(ctx context.Context, tokens []Token) ([]float32, error) {
	cc, err := c.ptr()
	if err != nil {
		return nil, err
	}
	if !c.params.Embeddings {
		return nil, fmt.Errorf("embeddings: %w: the context was created without WithEmbeddings", ErrNoEmbeddings)
	}
	if C.llama_pooling_type(cc) == C.LLAMA_POOLING_TYPE_NONE {
		return nil, fmt.Errorf("embeddings: %w: the context has no pooling (use WithEmbeddings(PoolingMean))", ErrNoEmbeddings)
	}
	if len(tokens) == 0 {
		return nil, fmt.Errorf("embeddings: no tokens")
	}
	if ub := int(C.llama_n_ubatch(cc)); len(tokens) > ub {
		return nil, fmt.Errorf("embeddings: %d tokens exceed the physical batch of %d (raise WithBatch's n_ubatch)", len(tokens), ub)
	}
	if err := c.ClearMemory(); err != nil {
		return nil, err
	}
	b, err := NewBatch(len(tokens), 1)
	if err != nil {
		return nil, err
	}
	defer b.Close()
	for i, t := range tokens {
		if err := b.Add(t, i, []int{0}, true); err != nil {
			return nil, err
		}
	}
	if err := c.Decode(ctx, b); err != nil {
		return nil, fmt.Errorf("embeddings: %w", err)
	}
	defer c.ClearMemory()
	p := C.llama_get_embeddings_seq(cc, 0)
	if p == nil {
		return nil, fmt.Errorf("embeddings: %w: llama.cpp returned none for the sequence", ErrNoEmbeddings)
	}
	n := int(C.llama_model_n_embd_out(C.llama_get_model(cc)))
	return append([]float32(nil), unsafe.Slice((*float32)(unsafe.Pointer(p)), n)...), nil
}
