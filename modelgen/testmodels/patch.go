package testmodels

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"github.com/expertsniper/expertsniper/gguf"
)

// An Edit changes a model file's bytes in place, keeping it a well-formed GGUF, so that what
// objects to the result is whatever checks the model's meaning (the analysis, llama.cpp).
type Edit func(b []byte) error

// Patched writes a copy of the named test model with the edits applied into a temporary directory
// of tb and returns its path.
func Patched(tb testing.TB, name string, edits ...Edit) string {
	tb.Helper()
	b, err := os.ReadFile(Path(tb, name))
	if err != nil {
		tb.Fatal(err)
	}
	for _, e := range edits {
		if err := e(b); err != nil {
			tb.Fatalf("patch %s: %v", name, err)
		}
	}
	p := filepath.Join(tb.TempDir(), "patched-"+FileName(name))
	if err := os.WriteFile(p, b, 0o644); err != nil {
		tb.Fatal(err)
	}
	return p
}

// RenameTensor renames a tensor to a name of the same length (e.g. to make it missing).
func RenameTensor(from, to string) Edit {
	return func(b []byte) error {
		if len(from) != len(to) {
			return fmt.Errorf("rename %q to %q: names must have the same length", from, to)
		}
		i := bytes.Index(b, storedString(from))
		if i < 0 {
			return fmt.Errorf("no tensor %q", from)
		}
		copy(b[i+8:], to)
		return nil
	}
}

// SetUint32 sets a metadata key holding a uint32.
func SetUint32(key string, v uint32) Edit {
	return func(b []byte) error {
		// The key as stored (length first), so that "head_count" does not match "head_count_kv".
		needle := storedString(key)
		i := bytes.Index(b, needle)
		if i < 0 {
			return fmt.Errorf("no key %q", key)
		}
		at := i + len(needle)
		if typ := binary.LittleEndian.Uint32(b[at:]); typ != uint32(gguf.ValueUint32) {
			return fmt.Errorf("%s has value type %d, not uint32", key, typ)
		}
		binary.LittleEndian.PutUint32(b[at+4:], v)
		return nil
	}
}

// storedString is s as GGUF stores it: a little-endian uint64 length, then the bytes.
func storedString(s string) []byte {
	return append(binary.LittleEndian.AppendUint64(nil, uint64(len(s))), s...)
}
