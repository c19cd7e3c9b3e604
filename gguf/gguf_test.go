package gguf

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"io"
	"math"
	"math/rand/v2"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
)

// validFile writes a small but complete GGUF file with every metadata type and a few tensor types.
func validFile(t testing.TB) []byte {
	t.Helper()
	var buf bytes.Buffer
	w := NewWriter(&buf)
	kvs := []KV{
		{"general.architecture", "qwen3moe"},
		{"u8", uint8(7)}, {"i8", int8(-7)}, {"u16", uint16(700)}, {"i16", int16(-700)},
		{"u32", uint32(70000)}, {"i32", int32(-70000)}, {"u64", uint64(1 << 40)}, {"i64", int64(-1 << 40)},
		{"f32", float32(1.5)}, {"f64", float64(-2.25)}, {"b", true}, {"s", "héllo"},
		{"au8", []uint8{1, 2}}, {"ai8", []int8{-1, 2}}, {"au16", []uint16{1, 65535}}, {"ai16", []int16{-3}},
		{"au32", []uint32{5}}, {"ai32", []int32{-5, 6}}, {"au64", []uint64{9}}, {"ai64", []int64{-9}},
		{"af32", []float32{0.5}}, {"af64", []float64{0.25}}, {"ab", []bool{true, false}},
		{"as", []string{"a", "", "ccc"}}, {"empty", []int32{}},
	}
	for _, kv := range kvs {
		if err := w.AddKV(kv.Key, kv.Value); err != nil {
			t.Fatal(err)
		}
	}
	add := func(name string, typ Type, dims ...int64) {
		ti := TensorInfo{Type: typ, Dims: dims}
		data := make([]byte, ti.Bytes())
		for i := range data {
			data[i] = byte(i*7 + len(name))
		}
		if err := w.AddTensorData(name, typ, dims, data); err != nil {
			t.Fatal(err)
		}
	}
	add("a.weight", TypeF32, 3, 2)
	add("b.weight", TypeQ8_0, 64, 3)
	add("c.weight", TypeQ4_K, 256, 2, 2)
	add("d.weight", TypeF16, 5)
	if err := w.Write(context.Background()); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestRoundTrip(t *testing.T) {
	data := validFile(t)
	f, err := Read(bytes.NewReader(data), int64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	if f.Version != 3 || f.Alignment != 32 || f.FileSize != int64(len(data)) || f.DataOffset%32 != 0 {
		t.Fatalf("header: %+v", f)
	}
	if f.Architecture() != "qwen3moe" {
		t.Errorf("architecture %q", f.Architecture())
	}
	want := map[string]any{"i8": int8(-7), "u64": uint64(1 << 40), "f32": float32(1.5), "b": true, "s": "héllo",
		"ai16": []int16{-3}, "as": []string{"a", "", "ccc"}, "ab": []bool{true, false}, "empty": []int32{},
		"af64": []float64{0.25}, "au16": []uint16{1, 65535}}
	for k, v := range want {
		got, ok := f.Get(k)
		if !ok || !reflect.DeepEqual(got, v) {
			t.Errorf("%s = %#v, want %#v", k, got, v)
		}
	}
	if len(f.KVs) != 26 || f.KVs[0].Key != "general.architecture" || f.KVs[25].Key != "empty" {
		t.Errorf("KV order/count wrong: %d", len(f.KVs))
	}
	if u, ok := f.Uint("u16"); !ok || u != 700 {
		t.Errorf("Uint(u16) = %d %v", u, ok)
	}
	if _, ok := f.Uint("i8"); ok {
		t.Errorf("Uint of a negative value must fail")
	}
	if x, ok := f.Float("f64"); !ok || x != -2.25 {
		t.Errorf("Float(f64) = %v", x)
	}
	if x, ok := f.Float("i32"); !ok || x != -70000 {
		t.Errorf("Float(i32) = %v", x)
	}
	if _, ok := f.String("u8"); ok {
		t.Errorf("String of a uint8 must fail")
	}
	names := []string{"a.weight", "b.weight", "c.weight", "d.weight"}
	for i, n := range names {
		if f.Tensors[i].Name != n {
			t.Fatalf("tensor %d is %q, want %q", i, f.Tensors[i].Name, n)
		}
	}
	c, ok := f.Tensor("c.weight")
	if !ok || c.Type != TypeQ4_K || !reflect.DeepEqual(c.Dims, []int64{256, 2, 2}) || c.Bytes() != 4*144 || c.Elements() != 1024 {
		t.Fatalf("c.weight: %+v", c)
	}
	// Tensor bytes are where the table says they are.
	for _, ti := range f.Tensors {
		off := f.TensorFileOffset(ti)
		if off%f.Alignment != 0 {
			t.Errorf("%s at %d not aligned", ti.Name, off)
		}
		got := data[off : off+ti.Bytes()]
		for i := range got {
			if got[i] != byte(i*7+len(ti.Name)) {
				t.Fatalf("%s byte %d = %d", ti.Name, i, got[i])
			}
		}
	}
}

func TestTypeTraits(t *testing.T) {
	cases := []struct {
		typ        Type
		name       string
		block, siz int
	}{{TypeF32, "F32", 1, 4}, {TypeF16, "F16", 1, 2}, {TypeQ4_0, "Q4_0", 32, 18}, {TypeQ8_0, "Q8_0", 32, 34},
		{TypeQ4_K, "Q4_K", 256, 144}, {TypeQ6_K, "Q6_K", 256, 210}, {TypeBF16, "BF16", 1, 2}, {TypeMXFP4, "MXFP4", 32, 17}}
	for _, c := range cases {
		if c.typ.String() != c.name || c.typ.BlockSize() != c.block || c.typ.TypeSize() != c.siz {
			t.Errorf("%d: %s %d %d", c.typ, c.typ, c.typ.BlockSize(), c.typ.TypeSize())
		}
		p, err := ParseType(strings.ToLower(c.name))
		if err != nil || p != c.typ {
			t.Errorf("ParseType(%q) = %v, %v", c.name, p, err)
		}
	}
	if TypeQ4_0.RowSize(2048) != 64*18 {
		t.Errorf("RowSize")
	}
	if Type(4).Valid() || Type(31).Valid() || Type(99).Valid() {
		t.Errorf("removed types must be invalid")
	}
	if _, err := ParseType("q9_9"); err == nil {
		t.Errorf("ParseType accepted nonsense")
	}
}

func TestOpenMissingAndEmpty(t *testing.T) {
	dir := t.TempDir()
	_, err := Open(filepath.Join(dir, "nope.gguf"))
	if err == nil || !errors.Is(err, os.ErrNotExist) || !strings.Contains(err.Error(), "nope.gguf") {
		t.Errorf("missing file: %v", err)
	}
	empty := filepath.Join(dir, "empty.gguf")
	if err := os.WriteFile(empty, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	_, err = Open(empty)
	if err == nil || !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), "empty file") || !strings.Contains(err.Error(), "empty.gguf") {
		t.Errorf("empty file: %v", err)
	}
	_, err = Open(dir)
	if err == nil || !strings.Contains(err.Error(), "not a regular file") {
		t.Errorf("directory: %v", err)
	}
	good := filepath.Join(dir, "good.gguf")
	if err := os.WriteFile(good, validFile(t), 0o644); err != nil {
		t.Fatal(err)
	}
	if f, err := Open(good); err != nil || len(f.Tensors) != 4 {
		t.Errorf("Open valid: %v", err)
	}
}

// TestTruncatedEverywhere cuts the file at every byte of the header and in the data section.
func TestTruncatedEverywhere(t *testing.T) {
	data := validFile(t)
	f, err := Read(bytes.NewReader(data), int64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	// The padding after the last tensor may be missing (ggml never reads it); anything shorter fails.
	var end int64
	for _, ti := range f.Tensors {
		end = max(end, f.TensorFileOffset(ti)+ti.Bytes())
	}
	if int64(len(data))-end >= 32 {
		t.Fatalf("last tensor ends at %d of %d", end, len(data))
	}
	for n := 0; n < int(end); n++ {
		_, err := Read(bytes.NewReader(data[:n]), int64(n))
		if err == nil {
			t.Fatalf("truncated to %d of %d bytes: no error", n, len(data))
		}
		if !errors.Is(err, ErrMalformed) {
			t.Fatalf("truncated to %d: error does not match ErrMalformed: %v", n, err)
		}
		if n > 8 && int64(n) < f.DataOffset && !strings.Contains(err.Error(), "truncated") &&
			!strings.Contains(err.Error(), "past the end") && !strings.Contains(err.Error(), "impossible") &&
			!strings.Contains(err.Error(), "cannot fit") {
			t.Fatalf("truncated header at %d: unclear error %v", n, err)
		}
	}
}

func TestRandomBytes(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for i := 0; i < 2000; i++ {
		b := make([]byte, rng.IntN(600))
		for j := range b {
			b[j] = byte(rng.Uint32())
		}
		if i%2 == 0 && len(b) >= 8 { // half of them get a valid magic and version to reach deeper code
			copy(b, "GGUF\x03\x00\x00\x00")
		}
		if _, err := Read(bytes.NewReader(b), int64(len(b))); err == nil && i%2 == 1 {
			t.Fatalf("random bytes %x parsed", b)
		}
	}
}

// raw builds hand-made, possibly malformed files.
type raw struct{ bytes.Buffer }

func (r *raw) u32(v uint32) *raw { binary.Write(&r.Buffer, binary.LittleEndian, v); return r }
func (r *raw) u64(v uint64) *raw { binary.Write(&r.Buffer, binary.LittleEndian, v); return r }
func (r *raw) str(s string) *raw { r.u64(uint64(len(s))); r.WriteString(s); return r }
func (r *raw) header(version uint32, nTensors, nKV uint64) *raw {
	r.WriteString("GGUF")
	return r.u32(version).u64(nTensors).u64(nKV)
}
func (r *raw) tensor(name string, typ Type, off uint64, dims ...int64) *raw {
	r.str(name).u32(uint32(len(dims)))
	for _, d := range dims {
		r.u64(uint64(d))
	}
	return r.u32(uint32(typ)).u64(off)
}
func (r *raw) padTo(a int) *raw {
	for r.Len()%a != 0 {
		r.WriteByte(0)
	}
	return r
}
func (r *raw) zeros(n int) *raw { r.Write(make([]byte, n)); return r }

func TestBadInput(t *testing.T) {
	cases := []struct {
		name, want string
		file       *raw
	}{
		{"wrong magic", "bad magic", func() *raw { r := &raw{}; r.WriteString("GGML"); return r.u32(3).u64(0).u64(0) }()},
		{"short magic", "truncated", func() *raw { r := &raw{}; r.WriteString("GG"); return r }()},
		{"version 1", "version 1 is not supported", (&raw{}).header(1, 0, 0)},
		{"version 99", "unsupported GGUF version 99", (&raw{}).header(99, 0, 0)},
		{"big endian", "big-endian", (&raw{}).header(3<<24, 0, 0)},
		{"absurd tensor count", "tensor count", (&raw{}).header(3, 1<<40, 0)},
		{"absurd kv count", "metadata entry count", (&raw{}).header(3, 0, math.MaxUint64)},
		{"counts together too big", "cannot fit", (&raw{}).header(3, 1, 2).zeros(40)},
		{"key length beyond file", "runs past the end", (&raw{}).header(3, 0, 1).u64(1 << 50).zeros(8)},
		{"string value beyond file", "runs past the end", (&raw{}).header(3, 0, 1).str("k").u32(uint32(ValueString)).u64(1000).zeros(8)},
		{"unknown value type", "unknown value type 13", (&raw{}).header(3, 0, 1).str("k").u32(13).zeros(8)},
		{"empty key", "empty key", (&raw{}).header(3, 0, 1).str("").u32(uint32(ValueUint8)).zeros(8)},
		{"bad bool", "not a bool", (&raw{}).header(3, 0, 1).str("k").u32(uint32(ValueBool)).u32(2).zeros(8)},
		{"nested array", "nested array", (&raw{}).header(3, 0, 1).str("k").u32(uint32(ValueArray)).u32(uint32(ValueArray)).u64(1).zeros(16)},
		{"unknown array type", "unknown array element type", (&raw{}).header(3, 0, 1).str("k").u32(uint32(ValueArray)).u32(77).u64(1).zeros(16)},
		{"absurd array count", "element count", (&raw{}).header(3, 0, 1).str("k").u32(uint32(ValueArray)).u32(uint32(ValueUint32)).u64(1 << 61).zeros(16)},
		{"duplicate key", "duplicate metadata key", (&raw{}).header(3, 0, 2).str("k").u32(uint32(ValueUint8)).zeros(1).str("k").u32(uint32(ValueUint8)).zeros(1)},
		{"alignment type", "must be uint32", (&raw{}).header(3, 0, 1).str(KeyAlignment).u32(uint32(ValueUint64)).u64(32)},
		{"alignment not power of two", "not a power of two", (&raw{}).header(3, 0, 1).str(KeyAlignment).u32(uint32(ValueUint32)).u32(48)},
		{"unknown tensor type", "unknown or removed type 4", (&raw{}).header(3, 1, 0).tensor("t", Type(4), 0, 32).padTo(32).zeros(64)},
		{"too many dims", "5 dimensions", (&raw{}).header(3, 1, 0).tensor("t", TypeF32, 0, 1, 1, 1, 1, 1).padTo(32).zeros(64)},
		{"negative dim", "negative", (&raw{}).header(3, 1, 0).tensor("t", TypeF32, 0, -1).padTo(32).zeros(64)},
		{"dims overflow", "overflows", (&raw{}).header(3, 1, 0).tensor("t", TypeF32, 0, 1<<32, 1<<32).padTo(32).zeros(64)},
		{"ne0 not a block multiple", "block size", (&raw{}).header(3, 1, 0).tensor("t", TypeQ8_0, 0, 33).padTo(32).zeros(64)},
		{"misaligned offset", "not a multiple of the alignment", (&raw{}).header(3, 2, 0).tensor("a", TypeF32, 0, 1).tensor("b", TypeF32, 4, 1).padTo(32).zeros(64)},
		{"offset beyond file", "beyond the end", (&raw{}).header(3, 1, 0).tensor("t", TypeF32, 1<<40, 1).padTo(32).zeros(64)},
		{"data beyond file", "runs past the end of the file", (&raw{}).header(3, 1, 0).tensor("t", TypeF32, 0, 1000).padTo(32).zeros(64)},
		{"duplicate tensor", "duplicate tensor name", (&raw{}).header(3, 2, 0).tensor("t", TypeF32, 0, 1).tensor("t", TypeF32, 32, 1).padTo(32).zeros(64)},
		{"overlap", "overlaps", (&raw{}).header(3, 2, 0).tensor("a", TypeF32, 0, 16).tensor("b", TypeF32, 32, 16).padTo(32).zeros(128)},
		{"long name", "longer than", (&raw{}).header(3, 1, 0).tensor(strings.Repeat("x", 64), TypeF32, 0, 1).padTo(32).zeros(64)},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			b := c.file.Bytes()
			_, err := Read(bytes.NewReader(b), int64(len(b)))
			if err == nil {
				t.Fatalf("accepted")
			}
			if !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error %q, want it to mention %q", err, c.want)
			}
		})
	}
}

// A hand-built file in ggml's own layout parses; it guards the raw builder used above.
func TestRawValid(t *testing.T) {
	r := (&raw{}).header(2, 2, 1).str(KeyAlignment).u32(uint32(ValueUint32)).u32(64).
		tensor("a", TypeF32, 0, 4).tensor("b", TypeF16, 64, 2, 2).padTo(64).zeros(72)
	f, err := Read(bytes.NewReader(r.Bytes()), int64(r.Len()))
	if err != nil {
		t.Fatal(err)
	}
	if f.Version != 2 || f.Alignment != 64 || f.DataOffset%64 != 0 || len(f.Tensors) != 2 {
		t.Fatalf("%+v", f)
	}
}

func TestWriterRejects(t *testing.T) {
	w := NewWriter(io.Discard)
	if err := w.AddKV("x", 5); err == nil {
		t.Error("untyped int accepted")
	}
	if err := w.AddKV("", uint8(1)); err == nil {
		t.Error("empty key accepted")
	}
	if err := w.AddKV(KeyAlignment, uint32(24)); err == nil {
		t.Error("alignment 24 accepted")
	}
	fill := func(context.Context, io.Writer) error { return nil }
	if err := w.AddTensor("t", TypeQ4_0, []int64{31}, fill); err == nil {
		t.Error("bad ne0 accepted")
	}
	if err := w.AddTensor("t", TypeF32, []int64{1, 1, 1, 1, 1}, fill); err == nil {
		t.Error("5 dims accepted")
	}
	if err := w.AddTensor("t", Type(5), []int64{1}, fill); err == nil {
		t.Error("removed type accepted")
	}
	if err := w.AddTensor("t", TypeF32, []int64{2}, fill); err != nil {
		t.Fatal(err)
	}
	if err := w.AddTensor("t", TypeF32, []int64{2}, fill); err == nil {
		t.Error("duplicate accepted")
	}
	// fill writes nothing: Write must report the short tensor.
	if err := w.Write(context.Background()); err == nil || !strings.Contains(err.Error(), "wrote 0 bytes, want 8") {
		t.Errorf("short fill: %v", err)
	}
	w2 := NewWriter(io.Discard)
	w2.AddTensor("t", TypeF32, []int64{1}, func(_ context.Context, out io.Writer) error {
		_, err := out.Write(make([]byte, 8))
		return err
	})
	if err := w2.Write(context.Background()); err == nil || !strings.Contains(err.Error(), "exceeds its size") {
		t.Errorf("long fill: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	w3 := NewWriter(io.Discard)
	w3.AddTensorData("t", TypeF32, []int64{1}, make([]byte, 4))
	if err := w3.Write(ctx); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled write: %v", err)
	}
}

func TestWriterProgressAndAlignment(t *testing.T) {
	var buf bytes.Buffer
	w := NewWriter(&buf)
	if err := w.AddKV(KeyAlignment, uint32(128)); err != nil {
		t.Fatal(err)
	}
	w.AddTensorData("a", TypeF32, []int64{3}, make([]byte, 12))
	w.AddTensorData("b", TypeF32, []int64{40}, make([]byte, 160))
	var last, total int64
	w.Progress = func(done, tot int64) {
		if done < last {
			t.Errorf("progress went back: %d after %d", done, last)
		}
		last, total = done, tot
	}
	if err := w.Write(context.Background()); err != nil {
		t.Fatal(err)
	}
	if last != total || total != 128+256 {
		t.Errorf("progress ended at %d of %d", last, total)
	}
	f, err := Read(bytes.NewReader(buf.Bytes()), int64(buf.Len()))
	if err != nil {
		t.Fatal(err)
	}
	if f.Alignment != 128 || f.Tensors[1].Offset != 128 || f.DataOffset%128 != 0 || int64(buf.Len()) != f.DataOffset+384 {
		t.Errorf("alignment 128 layout wrong: %+v", f)
	}
}

// FuzzRead checks that no input makes the reader panic, hang or accept a file whose tensors lie
// outside it. The seeds run as a normal test; `go test -fuzz FuzzRead ./gguf` explores further.
func FuzzRead(f *testing.F) {
	valid := validFile(f)
	f.Add(valid)
	f.Add(valid[:len(valid)/2])
	f.Add([]byte("GGUF\x03\x00\x00\x00"))
	f.Add([]byte{})
	f.Add((&raw{}).header(3, 1, 1).str("k").u32(uint32(ValueArray)).u32(uint32(ValueString)).u64(2).str("a").str("b").
		tensor("t", TypeQ4_0, 0, 32).padTo(32).zeros(18).Bytes())
	f.Fuzz(func(t *testing.T, data []byte) {
		file, err := Read(bytes.NewReader(data), int64(len(data)))
		if err != nil {
			if !errors.Is(err, ErrMalformed) {
				t.Fatalf("error not marked malformed: %v", err)
			}
			return
		}
		for _, ti := range file.Tensors {
			end := file.TensorFileOffset(ti) + ti.Bytes()
			if ti.Bytes() > 0 && (end > int64(len(data)) || file.TensorFileOffset(ti)%file.Alignment != 0) {
				t.Fatalf("accepted tensor %q ending at %d in %d bytes", ti.Name, end, len(data))
			}
		}
	})
}
