package hub

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/expertsniper/expertsniper/bytesize"
	"github.com/expertsniper/expertsniper/diskspace"
	"github.com/expertsniper/expertsniper/gguf"
)

// Metadata keys llama.cpp's gguf-split writes into every part.
const (
	keySplitNo      = "split.no"
	keySplitCount   = "split.count"
	keySplitTensors = "split.tensors.count"
)

// MergedPath is where the merged form of a split model lands: next to the parts, without the
// -0000k-of-0000n suffix. It returns "" if part is not a split part.
func MergedPath(part string) string {
	base, _, _, ok := SplitPart(filepath.Base(part))
	if !ok {
		return ""
	}
	return filepath.Join(filepath.Dir(part), base+".gguf")
}

// MergeSplit joins the parts of a split GGUF (in order) into one file at out, as llama.cpp's
// gguf-split --merge does: the first part's metadata without the split.* keys, then every part's
// tensors in order. The sniper streams experts from one file, so split downloads are merged. out
// appears only when complete. progress, if not nil, gets bytes of tensor data written and the total.
func MergeSplit(ctx context.Context, parts []string, out string, progress func(done, total int64)) (err error) {
	if len(parts) < 2 {
		return fmt.Errorf("merge: need at least 2 parts, got %d", len(parts))
	}
	files := make([]*gguf.File, len(parts))
	handles := make([]*os.File, len(parts))
	defer func() {
		for _, h := range handles {
			if h != nil {
				h.Close()
			}
		}
	}()
	var tensors uint64
	for i, p := range parts {
		f, err := gguf.Open(p)
		if err != nil {
			return fmt.Errorf("merge: %w", err)
		}
		files[i] = f
		no, ok1 := f.Uint(keySplitNo)
		count, ok2 := f.Uint(keySplitCount)
		if !ok1 || !ok2 {
			return fmt.Errorf("merge: %s has no %s/%s metadata: not a part of a split model", p, keySplitNo, keySplitCount)
		}
		if no != uint64(i) || count != uint64(len(parts)) {
			return fmt.Errorf("merge: %s says it is part %d of %d, expected part %d of %d", p, no+1, count, i+1, len(parts))
		}
		if h, err := os.Open(p); err != nil {
			return fmt.Errorf("merge: %w", err)
		} else {
			handles[i] = h
		}
		tensors += uint64(len(f.Tensors))
	}
	if want, ok := files[0].Uint(keySplitTensors); ok && want != tensors {
		return fmt.Errorf("merge: %s announces %d tensors, the parts hold %d", parts[0], want, tensors)
	}

	tmp, err := os.CreateTemp(filepath.Dir(out), "."+filepath.Base(out)+".merge-*")
	if err != nil {
		return fmt.Errorf("merge into %s: %w", out, err)
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	w := gguf.NewWriter(tmp)
	w.Progress = progress
	for _, kv := range files[0].KVs {
		if strings.HasPrefix(kv.Key, "split.") {
			continue
		}
		if err := w.AddKV(kv.Key, kv.Value); err != nil {
			return fmt.Errorf("merge into %s: %w", out, err)
		}
	}
	for i, f := range files {
		h, f := handles[i], f
		for _, t := range f.Tensors {
			off, n := f.TensorFileOffset(t), t.Bytes()
			if off+n > f.FileSize {
				return fmt.Errorf("merge: %s: tensor %s ends at %d, past the end of the file (%d bytes)", parts[i], t.Name, off+n, f.FileSize)
			}
			fill := func(ctx context.Context, dst io.Writer) error {
				if err := ctx.Err(); err != nil {
					return err
				}
				if _, err := io.Copy(dst, io.NewSectionReader(h, off, n)); err != nil {
					return fmt.Errorf("copy from %s at %d: %w", parts[i], off, err)
				}
				return nil
			}
			if err := w.AddTensor(t.Name, t.Type, t.Dims, fill); err != nil {
				return fmt.Errorf("merge into %s: %w", out, err)
			}
		}
	}
	if free, ferr := diskspace.Free(filepath.Dir(out)); ferr == nil && free < uint64(w.DataSize()) {
		return fmt.Errorf("merge into %s: needs %s, only %s free", out, bytesize.Format(w.DataSize()), bytesize.Format(int64(free)))
	}
	if err := w.Write(ctx); err != nil {
		return fmt.Errorf("merge into %s: %w", out, err)
	}
	if err := tmp.Sync(); err != nil {
		return fmt.Errorf("merge into %s: sync: %w", out, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("merge into %s: close: %w", out, err)
	}
	if err := os.Chmod(tmp.Name(), 0o644); err != nil {
		return fmt.Errorf("merge into %s: %w", out, err)
	}
	if err := os.Rename(tmp.Name(), out); err != nil {
		return fmt.Errorf("merge into %s: %w", out, err)
	}
	syncDir(filepath.Dir(out))
	return nil
}

// RemoveParts deletes the parts of a split model once its merged form exists.
func RemoveParts(parts []string) error {
	var errs []error
	for _, p := range parts {
		if err := os.Remove(p); err != nil && !errors.Is(err, os.ErrNotExist) {
			errs = append(errs, err)
		}
	}
	return errors.Join(errs...)
}
