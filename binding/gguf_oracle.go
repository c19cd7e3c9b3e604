package binding

// ggml's own GGUF reader, exposed so that the pure-Go reader (package gguf) and the Go quantizers
// (package modelgen) can be checked against the C implementation they must agree with.

/*
#include <stdlib.h>
#include <ggml.h>
#include <gguf.h>
*/
import "C"

import (
	"fmt"
	"unsafe"
)

// GGUFTensor is one tensor as ggml's gguf reader reports it. Dims always has 4 entries (ggml pads
// missing dimensions with 1).
type GGUFTensor struct {
	Name   string
	Type   uint32
	Dims   [4]int64
	Offset int64 // relative to the data section
}

// GGUFInfo is what ggml's gguf_init_from_file reads from a file's header.
type GGUFInfo struct {
	Version    uint32
	Alignment  int64
	DataOffset int64
	Keys       []string // metadata keys in file order
	Tensors    []GGUFTensor
}

// ReadGGUFWithGGML parses a GGUF header with ggml's reader (no_alloc: tensor data is not read).
func ReadGGUFWithGGML(path string) (*GGUFInfo, error) {
	cpath := C.CString(path)
	defer C.free(unsafe.Pointer(cpath))
	var meta *C.struct_ggml_context
	params := C.struct_gguf_init_params{no_alloc: true, ctx: &meta}
	g := C.gguf_init_from_file(cpath, params)
	if g == nil {
		return nil, fmt.Errorf("ggml's gguf reader rejected %q (ggml's log says why)", path)
	}
	defer C.gguf_free(g)
	if meta != nil {
		defer C.ggml_free(meta)
	}
	info := &GGUFInfo{
		Version:    uint32(C.gguf_get_version(g)),
		Alignment:  int64(C.gguf_get_alignment(g)),
		DataOffset: int64(C.gguf_get_data_offset(g)),
	}
	for i := C.int64_t(0); i < C.gguf_get_n_kv(g); i++ {
		info.Keys = append(info.Keys, C.GoString(C.gguf_get_key(g, i)))
	}
	for i := C.int64_t(0); i < C.gguf_get_n_tensors(g); i++ {
		name := C.gguf_get_tensor_name(g, i)
		t := GGUFTensor{
			Name:   C.GoString(name),
			Type:   uint32(C.gguf_get_tensor_type(g, i)),
			Offset: int64(C.gguf_get_tensor_offset(g, i)),
		}
		tensor := C.ggml_get_tensor(meta, name)
		if tensor == nil {
			return nil, fmt.Errorf("ggml's gguf reader: tensor %q of %q has no ggml tensor", t.Name, path)
		}
		for d := 0; d < 4; d++ {
			t.Dims[d] = int64(tensor.ne[d])
		}
		info.Tensors = append(info.Tensors, t)
	}
	return info, nil
}

// QuantizeWithGGML encodes rows of float32 values into ggml type typ with ggml_quantize_chunk (the
// reference quantizers when no importance matrix is given).
func QuantizeWithGGML(typ uint32, src []float32, perRow int) ([]byte, error) {
	if perRow <= 0 || len(src)%perRow != 0 {
		return nil, fmt.Errorf("quantize: %d values are not whole rows of %d", len(src), perRow)
	}
	gt := C.enum_ggml_type(typ)
	if typ >= uint32(C.GGML_TYPE_COUNT) || C.ggml_blck_size(gt) == 0 {
		return nil, fmt.Errorf("quantize: unknown ggml type %d", typ)
	}
	if int64(perRow)%int64(C.ggml_blck_size(gt)) != 0 {
		return nil, fmt.Errorf("quantize: row of %d is not whole blocks of type %d", perRow, typ)
	}
	rows := len(src) / perRow
	if rows == 0 {
		return nil, nil
	}
	rowSize := int(C.ggml_row_size(gt, C.int64_t(perRow)))
	dst := make([]byte, rows*rowSize)
	csrc := C.malloc(C.size_t(len(src) * 4))
	defer C.free(csrc)
	copy(unsafe.Slice((*float32)(csrc), len(src)), src)
	cdst := C.malloc(C.size_t(len(dst)))
	defer C.free(cdst)
	n := C.ggml_quantize_chunk(gt, (*C.float)(csrc), cdst, 0, C.int64_t(rows), C.int64_t(perRow), nil)
	if int(n) != len(dst) {
		return nil, fmt.Errorf("quantize: ggml wrote %d bytes, want %d", int(n), len(dst))
	}
	copy(dst, unsafe.Slice((*byte)(cdst), len(dst)))
	return dst, nil
}
