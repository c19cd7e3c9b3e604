package diskspace

import (
	"strings"
	"testing"
)

func TestFree(t *testing.T) {
	n, err := Free(t.TempDir())
	if err != nil || n == 0 {
		t.Fatalf("Free = %d, %v", n, err)
	}
}

func TestCheck(t *testing.T) {
	dir := t.TempDir()
	if err := Check(dir, 1<<20, "a small file"); err != nil {
		t.Fatalf("1 MiB: %v", err)
	}
	err := Check(dir, 1<<62, "the model")
	if err == nil || !strings.Contains(err.Error(), "the model needs") || !strings.Contains(err.Error(), "free") {
		t.Fatalf("4 EiB: got %v, want an error saying what needs how much", err)
	}
}
