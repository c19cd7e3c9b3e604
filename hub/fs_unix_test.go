//go:build unix

package hub

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// Two pulls of the same file must not interleave their bytes in one partial file.
func TestConcurrentDownloadOfSameFileIsRefused(t *testing.T) {
	h := newFakeHub(t)
	f := fakeFile{content: randomBytes(20, 50_000), lfs: true}
	h.addRepo("org/M", false, map[string]fakeFile{"M-Q4_0.gguf": f})
	dir := t.TempDir()
	dest := filepath.Join(dir, "M-Q4_0.gguf")
	// Another process holds the partial file.
	other, err := os.OpenFile(dest+PartialSuffix, os.O_RDWR|os.O_CREATE, 0o644)
	if err != nil {
		t.Fatal(err)
	}
	if err := lockFile(other); err != nil {
		t.Fatal(err)
	}
	files, err := h.client().ListFiles(context.Background(), "org/M")
	if err != nil {
		t.Fatal(err)
	}
	err = h.client().DownloadFile(context.Background(), "org/M", files[0], dest, nil)
	if err == nil || !strings.Contains(err.Error(), "is in use") {
		t.Fatalf("err = %v, want a refusal naming the busy partial file", err)
	}
	other.Close()
	if err := h.client().DownloadFile(context.Background(), "org/M", files[0], dest, nil); err != nil {
		t.Fatalf("after the other download ended: %v", err)
	}
}
