package plan

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/expertsniper/expertsniper/gguf"
	"github.com/expertsniper/expertsniper/modelgen/testmodels"
)

// A model kept in parts (agent pull --keep-split) is analysed over all its parts.
func TestOpenSplitModelCountsAllParts(t *testing.T) {
	src := testmodels.Path(t, "qwen2moe-q4_k_m")
	f, err := gguf.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	raw, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	dir := t.TempDir()
	const n = 3
	per := (len(f.Tensors) + n - 1) / n
	var total int64
	var first string
	for i := 0; i < n; i++ {
		p := filepath.Join(dir, fmt.Sprintf("M-Q4_K_M-%05d-of-%05d.gguf", i+1, n))
		out, err := os.Create(p)
		if err != nil {
			t.Fatal(err)
		}
		w := gguf.NewWriter(out)
		if i == 0 {
			for _, kv := range f.KVs {
				w.AddKV(kv.Key, kv.Value)
			}
			first = p
		}
		w.AddKV("split.no", uint16(i))
		w.AddKV("split.count", uint16(n))
		w.AddKV("split.tensors.count", int32(len(f.Tensors)))
		for _, ti := range f.Tensors[i*per : min((i+1)*per, len(f.Tensors))] {
			off := f.TensorFileOffset(ti)
			w.AddTensorData(ti.Name, ti.Type, ti.Dims, raw[off:off+ti.Bytes()])
		}
		if err := w.Write(context.Background()); err != nil {
			t.Fatal(err)
		}
		out.Close()
		st, _ := os.Stat(p)
		total += st.Size()
	}
	got, err := Open(first)
	if err != nil {
		t.Fatal(err)
	}
	want, err := Open(src)
	if err != nil {
		t.Fatal(err)
	}
	if got.Parts != n || got.FileSize != total || got.Parameters != want.Parameters || got.ActiveParameters != want.ActiveParameters ||
		got.TensorBytes != want.TensorBytes || got.StreamedBytes != want.StreamedBytes || fmt.Sprint(got.ExpertBytes) != fmt.Sprint(want.ExpertBytes) {
		t.Fatalf("split analysis differs:\n%+v\nwant\n%+v", got, want)
	}
	// A missing part is named.
	os.Remove(filepath.Join(dir, "M-Q4_K_M-00002-of-00003.gguf"))
	if _, err := Open(first); err == nil || !strings.Contains(err.Error(), "part 2") {
		t.Fatalf("missing part: %v", err)
	}
}
