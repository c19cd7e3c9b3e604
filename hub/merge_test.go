package hub

import (
	"bytes"
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/expertsniper/expertsniper/gguf"
	"github.com/expertsniper/expertsniper/modelgen/testmodels"
)

// splitModel writes the tensors of src into n parts the way llama.cpp's gguf-split does: the first
// part carries all metadata plus split.*, the others only split.*; tensors are spread in order.
func splitModel(t *testing.T, src string, n int, dir string) []string {
	t.Helper()
	f, err := gguf.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	h, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { h.Close() })
	base := strings.TrimSuffix(filepath.Base(src), ".gguf")
	var parts []string
	per := (len(f.Tensors) + n - 1) / n
	for i := 0; i < n; i++ {
		p := filepath.Join(dir, fmt.Sprintf("%s-%05d-of-%05d.gguf", base, i+1, n))
		out, err := os.Create(p)
		if err != nil {
			t.Fatal(err)
		}
		w := gguf.NewWriter(out)
		if i == 0 {
			for _, kv := range f.KVs {
				if err := w.AddKV(kv.Key, kv.Value); err != nil {
					t.Fatal(err)
				}
			}
		}
		w.AddKV(keySplitNo, uint16(i))
		w.AddKV(keySplitCount, uint16(n))
		w.AddKV(keySplitTensors, int32(len(f.Tensors)))
		for _, ti := range f.Tensors[i*per : min((i+1)*per, len(f.Tensors))] {
			off, size := f.TensorFileOffset(ti), ti.Bytes()
			if err := w.AddTensor(ti.Name, ti.Type, ti.Dims, func(_ context.Context, dst io.Writer) error {
				_, err := io.Copy(dst, io.NewSectionReader(h, off, size))
				return err
			}); err != nil {
				t.Fatal(err)
			}
		}
		if err := w.Write(context.Background()); err != nil {
			t.Fatal(err)
		}
		out.Close()
		parts = append(parts, p)
	}
	return parts
}

func TestMergeSplitRestoresTheOriginalFile(t *testing.T) {
	for _, name := range []string{"qwen35moe-q4_0", "qwen3moe-f16"} {
		t.Run(name, func(t *testing.T) {
			src := testmodels.Path(t, name)
			dir := t.TempDir()
			parts := splitModel(t, src, 3, dir)
			merged := MergedPath(parts[0])
			if merged != filepath.Join(dir, strings.TrimSuffix(filepath.Base(src), ".gguf")+".gguf") {
				t.Fatalf("MergedPath = %s", merged)
			}
			if err := MergeSplit(context.Background(), parts, merged, nil); err != nil {
				t.Fatal(err)
			}
			want, _ := os.ReadFile(src)
			got, _ := os.ReadFile(merged)
			// The generator and the merge both write with the same writer, metadata order and alignment,
			// so the merge of a split must give back the very same bytes.
			if !bytes.Equal(got, want) {
				t.Fatalf("merged file differs from the original (%d vs %d bytes)", len(got), len(want))
			}
		})
	}
}

func TestMergeSplitRejectsBadParts(t *testing.T) {
	src := testmodels.Path(t, "qwen3-q4_0")
	dir := t.TempDir()
	parts := splitModel(t, src, 3, dir)
	out := filepath.Join(dir, "out.gguf")
	cases := []struct {
		parts []string
		msg   string
	}{
		{[]string{parts[0], parts[2], parts[1]}, "says it is part 3 of 3, expected part 2 of 3"},
		{parts[:2], "says it is part 1 of 3, expected part 1 of 2"},
		{[]string{src, parts[1]}, "not a part of a split model"},
		{[]string{parts[0], filepath.Join(dir, "missing.gguf"), parts[2]}, "missing.gguf"},
	}
	for _, c := range cases {
		err := MergeSplit(context.Background(), c.parts, out, nil)
		if err == nil || !strings.Contains(err.Error(), c.msg) {
			t.Errorf("MergeSplit(%v) = %v, want %q", c.parts, err, c.msg)
		}
		if _, err := os.Stat(out); err == nil {
			t.Fatal("a failed merge left the output file")
		}
	}
}

// A pull of a split model followed by a merge leaves one model; the next pull finds it merged.
func TestPullThenMergeSplit(t *testing.T) {
	src := testmodels.Path(t, "olmoe-q8_0")
	parts := splitModel(t, src, 2, t.TempDir())
	files := map[string]fakeFile{}
	for _, p := range parts {
		b, _ := os.ReadFile(p)
		files["Q8_0/"+filepath.Base(p)] = fakeFile{content: b, lfs: true}
	}
	h := newFakeHub(t)
	h.addRepo("org/Olmoe-GGUF", false, files)
	dir := t.TempDir()
	paths, _, err := pull(t, h.client(), "org/Olmoe-GGUF:q8_0", dir)
	if err != nil || len(paths) != 2 {
		t.Fatalf("pull: %v, %v", paths, err)
	}
	merged := MergedPath(paths[0])
	if err := MergeSplit(context.Background(), paths, merged, nil); err != nil {
		t.Fatal(err)
	}
	// Before cleanup, parts and merged file list as one model, the merged one.
	models, err := ListLocal(dir)
	if err != nil || len(models) != 1 || len(models[0].Paths) != 1 || models[0].Paths[0] != merged {
		t.Fatalf("ListLocal with parts and merged file: %+v, %v", models, err)
	}
	if err := RemoveParts(paths); err != nil {
		t.Fatal(err)
	}
	h.ranges = nil
	again, _, err := pull(t, h.client(), "org/Olmoe-GGUF:Q8_0", dir)
	if err != nil || len(again) != 1 || again[0] != merged || len(h.ranges) != 0 {
		t.Fatalf("second pull: %v, %v, requests %v", again, err, h.ranges)
	}
	if got, _ := ResolveModelIn(dir, "Olmoe-GGUF:q8_0"); got != merged {
		t.Fatalf("ResolveModel = %q, want %q", got, merged)
	}
	want, _ := os.ReadFile(src)
	got, _ := os.ReadFile(merged)
	if !bytes.Equal(got, want) {
		t.Fatal("pulled and merged model differs from the original")
	}
}
