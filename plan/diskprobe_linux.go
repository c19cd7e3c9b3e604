package plan

import (
	"errors"
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

type linuxDirect struct {
	f    *os.File
	size int64
}

func openDirect(path string) (directReader, error) {
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_DIRECT|unix.O_CLOEXEC, 0)
	if err != nil {
		if errors.Is(err, unix.EINVAL) {
			return nil, fmt.Errorf("%w (O_DIRECT refused)", ErrNoDirectIO)
		}
		return nil, fmt.Errorf("open: %w", err)
	}
	f := os.NewFile(uintptr(fd), path)
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, err
	}
	return &linuxDirect{f: f, size: st.Size()}, nil
}

func (d *linuxDirect) ReadAt(buf []byte, off int64) (int, error) {
	// The last piece of the file may be short; O_DIRECT still needs an aligned length, which the
	// buffer has, and returns the bytes that exist.
	n, err := unix.Pread(int(d.f.Fd()), buf, off)
	if errors.Is(err, unix.EINVAL) {
		return n, fmt.Errorf("%w (O_DIRECT read refused)", ErrNoDirectIO)
	}
	return n, err
}

func (d *linuxDirect) Size() int64 { return d.size }

// NewBuffer maps anonymous memory: page-aligned, as O_DIRECT requires.
func (d *linuxDirect) NewBuffer(n int) ([]byte, func()) {
	b, err := unix.Mmap(-1, 0, n, unix.PROT_READ|unix.PROT_WRITE, unix.MAP_PRIVATE|unix.MAP_ANON)
	if err != nil {
		return make([]byte, n), func() {}
	}
	return b, func() { unix.Munmap(b) }
}

func (d *linuxDirect) Close() error { return d.f.Close() }
