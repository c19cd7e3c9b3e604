package binding

// Repacked weight layouts for models whose tensors the user places (issue 16; docs/design.md,
// "Repacked layouts"). llama.cpp's default load puts weights its CPU "extra" buffer types support
// (CPU_REPACK here) in their interleaved layouts, which changes the numerics and is faster;
// llama_model_init_from_user never does (docs/notes/repack-probe/FINDINGS.md, Q5), so LoadFromUser
// offers each tensor the layout llama.cpp would pick (hookapi.Tensor.Repacking) and re-homes the
// tensors the UserModel filled in it. repack.c only forwards to ggml.

/*
#include "repack.h"
*/
import "C"

import (
	"fmt"
	"sync"
	"unsafe"

	"github.com/expertsniper/expertsniper/binding/hookapi"
)

var (
	repackOnce  sync.Once
	repackTypes int
)

// repackInit finds the extra buffer types once per process (Init must have run).
func repackInit() int {
	repackOnce.Do(func() { repackTypes = int(C.es_repack_init()) })
	return repackTypes
}

// repackLayout is one weight type and row length in an extra buffer type's layout: what a tensor
// header needs for that buffer type's kernels (its carrier buffer and traits) and what converts raw
// rows into it. It implements hookapi.Layout.
type repackLayout struct {
	carrier C.ggml_backend_buffer_t
	traits  unsafe.Pointer
	typ     C.int
	ne0     int64
	rowSize int64
}

var _ hookapi.Layout = repackLayout{}

// chooseRepack returns the layout llama.cpp's default load would give a weight of type typ and shape
// [ne0, ne1, ne2] used by MUL_MAT_ID (id, the experts) or MUL_MAT; ok is false for the plain layout.
func chooseRepack(typ C.int, ne0, ne1, ne2 int64, id bool) (l repackLayout, ok bool) {
	if repackInit() == 0 {
		return repackLayout{}, false
	}
	var traits unsafe.Pointer
	cid := C.int(0)
	if id {
		cid = 1
	}
	if C.es_repack_choose(typ, C.int64_t(ne0), C.int64_t(ne1), C.int64_t(ne2), cid, &l.carrier, &traits) != 0 {
		return repackLayout{}, false
	}
	l.traits, l.typ, l.ne0 = traits, typ, ne0
	l.rowSize = int64(C.ggml_row_size(C.enum_ggml_type(typ), C.int64_t(ne0)))
	return l, true
}

// Name is the buffer type's name, e.g. "CPU_REPACK".
func (l repackLayout) Name() string { return C.GoString(C.es_repack_name(l.carrier)) }

// RowBytes is one row's size in the file's layout.
func (l repackLayout) RowBytes() int64 { return l.rowSize }

// Fits reports whether rows rows alone convert with l's traits (the same kernels as the whole).
func (l repackLayout) Fits(rows int64) bool {
	var carrier C.ggml_backend_buffer_t
	var traits unsafe.Pointer
	return rows > 0 && C.es_repack_choose(l.typ, C.int64_t(l.ne0), C.int64_t(rows), 1, 0, &carrier, &traits) == 0 &&
		carrier == l.carrier && traits == l.traits
}

// Convert writes src, whole rows in the file's layout, into dst in l's layout through ggml's
// tensor_set on a header the carrier and traits describe (on the C stack: safe for concurrent use on
// distinct destinations; the traits are immutable).
func (l repackLayout) Convert(dst, src []byte) error {
	if len(dst) != len(src) || len(src) == 0 || int64(len(src))%l.rowSize != 0 {
		return fmt.Errorf("repack %d bytes into %d: not whole rows of %d bytes", len(src), len(dst), l.rowSize)
	}
	if C.es_repack_into(l.carrier, l.traits, l.typ, C.int64_t(l.ne0), unsafe.Pointer(&dst[0]), unsafe.Pointer(&src[0]), C.size_t(len(src))) != 0 {
		return fmt.Errorf("repack %d bytes: ggml refused the header", len(src))
	}
	return nil
}

// adopt makes llama.cpp's tensor t compute with l's kernels (its data holds bytes in l's layout):
// its buffer becomes the carrier and its extra the traits. Both must be set: with the carrier but
// no traits the matmul silently computes garbage, and conversions through it segfault.
func (l repackLayout) adopt(t *C.struct_ggml_tensor) {
	t.buffer = l.carrier
	t.extra = l.traits
}

// repackingFor is hookapi.Tensor.Repacking for llama.cpp's tensor t.
func repackingFor(t *C.struct_ggml_tensor) func(id bool) hookapi.Layout {
	return func(id bool) hookapi.Layout {
		if l, ok := chooseRepack(C.int(t._type), int64(t.ne[0]), int64(t.ne[1]), int64(t.ne[2]), id); ok {
			return l
		}
		return nil
	}
}

// adoptLayout applies what the UserModel said of t's bytes (hookapi.Tensor.Layout).
func adoptLayout(t *C.struct_ggml_tensor, layout hookapi.Layout) error {
	if layout == nil {
		return nil
	}
	l, ok := layout.(repackLayout)
	if !ok || l.traits == nil || l.carrier == nil {
		return fmt.Errorf("tensor %s: layout %T is not one Repacking returned", C.GoString(&t.name[0]), layout)
	}
	l.adopt(t)
	return nil
}
