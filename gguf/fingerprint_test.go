package gguf

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestFingerprint(t *testing.T) {
	data := validFile(t)
	dir := t.TempDir()
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o600); err != nil {
			t.Fatal(err)
		}
		return p
	}
	fp := func(p string) string {
		t.Helper()
		s, err := Fingerprint(p)
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	orig := fp(write("model.gguf", data))
	if !strings.HasPrefix(orig, "sha256:") || len(orig) != len("sha256:")+64 {
		t.Fatalf("fingerprint %q is not sha256:HEX", orig)
	}
	if got := fp(write("renamed.gguf", data)); got != orig {
		t.Errorf("the same bytes under another name: %s, want %s", got, orig)
	}
	f, err := Read(strings.NewReader(string(data)), int64(len(data)))
	if err != nil {
		t.Fatal(err)
	}
	// A change in the metadata, in the first tensor data and in the last byte each show.
	for name, off := range map[string]int64{"metadata": 40, "first data": f.DataOffset, "last data": int64(len(data) - 1)} {
		changed := append([]byte(nil), data...)
		changed[off] ^= 1
		p := write("other.gguf", changed)
		if _, err := Read(strings.NewReader(string(changed)), int64(len(changed))); err != nil {
			continue // the flip broke the header; nothing to fingerprint
		}
		if got := fp(p); got == orig {
			t.Errorf("a change in the %s (byte %d) kept the fingerprint", name, off)
		}
	}
	if _, err := Fingerprint(filepath.Join(dir, "missing.gguf")); err == nil {
		t.Error("a missing file has no fingerprint")
	}
	if _, err := Fingerprint(write("bad.gguf", []byte("not a gguf file at all"))); err == nil {
		t.Error("a file that is not GGUF has no fingerprint")
	}
}
