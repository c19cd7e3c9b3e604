// Package gguf reads and writes GGUF files (versions 2 and 3, little-endian) the way ggml b11669 does.
// The reader loads only the header, the metadata and the tensor table, never tensor data, and rejects
// malformed input with an error that names the problem and its file offset. The writer streams tensor
// data, so a file of any size can be written without holding it in memory.
package gguf

import (
	"bufio"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"math/bits"
	"os"
	"sort"
)

const (
	// Magic is the first four bytes of every GGUF file.
	Magic = "GGUF"
	// DefaultAlignment applies when general.alignment is absent.
	DefaultAlignment = 32
	// MaxDims is ggml's GGML_MAX_DIMS.
	MaxDims = 4
	// MaxNameLen is the longest tensor name ggml accepts (GGML_MAX_NAME minus the terminating NUL).
	MaxNameLen = 63
	// KeyAlignment is the metadata key that sets the data alignment.
	KeyAlignment = "general.alignment"
)

// The smallest encodings, used to bound counts by the bytes that remain in the file before anything
// is allocated from a count.
const (
	minKVBytes         = 8 + 4 + 1     // key length, type, one-byte value
	minTensorInfoBytes = 8 + 4 + 4 + 8 // name length, n_dims (0 dims), type, offset
)

// ErrMalformed is matched (errors.Is) by every error that reports a problem in the file's contents.
var ErrMalformed = errors.New("malformed GGUF")

// FormatError reports what is wrong in a file and at which byte offset.
type FormatError struct {
	Offset int64
	Msg    string
}

func (e *FormatError) Error() string {
	return fmt.Sprintf("malformed GGUF at offset %d: %s", e.Offset, e.Msg)
}

func (e *FormatError) Is(target error) bool { return target == ErrMalformed }

// TensorInfo describes one tensor. Dims holds ne[0..n): ne[0] is the contiguous (row) dimension.
type TensorInfo struct {
	Name   string
	Type   Type
	Dims   []int64
	Offset int64 // relative to the start of the data section
}

// Elements is the product of the dimensions.
func (t TensorInfo) Elements() int64 {
	n := int64(1)
	for _, d := range t.Dims {
		n *= d
	}
	return n
}

// Bytes is the size of the tensor's data (ggml_nbytes for a contiguous tensor).
func (t TensorInfo) Bytes() int64 {
	if t.Type.BlockSize() == 0 {
		return 0
	}
	return t.Elements() / int64(t.Type.BlockSize()) * int64(t.Type.TypeSize())
}

// File is the parsed header of a GGUF file.
type File struct {
	Version    uint32
	KVs        []KV         // in file order
	Tensors    []TensorInfo // in file order
	Alignment  int64        // general.alignment or 32
	DataOffset int64        // absolute file offset of the data section
	FileSize   int64

	kvIndex     map[string]int
	tensorIndex map[string]int
}

// Open reads the header, metadata and tensor table of the GGUF file at path.
func Open(path string) (*File, error) {
	fh, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open GGUF: %w", err)
	}
	defer fh.Close()
	st, err := fh.Stat()
	if err != nil {
		return nil, fmt.Errorf("stat GGUF %q: %w", path, err)
	}
	if !st.Mode().IsRegular() {
		return nil, fmt.Errorf("read GGUF %q: not a regular file", path)
	}
	f, err := Read(fh, st.Size())
	if err != nil {
		return nil, fmt.Errorf("read GGUF %q: %w", path, err)
	}
	return f, nil
}

// Read parses a GGUF file of size bytes from r.
func Read(r io.ReaderAt, size int64) (*File, error) {
	if size < 0 {
		return nil, fmt.Errorf("read GGUF: negative size %d", size)
	}
	d := &decoder{r: bufio.NewReaderSize(io.NewSectionReader(r, 0, size), 1<<16), size: size}
	f, err := d.file()
	if err != nil {
		return nil, err
	}
	return f, nil
}

type decoder struct {
	r    *bufio.Reader
	pos  int64
	size int64
	buf  [8]byte
}

func (d *decoder) fail(format string, args ...any) error {
	return &FormatError{Offset: d.pos, Msg: fmt.Sprintf(format, args...)}
}

func (d *decoder) remaining() int64 { return d.size - d.pos }

// bytes reads exactly n bytes; what names the field for the error.
func (d *decoder) bytes(dst []byte, what string) error {
	if int64(len(dst)) > d.remaining() {
		return d.fail("truncated: %s needs %d bytes, only %d remain in a file of %d bytes",
			what, len(dst), d.remaining(), d.size)
	}
	n, err := io.ReadFull(d.r, dst)
	d.pos += int64(n)
	if err != nil {
		return fmt.Errorf("read %s at offset %d: %w", what, d.pos, err)
	}
	return nil
}

func (d *decoder) u8(what string) (uint8, error) {
	err := d.bytes(d.buf[:1], what)
	return d.buf[0], err
}

func (d *decoder) u16(what string) (uint16, error) {
	err := d.bytes(d.buf[:2], what)
	return binary.LittleEndian.Uint16(d.buf[:2]), err
}

func (d *decoder) u32(what string) (uint32, error) {
	err := d.bytes(d.buf[:4], what)
	return binary.LittleEndian.Uint32(d.buf[:4]), err
}

func (d *decoder) u64(what string) (uint64, error) {
	err := d.bytes(d.buf[:8], what)
	return binary.LittleEndian.Uint64(d.buf[:8]), err
}

func (d *decoder) str(what string) (string, error) {
	start := d.pos
	n, err := d.u64(what + " length")
	if err != nil {
		return "", err
	}
	if n > uint64(d.remaining()) {
		d.pos = start
		return "", d.fail("%s length %d runs past the end of the file (%d bytes remain)", what, n, d.remaining()-8)
	}
	b := make([]byte, n)
	if err := d.bytes(b, what); err != nil {
		return "", err
	}
	return string(b), nil
}

// count reads a uint64 count of items of at least minSize bytes each and rejects counts the rest of
// the file cannot hold, so that no allocation is ever sized by an unchecked number.
func (d *decoder) count(what string, minSize int) (int, error) {
	start := d.pos
	n, err := d.u64(what)
	if err != nil {
		return 0, err
	}
	if n > uint64(d.remaining())/uint64(minSize) {
		d.pos = start
		return 0, d.fail("%s %d is impossible: %d bytes remain and each entry takes at least %d",
			what, n, d.remaining()-8, minSize)
	}
	return int(n), nil
}

func (d *decoder) file() (*File, error) {
	var magic [4]byte
	if err := d.bytes(magic[:], "magic"); err != nil {
		if d.size == 0 {
			return nil, &FormatError{Msg: "empty file"}
		}
		return nil, err
	}
	if string(magic[:]) != Magic {
		d.pos = 0
		return nil, d.fail("bad magic %q (want %q): not a GGUF file", magic[:], Magic)
	}
	version, err := d.u32("version")
	if err != nil {
		return nil, err
	}
	switch {
	case version == 2 || version == 3:
	case version == 1:
		return nil, d.fail("GGUF version 1 is not supported (ggml reads versions 2 and 3)")
	case version&0xFFFF == 0 && (bits.ReverseBytes32(version) == 2 || bits.ReverseBytes32(version) == 3):
		return nil, d.fail("big-endian GGUF files are not supported")
	default:
		return nil, d.fail("unsupported GGUF version %d (supported: 2, 3)", version)
	}
	f := &File{Version: version, FileSize: d.size, Alignment: DefaultAlignment}

	nTensors, err := d.count("tensor count", minTensorInfoBytes)
	if err != nil {
		return nil, err
	}
	nKV, err := d.count("metadata entry count", minKVBytes)
	if err != nil {
		return nil, err
	}
	// The two counts share the rest of the file.
	if int64(nTensors)*minTensorInfoBytes+int64(nKV)*minKVBytes > d.remaining() {
		return nil, d.fail("%d tensors and %d metadata entries cannot fit in the %d bytes that remain",
			nTensors, nKV, d.remaining())
	}

	f.KVs = make([]KV, 0, nKV)
	f.kvIndex = make(map[string]int, nKV)
	for i := 0; i < nKV; i++ {
		kvStart := d.pos
		kv, err := d.kv(i)
		if err != nil {
			return nil, err
		}
		if _, dup := f.kvIndex[kv.Key]; dup {
			return nil, &FormatError{Offset: kvStart, Msg: fmt.Sprintf("duplicate metadata key %q", kv.Key)}
		}
		if kv.Key == KeyAlignment {
			a, ok := kv.Value.(uint32)
			if !ok {
				return nil, &FormatError{Offset: kvStart, Msg: fmt.Sprintf("%s must be uint32, not %T", KeyAlignment, kv.Value)}
			}
			if a == 0 || a&(a-1) != 0 {
				return nil, &FormatError{Offset: kvStart, Msg: fmt.Sprintf("%s %d is not a power of two", KeyAlignment, a)}
			}
			f.Alignment = int64(a)
		}
		f.kvIndex[kv.Key] = len(f.KVs)
		f.KVs = append(f.KVs, kv)
	}

	f.Tensors = make([]TensorInfo, 0, nTensors)
	f.tensorIndex = make(map[string]int, nTensors)
	for i := 0; i < nTensors; i++ {
		infoStart := d.pos
		ti, err := d.tensorInfo(i, f.Alignment)
		if err != nil {
			return nil, err
		}
		if _, dup := f.tensorIndex[ti.Name]; dup {
			return nil, &FormatError{Offset: infoStart, Msg: fmt.Sprintf("duplicate tensor name %q", ti.Name)}
		}
		f.tensorIndex[ti.Name] = len(f.Tensors)
		f.Tensors = append(f.Tensors, ti)
	}

	f.DataOffset = alignUp(d.pos, f.Alignment)
	if err := f.checkData(); err != nil {
		return nil, err
	}
	return f, nil
}

func (d *decoder) kv(i int) (KV, error) {
	key, err := d.str(fmt.Sprintf("key of metadata entry %d", i))
	if err != nil {
		return KV{}, err
	}
	if key == "" {
		return KV{}, d.fail("metadata entry %d has an empty key", i)
	}
	typStart := d.pos
	t, err := d.u32(fmt.Sprintf("type of %q", key))
	if err != nil {
		return KV{}, err
	}
	typ := ValueType(t)
	if typ == ValueArray {
		et, err := d.u32(fmt.Sprintf("element type of %q", key))
		if err != nil {
			return KV{}, err
		}
		elem := ValueType(et)
		if elem == ValueArray {
			return KV{}, d.fail("metadata %q is a nested array, which ggml does not read", key)
		}
		if elem.size() == 0 {
			return KV{}, d.fail("metadata %q has unknown array element type %d", key, et)
		}
		n, err := d.count(fmt.Sprintf("element count of %q", key), elem.size())
		if err != nil {
			return KV{}, err
		}
		v, err := d.array(key, elem, n)
		return KV{Key: key, Value: v}, err
	}
	if typ.size() == 0 {
		d.pos = typStart
		return KV{}, d.fail("metadata %q has unknown value type %d", key, t)
	}
	v, err := d.scalar(key, typ)
	return KV{Key: key, Value: v}, err
}

func (d *decoder) scalar(key string, typ ValueType) (any, error) {
	what := fmt.Sprintf("value of %q", key)
	switch typ {
	case ValueUint8:
		return d.u8(what)
	case ValueInt8:
		v, err := d.u8(what)
		return int8(v), err
	case ValueUint16:
		return d.u16(what)
	case ValueInt16:
		v, err := d.u16(what)
		return int16(v), err
	case ValueUint32:
		return d.u32(what)
	case ValueInt32:
		v, err := d.u32(what)
		return int32(v), err
	case ValueUint64:
		return d.u64(what)
	case ValueInt64:
		v, err := d.u64(what)
		return int64(v), err
	case ValueFloat32:
		v, err := d.u32(what)
		return math.Float32frombits(v), err
	case ValueFloat64:
		v, err := d.u64(what)
		return math.Float64frombits(v), err
	case ValueBool:
		v, err := d.u8(what)
		if err == nil && v > 1 {
			d.pos--
			return nil, d.fail("value of %q is not a bool (byte %d)", key, v)
		}
		return v == 1, err
	case ValueString:
		return d.str(what)
	}
	return nil, d.fail("metadata %q has unknown value type %d", key, typ)
}

// array reads n elements (n already checked against the remaining bytes).
func (d *decoder) array(key string, elem ValueType, n int) (any, error) {
	what := fmt.Sprintf("elements of %q", key)
	if elem == ValueString {
		out := make([]string, n)
		for i := range out {
			s, err := d.str(fmt.Sprintf("element %d of %q", i, key))
			if err != nil {
				return nil, err
			}
			out[i] = s
		}
		return out, nil
	}
	raw := make([]byte, n*elem.size())
	if err := d.bytes(raw, what); err != nil {
		return nil, err
	}
	le := binary.LittleEndian
	switch elem {
	case ValueUint8:
		return raw, nil
	case ValueInt8:
		out := make([]int8, n)
		for i := range out {
			out[i] = int8(raw[i])
		}
		return out, nil
	case ValueBool:
		out := make([]bool, n)
		for i := range out {
			if raw[i] > 1 {
				return nil, &FormatError{Offset: d.pos - int64(n) + int64(i), Msg: fmt.Sprintf("element %d of %q is not a bool (byte %d)", i, key, raw[i])}
			}
			out[i] = raw[i] == 1
		}
		return out, nil
	case ValueUint16:
		out := make([]uint16, n)
		for i := range out {
			out[i] = le.Uint16(raw[2*i:])
		}
		return out, nil
	case ValueInt16:
		out := make([]int16, n)
		for i := range out {
			out[i] = int16(le.Uint16(raw[2*i:]))
		}
		return out, nil
	case ValueUint32:
		out := make([]uint32, n)
		for i := range out {
			out[i] = le.Uint32(raw[4*i:])
		}
		return out, nil
	case ValueInt32:
		out := make([]int32, n)
		for i := range out {
			out[i] = int32(le.Uint32(raw[4*i:]))
		}
		return out, nil
	case ValueFloat32:
		out := make([]float32, n)
		for i := range out {
			out[i] = math.Float32frombits(le.Uint32(raw[4*i:]))
		}
		return out, nil
	case ValueUint64:
		out := make([]uint64, n)
		for i := range out {
			out[i] = le.Uint64(raw[8*i:])
		}
		return out, nil
	case ValueInt64:
		out := make([]int64, n)
		for i := range out {
			out[i] = int64(le.Uint64(raw[8*i:]))
		}
		return out, nil
	case ValueFloat64:
		out := make([]float64, n)
		for i := range out {
			out[i] = math.Float64frombits(le.Uint64(raw[8*i:]))
		}
		return out, nil
	}
	return nil, d.fail("metadata %q has unknown array element type %d", key, elem)
}

func (d *decoder) tensorInfo(i int, alignment int64) (TensorInfo, error) {
	name, err := d.str(fmt.Sprintf("name of tensor %d", i))
	if err != nil {
		return TensorInfo{}, err
	}
	if len(name) > MaxNameLen {
		return TensorInfo{}, d.fail("tensor %d name %q is %d bytes, longer than ggml's limit of %d", i, name, len(name), MaxNameLen)
	}
	nDims, err := d.u32(fmt.Sprintf("dimension count of tensor %q", name))
	if err != nil {
		return TensorInfo{}, err
	}
	if nDims > MaxDims {
		return TensorInfo{}, d.fail("tensor %q has %d dimensions, more than ggml's %d", name, nDims, MaxDims)
	}
	ti := TensorInfo{Name: name, Dims: make([]int64, nDims)}
	elements := int64(1)
	for j := range ti.Dims {
		v, err := d.u64(fmt.Sprintf("dimension %d of tensor %q", j, name))
		if err != nil {
			return TensorInfo{}, err
		}
		ne := int64(v)
		if ne < 0 {
			return TensorInfo{}, d.fail("tensor %q dimension %d is negative (%d)", name, j, ne)
		}
		if ne != 0 && elements > math.MaxInt64/ne {
			return TensorInfo{}, d.fail("tensor %q: element count overflows int64 (dims %v...)", name, ti.Dims[:j+1])
		}
		ti.Dims[j] = ne
		elements *= ne
	}
	t, err := d.u32(fmt.Sprintf("type of tensor %q", name))
	if err != nil {
		return TensorInfo{}, err
	}
	ti.Type = Type(t)
	if !ti.Type.Valid() {
		return TensorInfo{}, d.fail("tensor %q has unknown or removed type %d", name, t)
	}
	if bs := int64(ti.Type.BlockSize()); len(ti.Dims) > 0 && ti.Dims[0]%bs != 0 {
		return TensorInfo{}, d.fail("tensor %q: ne[0]=%d is not a multiple of the %s block size %d", name, ti.Dims[0], ti.Type, bs)
	}
	off, err := d.u64(fmt.Sprintf("offset of tensor %q", name))
	if err != nil {
		return TensorInfo{}, err
	}
	if off > uint64(d.size) {
		return TensorInfo{}, d.fail("tensor %q offset %d is beyond the end of the file (%d bytes)", name, off, d.size)
	}
	ti.Offset = int64(off)
	if ti.Offset%alignment != 0 {
		return TensorInfo{}, d.fail("tensor %q offset %d is not a multiple of the alignment %d", name, ti.Offset, alignment)
	}
	return ti, nil
}

// checkData verifies that every tensor's bytes lie inside the file and that no two tensors overlap.
func (f *File) checkData() error {
	if len(f.Tensors) == 0 {
		return nil
	}
	if f.DataOffset > f.FileSize {
		return &FormatError{Offset: f.DataOffset, Msg: fmt.Sprintf("data section starts at %d, past the end of the file (%d bytes)", f.DataOffset, f.FileSize)}
	}
	dataSize := f.FileSize - f.DataOffset
	order := make([]int, len(f.Tensors))
	for i := range order {
		order[i] = i
	}
	for _, t := range f.Tensors {
		if t.Bytes() > dataSize || t.Offset > dataSize-t.Bytes() {
			return &FormatError{Offset: f.DataOffset + t.Offset, Msg: fmt.Sprintf(
				"tensor %q (%d bytes at data offset %d) runs past the end of the file: the data section holds %d bytes",
				t.Name, t.Bytes(), t.Offset, dataSize)}
		}
	}
	sort.Slice(order, func(a, b int) bool { return f.Tensors[order[a]].Offset < f.Tensors[order[b]].Offset })
	for k := 1; k < len(order); k++ {
		prev, cur := f.Tensors[order[k-1]], f.Tensors[order[k]]
		if prev.Bytes() > 0 && cur.Bytes() > 0 && prev.Offset+prev.Bytes() > cur.Offset {
			return &FormatError{Offset: f.DataOffset + cur.Offset, Msg: fmt.Sprintf(
				"tensor %q overlaps tensor %q", cur.Name, prev.Name)}
		}
	}
	return nil
}

func alignUp(n, a int64) int64 { return (n + a - 1) / a * a }

// Get returns the value of a metadata key.
func (f *File) Get(key string) (any, bool) {
	i, ok := f.kvIndex[key]
	if !ok {
		return nil, false
	}
	return f.KVs[i].Value, true
}

// String returns a string-valued key.
func (f *File) String(key string) (string, bool) {
	v, _ := f.Get(key)
	s, ok := v.(string)
	return s, ok
}

// Uint returns a key holding any integer type as uint64 (false if absent, not an integer, or negative).
func (f *File) Uint(key string) (uint64, bool) {
	v, ok := f.Get(key)
	if !ok {
		return 0, false
	}
	return asUint(v)
}

// Float returns a key holding any numeric type as float64.
func (f *File) Float(key string) (float64, bool) {
	v, ok := f.Get(key)
	if !ok {
		return 0, false
	}
	return asFloat(v)
}

// Tensor looks a tensor up by name.
func (f *File) Tensor(name string) (TensorInfo, bool) {
	i, ok := f.tensorIndex[name]
	if !ok {
		return TensorInfo{}, false
	}
	return f.Tensors[i], true
}

// Architecture is general.architecture ("" if absent).
func (f *File) Architecture() string {
	s, _ := f.String("general.architecture")
	return s
}

// TensorFileOffset is the absolute file offset of a tensor's first byte.
func (f *File) TensorFileOffset(t TensorInfo) int64 { return f.DataOffset + t.Offset }

// ArchUint reads "{architecture}.{suffix}", e.g. ArchUint("block_count").
func (f *File) ArchUint(suffix string) (uint64, bool) { return f.Uint(f.Architecture() + "." + suffix) }
