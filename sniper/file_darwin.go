package sniper

import (
	"fmt"
	"os"

	"golang.org/x/sys/unix"
)

// On macOS F_NOCACHE makes reads bypass the unified buffer cache for this descriptor; there is no
// alignment requirement (unaligned parts are simply cached), so the buffered type serves as is.
func openDirect(path string) (File, error) {
	b, err := openBuffered(path)
	if err != nil {
		return nil, err
	}
	fd := int(b.f.Fd())
	if _, err := unix.FcntlInt(uintptr(fd), unix.F_NOCACHE, 1); err != nil {
		b.Close()
		return nil, fmt.Errorf("open %q: fcntl F_NOCACHE: %w", path, err)
	}
	// Readahead would read bytes of experts nobody asked for.
	_, _ = unix.FcntlInt(uintptr(fd), unix.F_RDAHEAD, 0)
	return &noCacheFile{bufferedFile: b}, nil
}

// noCacheFile is a bufferedFile whose descriptor has F_NOCACHE set.
type noCacheFile struct{ *bufferedFile }

func (n *noCacheFile) Direct() bool { return true }
func (n *noCacheFile) Align() int   { return 4096 }

var _ File = (*noCacheFile)(nil)

func dropCache(*os.File, int64, int64) {}

func noReadAhead(*os.File) {}
