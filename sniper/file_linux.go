package sniper

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"unsafe"

	"golang.org/x/sys/unix"
)

// directFile reads with O_DIRECT. Reads whose offset, length or buffer address are not aligned to what
// the file system requires go through a second, buffered descriptor (and are dropped from the page
// cache afterwards), so callers never see EINVAL for alignment.
type directFile struct {
	direct   *os.File
	buffered *bufferedFile
	align    int
	aio      aioContexts
}

var (
	_ File         = (*directFile)(nil)
	_ VectorReader = (*directFile)(nil)
	_ BatchReader  = (*directFile)(nil)
)

func openDirect(path string) (File, error) {
	b, err := openBuffered(path)
	if err != nil {
		return nil, err
	}
	fd, err := unix.Open(path, unix.O_RDONLY|unix.O_DIRECT|unix.O_CLOEXEC, 0)
	if err != nil {
		if errors.Is(err, unix.EINVAL) || errors.Is(err, unix.EOPNOTSUPP) {
			// tmpfs and some others refuse O_DIRECT: read through the page cache and drop it.
			return b, nil
		}
		b.Close()
		return nil, fmt.Errorf("open %q with O_DIRECT: %w", path, err)
	}
	align := dioAlign(fd)
	return &directFile{direct: os.NewFile(uintptr(fd), path), buffered: b, align: align}, nil
}

// dioAlign asks statx for the direct-I/O alignment (memory and offset); 4096 when it cannot tell,
// which is safe on every file system we know.
func dioAlign(fd int) int {
	var st unix.Statx_t
	if err := unix.Statx(fd, "", unix.AT_EMPTY_PATH, unix.STATX_DIOALIGN, &st); err == nil &&
		st.Mask&unix.STATX_DIOALIGN != 0 && st.Dio_mem_align > 0 && st.Dio_offset_align > 0 {
		a := int(max(st.Dio_mem_align, st.Dio_offset_align))
		if a&(a-1) == 0 && a <= 1<<16 {
			return a
		}
	}
	return 4096
}

func (d *directFile) ReadAt(ctx context.Context, p []byte, off int64) error {
	a := int64(d.align)
	if len(p) == 0 {
		return nil
	}
	if off%a != 0 || int64(len(p))%a != 0 || int64(uintptr(unsafe.Pointer(&p[0])))%a != 0 {
		return d.buffered.ReadAt(ctx, p, off)
	}
	if err := readFull(ctx, d.direct, p, off); err != nil {
		if errors.Is(err, unix.EINVAL) {
			// A file system that accepted O_DIRECT at open but not this read: fall back once.
			return d.buffered.ReadAt(ctx, p, off)
		}
		return &ReadError{Path: d.buffered.path, Offset: off, Len: len(p), Err: err}
	}
	return nil
}

// maxIovecs is the most buffers one preadv takes (Linux's IOV_MAX).
const maxIovecs = 1024

// aligned reports whether a read of bufs from off on can go direct: the offset and every buffer's
// address and length are multiples of the file system's alignment.
func (d *directFile) aligned(off int64, bufs [][]byte) bool {
	a := int64(d.align)
	if off%a != 0 {
		return false
	}
	for _, b := range bufs {
		if len(b) == 0 || int64(len(b))%a != 0 || int64(uintptr(unsafe.Pointer(&b[0])))%a != 0 {
			return false
		}
	}
	return true
}

// ReadvAt reads the range into bufs with preadv on the direct descriptor when the offset and every
// buffer are aligned, else buffer by buffer as ReadAt does.
func (d *directFile) ReadvAt(ctx context.Context, bufs [][]byte, off int64) error {
	total := bufsLen(bufs)
	if !d.aligned(off, bufs) {
		return readEach(ctx, d, bufs, off)
	}
	if err := preadvFull(ctx, int(d.direct.Fd()), bufs, off); err != nil {
		if errors.Is(err, unix.EINVAL) {
			return readEach(ctx, d.buffered, bufs, off)
		}
		return &ReadError{Path: d.buffered.path, Offset: off, Len: total, Err: err}
	}
	return nil
}

// preadvFull preads all of bufs from off on, going on after short counts (legal for preadv) and
// interruptions; a read that ends early becomes io.ErrUnexpectedEOF.
func preadvFull(ctx context.Context, fd int, bufs [][]byte, off int64) error {
	bufs = slices.Clone(bufs)
	for len(bufs) > 0 {
		if err := ctx.Err(); err != nil {
			return err
		}
		n, err := unix.Preadv(fd, bufs[:min(len(bufs), maxIovecs)], off)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return err
		}
		if n == 0 {
			return io.ErrUnexpectedEOF
		}
		off += int64(n)
		for n > 0 {
			if n >= len(bufs[0]) {
				n -= len(bufs[0])
				bufs = bufs[1:]
			} else {
				bufs[0] = bufs[0][n:]
				n = 0
			}
		}
	}
	return nil
}

func (d *directFile) Size() int64  { return d.buffered.size }
func (d *directFile) Align() int   { return d.align }
func (d *directFile) Direct() bool { return true }
func (d *directFile) Fd() uintptr  { return d.direct.Fd() }
func (d *directFile) Path() string { return d.buffered.path }

func (d *directFile) Close() error {
	d.aio.close()
	return errors.Join(d.direct.Close(), d.buffered.Close())
}

// noReadAhead turns off the kernel's read-ahead on f: pages read ahead of a buffered read would stay
// in the page cache after dropCache, charged to the process's memory (cgroup) beyond its budget.
func noReadAhead(f *os.File) {
	_ = unix.Fadvise(int(f.Fd()), 0, 0, unix.FADV_RANDOM)
}

// dropCache tells the kernel the range just read by a buffered read will not be needed again.
// The range is widened to whole pages: the kernel drops only the pages wholly inside it, and the
// edge pages of unaligned reads (every tensor of a file whose sizes are not page multiples) would
// stay charged to the run.
func dropCache(f *os.File, off, n int64) {
	page := int64(os.Getpagesize())
	start := off &^ (page - 1)
	end := (off + n + page - 1) &^ (page - 1)
	_ = unix.Fadvise(int(f.Fd()), start, end-start, unix.FADV_DONTNEED)
}
