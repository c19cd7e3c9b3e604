package sniper

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"time"
)

// File is a read-only model file. ReadAt returns all of p or an error: a short read is an error
// (io.ErrUnexpectedEOF wrapped with the path and offset), never a partial result. ReadAt may be called
// from several goroutines at once.
type File interface {
	ReadAt(ctx context.Context, p []byte, off int64) error
	// Size is the file's size when it was opened.
	Size() int64
	// Align is the alignment of offset, length and buffer address that makes a read direct (bypassing
	// the page cache); 1 when the file is read through the page cache anyway.
	Align() int
	// Direct reports whether reads bypass the page cache.
	Direct() bool
	Close() error
	// Fd is the OS file descriptor, or InvalidFd for files that have none (tests).
	Fd() uintptr
	Path() string
}

// VectorReader is a File that reads one range of the file into several buffers with a single request
// (preadv). On the VMs measured here each direct read costs about 45 µs of kernel CPU whatever its
// size (bounce buffering, interrupts), so an expert read as one request instead of three costs a
// third of the CPU the compute threads would otherwise lose.
type VectorReader interface {
	// ReadvAt fills bufs, in order, with the file's bytes from off on; like ReadAt, all of them or
	// an error naming the file and range.
	ReadvAt(ctx context.Context, bufs [][]byte, off int64) error
}

// VectorRead is one read of a batch: the file's bytes from Off on into Bufs, in order.
type VectorRead struct {
	Bufs [][]byte
	Off  int64
}

// BatchReader is a File that keeps several reads in flight from one goroutine (Linux AIO), instead
// of a thread blocked in each.
type BatchReader interface {
	// ReadBatch performs reads, at most depth at a time, and calls done(i, took) on the caller's
	// goroutine as read i completes, took after it was submitted. It returns when none is in flight
	// any more: nil when all were read, else the first error (reads not yet started are dropped).
	// ErrNoBatch means that nothing was read because the platform refused (use ReadvAt).
	ReadBatch(ctx context.Context, reads []VectorRead, depth int, done func(i int, took time.Duration)) error
}

// ErrNoBatch is returned by ReadBatch where batched reads are not available.
var ErrNoBatch = errors.New("sniper: batched reads not available")

// ReadVector fills bufs, in order, with f's bytes from off on: in one request where f is a
// VectorReader (or there is one buffer), else with one ReadAt per buffer.
func ReadVector(ctx context.Context, f File, bufs [][]byte, off int64) error {
	if len(bufs) == 1 {
		return f.ReadAt(ctx, bufs[0], off)
	}
	if v, ok := f.(VectorReader); ok {
		return v.ReadvAt(ctx, bufs, off)
	}
	return readEach(ctx, f, bufs, off)
}

// readEach reads bufs one after the other with ReadAt.
func readEach(ctx context.Context, f File, bufs [][]byte, off int64) error {
	for _, b := range bufs {
		if err := f.ReadAt(ctx, b, off); err != nil {
			return err
		}
		off += int64(len(b))
	}
	return nil
}

// InvalidFd is returned by Fd for files without an OS descriptor.
const InvalidFd = ^uintptr(0)

// FS opens model files. Tests wrap it (see internal/faultfs) to inject faults.
type FS interface {
	Open(path string) (File, error)
}

// DirectFS opens files for direct I/O where the platform and file system allow it, and falls back to
// buffered reads that drop what they read from the page cache where they do not.
type DirectFS struct{}

// Open opens path read-only.
func (DirectFS) Open(path string) (File, error) { return openDirect(path) }

var _ FS = DirectFS{}

// ReadError is the error of a failed read: it names the file and the byte range, so that a user
// reading "input/output error" knows which file and where.
type ReadError struct {
	Path   string
	Offset int64
	Len    int
	Err    error
}

func (e *ReadError) Error() string {
	return fmt.Sprintf("read %q at offset %d (%d bytes): %v", e.Path, e.Offset, e.Len, e.Err)
}

func (e *ReadError) Unwrap() error { return e.Err }

// readFull preads all of p at off from f, retrying on short counts (which are legal for pread) until
// EOF or an error; a read that ends early becomes io.ErrUnexpectedEOF.
func readFull(ctx context.Context, f *os.File, p []byte, off int64) error {
	done := 0
	for done < len(p) {
		if err := ctx.Err(); err != nil {
			return err
		}
		n, err := f.ReadAt(p[done:], off+int64(done))
		done += n
		if err != nil {
			if errors.Is(err, io.EOF) {
				if done == len(p) {
					return nil
				}
				return io.ErrUnexpectedEOF
			}
			return err
		}
	}
	return nil
}

// bufferedFile reads through the page cache. After each read it tells the kernel the range is not
// needed any more, so streaming a model does not fill the page cache (where that is supported).
type bufferedFile struct {
	f    *os.File
	path string
	size int64
}

func openBuffered(path string) (*bufferedFile, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open %q: %w", path, err)
	}
	st, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("stat %q: %w", path, err)
	}
	noReadAhead(f)
	return &bufferedFile{f: f, path: path, size: st.Size()}, nil
}

func (b *bufferedFile) ReadAt(ctx context.Context, p []byte, off int64) error {
	if err := readFull(ctx, b.f, p, off); err != nil {
		return &ReadError{Path: b.path, Offset: off, Len: len(p), Err: err}
	}
	dropCache(b.f, off, int64(len(p)))
	return nil
}

// OpenUncached opens path for buffered reads that leave nothing in the page cache once followed by
// DropCache: read-ahead is off (Linux), as the streamed weights' own buffered fallback has it.
func OpenUncached(path string) (*os.File, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	noReadAhead(f)
	return f, nil
}

// DropCache tells the kernel that the range of f just read will not be needed again, so its page
// cache is not charged to the run's memory beside the copy the run keeps (Linux; a no-op elsewhere).
func DropCache(f *os.File, off, n int64) { dropCache(f, off, n) }

func (b *bufferedFile) Size() int64  { return b.size }
func (b *bufferedFile) Align() int   { return 1 }
func (b *bufferedFile) Direct() bool { return false }
func (b *bufferedFile) Close() error { return b.f.Close() }
func (b *bufferedFile) Fd() uintptr  { return b.f.Fd() }
func (b *bufferedFile) Path() string { return b.path }

var _ File = (*bufferedFile)(nil)
