package gguf

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
)

// FillFunc writes exactly the tensor's bytes (TensorInfo.Bytes) to w. It is called once, in tensor
// order, while the data section is written; it may use ctx to stop early.
type FillFunc func(ctx context.Context, w io.Writer) error

// Writer builds a GGUF v3 file: declare metadata and tensors first (the header holds the whole tensor
// table), then Write emits the header and asks each tensor's FillFunc for its bytes in turn. Nothing
// but the tensor table is kept in memory, so a 20 GB model streams straight to disk.
//
// A Writer is not safe for concurrent use.
type Writer struct {
	out       io.Writer
	kvs       []KV
	kvIndex   map[string]int
	tensors   []TensorInfo
	fills     []FillFunc
	names     map[string]bool
	alignment int64
	dataSize  int64
	written   bool

	// Progress, if set, is called after each chunk of tensor data with the bytes of tensor data
	// written so far and the total.
	Progress func(done, total int64)
}

// NewWriter returns a Writer that will write to out when Write is called.
func NewWriter(out io.Writer) *Writer {
	return &Writer{out: out, kvIndex: map[string]int{}, names: map[string]bool{}, alignment: DefaultAlignment}
}

// AddKV adds (or replaces) a metadata entry. See KV for the accepted Go types. Setting
// general.alignment (uint32, a power of two) changes the data alignment; do it before AddTensor.
func (w *Writer) AddKV(key string, value any) error {
	if key == "" {
		return errors.New("gguf writer: empty metadata key")
	}
	if _, _, err := valueTypeOf(value); err != nil {
		return fmt.Errorf("gguf writer: metadata %q: %w", key, err)
	}
	if key == KeyAlignment {
		a, ok := value.(uint32)
		if !ok || a == 0 || a&(a-1) != 0 {
			return fmt.Errorf("gguf writer: %s must be a uint32 power of two, got %v (%T)", KeyAlignment, value, value)
		}
		if len(w.tensors) > 0 {
			return fmt.Errorf("gguf writer: set %s before adding tensors", KeyAlignment)
		}
		w.alignment = int64(a)
	}
	if i, ok := w.kvIndex[key]; ok {
		w.kvs[i].Value = value
		return nil
	}
	w.kvIndex[key] = len(w.kvs)
	w.kvs = append(w.kvs, KV{Key: key, Value: value})
	return nil
}

// AddTensor declares a tensor whose bytes fill will write. dims is ne[0..n), at most 4 of them.
func (w *Writer) AddTensor(name string, typ Type, dims []int64, fill FillFunc) error {
	ti := TensorInfo{Name: name, Type: typ, Dims: append([]int64(nil), dims...)}
	if err := checkNewTensor(ti); err != nil {
		return fmt.Errorf("gguf writer: %w", err)
	}
	if w.names[name] {
		return fmt.Errorf("gguf writer: duplicate tensor name %q", name)
	}
	if fill == nil {
		return fmt.Errorf("gguf writer: tensor %q has no fill function", name)
	}
	w.names[name] = true
	ti.Offset = w.dataSize
	w.dataSize += alignUp(ti.Bytes(), w.alignment)
	w.tensors = append(w.tensors, ti)
	w.fills = append(w.fills, fill)
	return nil
}

// AddTensorData declares a tensor whose bytes are already in memory.
func (w *Writer) AddTensorData(name string, typ Type, dims []int64, data []byte) error {
	return w.AddTensor(name, typ, dims, func(_ context.Context, out io.Writer) error {
		_, err := out.Write(data)
		return err
	})
}

func checkNewTensor(ti TensorInfo) error {
	if ti.Name == "" || len(ti.Name) > MaxNameLen {
		return fmt.Errorf("tensor name %q must be 1 to %d bytes", ti.Name, MaxNameLen)
	}
	if !ti.Type.Valid() {
		return fmt.Errorf("tensor %q: unknown type %d", ti.Name, uint32(ti.Type))
	}
	if len(ti.Dims) > MaxDims {
		return fmt.Errorf("tensor %q: %d dimensions, at most %d", ti.Name, len(ti.Dims), MaxDims)
	}
	n := int64(1)
	for i, d := range ti.Dims {
		if d < 0 {
			return fmt.Errorf("tensor %q: dimension %d is negative", ti.Name, i)
		}
		if d != 0 && n > math.MaxInt64/d {
			return fmt.Errorf("tensor %q: element count overflows", ti.Name)
		}
		n *= d
	}
	if len(ti.Dims) > 0 && ti.Dims[0]%int64(ti.Type.BlockSize()) != 0 {
		return fmt.Errorf("tensor %q: ne[0]=%d is not a multiple of the %s block size %d",
			ti.Name, ti.Dims[0], ti.Type, ti.Type.BlockSize())
	}
	return nil
}

// Tensors returns the tensor table as it will be written (offsets relative to the data section).
func (w *Writer) Tensors() []TensorInfo { return append([]TensorInfo(nil), w.tensors...) }

// DataSize is the size of the data section, padding included.
func (w *Writer) DataSize() int64 { return w.dataSize }

// Write emits the whole file. It can be called once.
func (w *Writer) Write(ctx context.Context) error {
	if w.written {
		return errors.New("gguf writer: Write called twice")
	}
	w.written = true
	bw := bufio.NewWriterSize(w.out, 1<<20)
	hw := &countingWriter{w: bw}
	if err := w.writeHeader(hw); err != nil {
		return fmt.Errorf("gguf writer: header: %w", err)
	}
	if err := pad(hw, w.alignment); err != nil {
		return fmt.Errorf("gguf writer: header padding: %w", err)
	}
	var done int64
	for i, ti := range w.tensors {
		if err := ctx.Err(); err != nil {
			return err
		}
		tw := &tensorWriter{w: bw, limit: ti.Bytes(), name: ti.Name}
		if w.Progress != nil {
			base := done
			tw.progress = func(n int64) { w.Progress(base+n, w.dataSize) }
		}
		if err := w.fills[i](ctx, tw); err != nil {
			return fmt.Errorf("gguf writer: data of tensor %q: %w", ti.Name, err)
		}
		if tw.n != ti.Bytes() {
			return fmt.Errorf("gguf writer: fill of tensor %q wrote %d bytes, want %d", ti.Name, tw.n, ti.Bytes())
		}
		padded := alignUp(ti.Bytes(), w.alignment)
		if _, err := bw.Write(make([]byte, padded-ti.Bytes())); err != nil {
			return fmt.Errorf("gguf writer: padding after tensor %q: %w", ti.Name, err)
		}
		done += padded
		if w.Progress != nil {
			w.Progress(done, w.dataSize)
		}
	}
	if err := bw.Flush(); err != nil {
		return fmt.Errorf("gguf writer: flush: %w", err)
	}
	return nil
}

func (w *Writer) writeHeader(out *countingWriter) error {
	le := binary.LittleEndian
	out.write([]byte(Magic))
	out.u32(3)
	out.u64(uint64(len(w.tensors)))
	out.u64(uint64(len(w.kvs)))
	for _, kv := range w.kvs {
		out.str(kv.Key)
		typ, elem, _ := valueTypeOf(kv.Value) // checked in AddKV
		out.u32(uint32(typ))
		if typ == ValueArray {
			out.u32(uint32(elem))
		}
		switch v := kv.Value.(type) {
		case uint8:
			out.write([]byte{v})
		case int8:
			out.write([]byte{byte(v)})
		case bool:
			out.write([]byte{boolByte(v)})
		case uint16:
			out.write(le.AppendUint16(nil, v))
		case int16:
			out.write(le.AppendUint16(nil, uint16(v)))
		case uint32:
			out.u32(v)
		case int32:
			out.u32(uint32(v))
		case float32:
			out.u32(math.Float32bits(v))
		case uint64:
			out.u64(v)
		case int64:
			out.u64(uint64(v))
		case float64:
			out.u64(math.Float64bits(v))
		case string:
			out.str(v)
		case []uint8:
			out.u64(uint64(len(v)))
			out.write(v)
		case []int8:
			out.u64(uint64(len(v)))
			for _, x := range v {
				out.write([]byte{byte(x)})
			}
		case []bool:
			out.u64(uint64(len(v)))
			for _, x := range v {
				out.write([]byte{boolByte(x)})
			}
		case []uint16:
			out.u64(uint64(len(v)))
			for _, x := range v {
				out.write(le.AppendUint16(nil, x))
			}
		case []int16:
			out.u64(uint64(len(v)))
			for _, x := range v {
				out.write(le.AppendUint16(nil, uint16(x)))
			}
		case []uint32:
			out.u64(uint64(len(v)))
			for _, x := range v {
				out.u32(x)
			}
		case []int32:
			out.u64(uint64(len(v)))
			for _, x := range v {
				out.u32(uint32(x))
			}
		case []float32:
			out.u64(uint64(len(v)))
			for _, x := range v {
				out.u32(math.Float32bits(x))
			}
		case []uint64:
			out.u64(uint64(len(v)))
			for _, x := range v {
				out.u64(x)
			}
		case []int64:
			out.u64(uint64(len(v)))
			for _, x := range v {
				out.u64(uint64(x))
			}
		case []float64:
			out.u64(uint64(len(v)))
			for _, x := range v {
				out.u64(math.Float64bits(x))
			}
		case []string:
			out.u64(uint64(len(v)))
			for _, x := range v {
				out.str(x)
			}
		}
	}
	for _, ti := range w.tensors {
		out.str(ti.Name)
		out.u32(uint32(len(ti.Dims)))
		for _, d := range ti.Dims {
			out.u64(uint64(d))
		}
		out.u32(uint32(ti.Type))
		out.u64(uint64(ti.Offset))
	}
	return out.err
}

func boolByte(b bool) byte {
	if b {
		return 1
	}
	return 0
}

func pad(out *countingWriter, alignment int64) error {
	out.write(make([]byte, alignUp(out.n, alignment)-out.n))
	return out.err
}

// countingWriter remembers the first error so the header code can stay linear.
type countingWriter struct {
	w   io.Writer
	n   int64
	err error
	buf [8]byte
}

func (c *countingWriter) write(b []byte) {
	if c.err != nil {
		return
	}
	n, err := c.w.Write(b)
	c.n += int64(n)
	c.err = err
}

func (c *countingWriter) u32(v uint32) {
	binary.LittleEndian.PutUint32(c.buf[:4], v)
	c.write(c.buf[:4])
}

func (c *countingWriter) u64(v uint64) {
	binary.LittleEndian.PutUint64(c.buf[:8], v)
	c.write(c.buf[:8])
}

func (c *countingWriter) str(s string) {
	c.u64(uint64(len(s)))
	c.write([]byte(s))
}

// tensorWriter refuses bytes beyond the tensor's size, so a faulty fill cannot corrupt the layout.
type tensorWriter struct {
	w        io.Writer
	n        int64
	limit    int64
	name     string
	progress func(int64)
}

func (t *tensorWriter) Write(p []byte) (int, error) {
	if int64(len(p)) > t.limit-t.n {
		return 0, fmt.Errorf("tensor %q: write of %d bytes exceeds its size %d (already %d)", t.name, len(p), t.limit, t.n)
	}
	n, err := t.w.Write(p)
	t.n += int64(n)
	if t.progress != nil {
		t.progress(t.n)
	}
	return n, err
}
