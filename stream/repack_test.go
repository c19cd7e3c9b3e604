package stream

import (
	"bytes"
	"context"
	"os"
	"slices"
	"testing"
	"unsafe"

	"github.com/expertsniper/expertsniper/binding/hookapi"
	"github.com/expertsniper/expertsniper/gguf"
)

// rowsReversed stands in for a repacked layout: the rows of what it converts in reverse order, so
// that a tensor converted as a whole and one converted part by part differ, as an unconverted one does.
type rowsReversed struct{ row int64 }

func (l rowsReversed) Name() string         { return "TEST_REPACK" }
func (l rowsReversed) RowBytes() int64      { return l.row }
func (l rowsReversed) Fits(rows int64) bool { return rows > 0 }
func (l rowsReversed) Convert(dst, src []byte) error {
	n := int64(len(src)) / l.row
	for r := int64(0); r < n; r++ {
		copy(dst[(n-1-r)*l.row:(n-r)*l.row], src[r*l.row:(r+1)*l.row])
	}
	return nil
}

func (l rowsReversed) converted(src []byte) []byte {
	out := make([]byte, len(src))
	_ = l.Convert(out, src)
	return out
}

// withRepacking offers tt the test layout if it is Q4_0, as binding offers llama.cpp's.
func withRepacking(tt *hookapi.Tensor) rowsReversed {
	l := rowsReversed{row: tt.Nb[1]}
	tt.Repacking = func(id bool) hookapi.Layout {
		if tt.Type != gguf.TypeQ4_0 {
			return nil
		}
		return l
	}
	return l
}

// TestRepackedLayouts: pinned matmul weights are converted in place and say so (Layout); the token
// embeddings are not; streamed experts are converted as each read lands in its slot, the fused
// gate+up of qwen35moe half by half; with NoRepack nothing is.
func TestRepackedLayouts(t *testing.T) {
	for _, noRepack := range []bool{false, true} {
		w, path := openWeights(t, "qwen35moe-q4_0", Options{CacheBudget: 0, NoRepack: noRepack})
		raw, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		fileBytes := func(name string) []byte {
			for _, info := range w.gf.Tensors {
				if info.Name == name {
					off := w.gf.TensorFileOffset(info)
					return raw[off : off+info.Bytes()]
				}
			}
			t.Fatalf("no tensor %s in the file", name)
			return nil
		}
		idx := w.Sniper().Index()
		placed := map[string]*hookapi.Tensor{}
		tensors := slices.Clone(w.gf.Tensors)
		for _, d := range w.Declared() { // the fused gate+up, as llama.cpp allocates it
			tensors = append(tensors, gguf.TensorInfo{Name: d.Name, Type: d.Type, Dims: d.Ne[:]})
		}
		for _, info := range tensors {
			if st := idx.Tensor(info.Name); st != nil && st.FusedInto != "" {
				continue // llama.cpp allocates the fused tensor, not its sources
			}
			tt := fakeTensor(info)
			l := withRepacking(tt)
			if err := w.SetTensorData(tt); err != nil {
				t.Fatalf("%s: %v", info.Name, err)
			}
			placed[info.Name] = tt
			if idx.Streams(info.Name) {
				if want := !noRepack && info.Type == gguf.TypeQ4_0; (tt.Layout != nil) != want {
					t.Fatalf("noRepack %v: streamed %s layout %v", noRepack, info.Name, tt.Layout)
				}
				continue
			}
			got := unsafe.Slice((*byte)(tt.Data), tt.Size)
			repack := !noRepack && info.Type == gguf.TypeQ4_0 && info.Name != "token_embd.weight" && len(info.Dims) == 2
			switch {
			case repack && (tt.Layout == nil || !bytes.Equal(got, l.converted(fileBytes(info.Name)))):
				t.Fatalf("%s: pinned weight not converted in place (layout %v)", info.Name, tt.Layout)
			case !repack && (tt.Layout != nil || !bytes.Equal(got, fileBytes(info.Name))):
				t.Fatalf("noRepack %v: %s converted, or not read from the file", noRepack, info.Name)
			}
		}
		if err := w.Loaded(); err != nil {
			t.Fatal(err)
		}
		if n := w.Info().RepackedTensors; (n > 0) == noRepack {
			t.Fatalf("noRepack %v: %d tensors repacked", noRepack, n)
		}
		// An expert read into its slot: the file's bytes, each part converted on its own.
		const layer, expert = 1, 3
		if err := w.Sniper().Ensure(context.Background(), layer, []int32{expert}); err != nil {
			t.Fatal(err)
		}
		slot, ok := w.Sniper().Slot(layer, expert)
		if !ok {
			t.Fatal("expert not resident")
		}
		for _, st := range idx.LayerTensors(layer) {
			if st.FusedInto != "" {
				continue
			}
			tt := placed[st.Name]
			got := unsafe.Slice((*byte)(unsafe.Add(tt.Data, int64(slot)*tt.Nb[2])), st.ExpertBytes)
			var want []byte
			for _, p := range st.Parts {
				part := raw[p.FileOffset+int64(expert)*p.Stride : p.FileOffset+int64(expert)*p.Stride+p.Len]
				if !noRepack {
					part = rowsReversed{row: tt.Nb[1]}.converted(part)
				}
				want = append(want, part...)
			}
			if !bytes.Equal(got, want) {
				t.Fatalf("noRepack %v: %s expert %d in slot %d is not the file's parts, each converted", noRepack, st.Name, expert, slot)
			}
		}
	}
}
