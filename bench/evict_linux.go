package bench

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// evictFile drops the file's clean pages from the page cache, so that a configuration does not find
// the model already cached by the one before it (or by whoever wrote it) outside its own cap. Pages
// another process has mapped stay; --cold drops everything.
func evictFile(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("evict %q from the page cache: %w", path, err)
	}
	defer f.Close()
	if err := unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_DONTNEED); err != nil {
		return fmt.Errorf("evict %q from the page cache: %w", path, err)
	}
	return nil
}
