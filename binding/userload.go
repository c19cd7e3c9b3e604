package binding

// LoadFromUser: a model created with llama_model_init_from_user, whose tensors a hookapi.UserModel
// places (fills llama.cpp's memory, or points a tensor at memory of its own), and whose contexts the
// UserModel may watch with an evaluation hook (evalhook.go). The C side (hook.c) only forwards.

/*
#include "hook.h"
#include "bigalloc.h"
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

// LoadFromUser creates the model described by the GGUF file at path with llama_model_init_from_user:
// llama.cpp allocates the tensors its graph needs and um places each one (hookapi.UserModel). The
// metadata checks LoadModel makes come first. llama.cpp allocates every tensor in its plain CPU buffer
// (use_extra_bufts is forced off; init_from_user ignores it anyway): um may fill a tensor in the
// repacked layout llama.cpp's default load would give it (hookapi.Tensor.Repacking, repack.go). LoadFromUser owns um from the
// call on: the model closes it after llama.cpp freed the model, and a failed load closes it at once.
func LoadFromUser(ctx context.Context, path string, um hookapi.UserModel, opts ...ModelOption) (_ *Model, err error) {
	defer func() {
		if err != nil {
			um.Close()
		}
	}()
	p, err := checkLoad(ctx, path, opts)
	if err != nil {
		return nil, err
	}

	cpath := C.CString(path)
	defer C.free(unsafe.Pointer(cpath))
	var g *C.struct_gguf_context
	logged := captureErrors(func() { g = C.es_gguf_open(cpath) })
	if g == nil {
		return nil, fmt.Errorf("load model %q: %w", path, &Error{Op: "gguf_init_from_file", Msg: "ggml could not read the GGUF header: " + logged})
	}
	defer func() {
		if err != nil {
			C.gguf_free(g)
		}
	}()
	for _, d := range um.Declared() {
		cname := C.CString(d.Name)
		rc := C.es_gguf_declare(g, cname, C.int(d.Type), C.int64_t(d.Ne[0]), C.int64_t(d.Ne[1]), C.int64_t(d.Ne[2]))
		C.free(unsafe.Pointer(cname))
		if rc != 0 {
			return nil, fmt.Errorf("load model %q: declare %s: out of memory", path, d.Name)
		}
	}

	ld := &userLoader{um: um}
	defer func() {
		if err != nil { // no model holds them
			ld.freeOwned()
		}
	}()
	handle := cgo.NewHandle(ld)
	defer handle.Delete()

	p.NoExtraBufts = true
	cp, err := p.toC(ctx)
	if err != nil {
		return nil, fmt.Errorf("load model %q: %w", path, err)
	}
	defer cp.free()
	var cm *C.struct_llama_model
	logged = captureErrors(func() {
		C.es_big_alloc_arm(1)
		cm = C.es_init_from_user(g, C.uintptr_t(handle), cp.C)
		C.es_big_alloc_arm(0)
	})
	if cm != nil && ld.err != nil {
		C.llama_model_free(cm)
		cm = nil
	}
	if cm == nil {
		if ld.err != nil {
			return nil, fmt.Errorf("load model %q: %w", path, ld.err)
		}
		if err := ctx.Err(); err != nil {
			return nil, fmt.Errorf("load model %q: cancelled: %w", path, err)
		}
		msg := "llama.cpp could not create the model"
		if logged != "" {
			msg += ": " + logged
		}
		return nil, fmt.Errorf("load model %q: %w", path, &Error{Op: "llama_model_init_from_user", Msg: msg})
	}
	if err := um.Loaded(); err != nil {
		C.llama_model_free(cm)
		return nil, fmt.Errorf("load model %q: %w", path, err)
	}
	m := newModelFromC(cm, path)
	m.user = um
	owned := ld.owned
	m.addOnClose(func() {
		C.gguf_free(g)
		um.Close()
		for _, p := range owned {
			C.free(p)
		}
	})
	return m, nil
}

// userLoader forwards each tensor llama.cpp allocates to the UserModel (set_tensor_data runs
// synchronously, once per tensor, on the loading thread). The first error stops further work and
// fails the load.
type userLoader struct {
	um  hookapi.UserModel
	err error
	// owned is C memory given to tensors (hookapi.Tensor.Alloc), freed with the model.
	owned []unsafe.Pointer
}

func (ld *userLoader) freeOwned() {
	for _, p := range ld.owned {
		C.free(p)
	}
	ld.owned = nil
}

//export goSetTensorData
func goSetTensorData(handle C.uintptr_t, t *C.struct_ggml_tensor) {
	ld := cgo.Handle(handle).Value().(*userLoader)
	if ld.err != nil {
		return
	}
	defer func() { // a panic must never unwind through llama.cpp's frames
		if r := recover(); r != nil {
			ld.err = fmt.Errorf("load tensor: internal error: %v", r)
		}
	}()
	if err := ld.place(t); err != nil {
		ld.err = err
	}
}

// place describes t to the UserModel and applies where it put the tensor's data.
func (ld *userLoader) place(t *C.struct_ggml_tensor) error {
	ut := hookapi.Tensor{Name: C.GoString(&t.name[0]), Type: gguf.Type(t._type), Size: int64(C.ggml_nbytes(t)), Data: t.data}
	for d := 0; d < 4; d++ {
		ut.Ne[d], ut.Nb[d] = int64(t.ne[d]), int64(t.nb[d])
	}
	ut.Alloc = func(size int64) (unsafe.Pointer, error) {
		if size <= 0 {
			return nil, fmt.Errorf("allocate %d bytes for tensor %s", size, ut.Name)
		}
		mem := C.calloc(C.size_t(size), 1)
		if mem == nil {
			return nil, fmt.Errorf("allocate %d bytes for tensor %s: out of memory", size, ut.Name)
		}
		ld.owned = append(ld.owned, mem)
		return mem, nil
	}
	ut.ToFloat32 = func(out []float32) error {
		if int64(len(out)) < ut.Ne[0]*ut.Ne[1] || ut.Data == nil {
			return fmt.Errorf("convert tensor %s to float: %d values do not hold [%d,%d]", ut.Name, len(out), ut.Ne[0], ut.Ne[1])
		}
		if len(out) == 0 {
			return nil
		}
		if C.es_rows_to_float(ut.Data, C.int(ut.Type), C.int64_t(ut.Ne[0]), C.int64_t(ut.Ne[1]), C.size_t(ut.Nb[1]), (*C.float)(unsafe.Pointer(&out[0]))) != 0 {
			return fmt.Errorf("convert tensor %s to float: ggml has no conversion from %s", ut.Name, ut.Type)
		}
		return nil
	}
	ut.Repacking = repackingFor(t)
	if err := ld.um.SetTensorData(&ut); err != nil {
		return err
	}
	if err := adoptLayout(t, ut.Layout); err != nil {
		return err
	}
	if ut.Data != t.data {
		if t.data != nil {
			C.es_big_alloc_untouched(t.data, C.size_t(ut.Size)) // llama.cpp's place for it stays unused
		}
		t.data = ut.Data
	}
	for d := 0; d < 4; d++ {
		t.ne[d], t.nb[d] = C.int64_t(ut.Ne[d]), C.size_t(ut.Nb[d])
	}
	return nil
}

// bigAllocations counts llama.cpp allocations bigalloc.c served with unreserved memory (Linux).
func bigAllocations() int { return int(C.es_big_alloc_count()) }
