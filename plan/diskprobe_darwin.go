package plan

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

type darwinDirect struct {
	f    *os.File
	size int64
}

// openDirect opens path with F_NOCACHE: reads bypass the unified buffer cache.
func openDirect(path string) (directReader, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open: %w", err)
	}
	if _, err := unix.FcntlInt(f.Fd(), unix.F_NOCACHE, 1); err != nil {
		f.Close()
		return nil, fmt.Errorf("%w (F_NOCACHE: %v)", ErrNoDirectIO, err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	return &darwinDirect{f: f, size: st.Size()}, nil
}

func (d *darwinDirect) ReadAt(buf []byte, off int64) (int, error) { return d.f.ReadAt(buf, off) }
func (d *darwinDirect) Size() int64                               { return d.size }
func (d *darwinDirect) NewBuffer(n int) ([]byte, func())          { return make([]byte, n), func() {} }
func (d *darwinDirect) Close() error                              { return d.f.Close() }
