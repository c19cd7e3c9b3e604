package sniper

import (
	"context"
	"errors"
	"fmt"
	"io"
	"runtime"
	"sync"
	"syscall"
	"time"
	"unsafe"

	"golang.org/x/sys/unix"
)

// Linux AIO (io_submit/io_getevents) on the direct descriptor. With a goroutine per read, each read
// blocks an OS thread, and its completion wakes that thread on a core the model computes on; on the
// VMs measured here every such wake-up and context switch is a trip through the hypervisor, and the
// compute threads' barriers wait for whichever of them was preempted. A batch costs one submission
// and one wake-up per reap instead. The raw ABI is used (no libaio): it is small and stable.

// aioCmdPreadv is IOCB_CMD_PREADV.
const aioCmdPreadv = 7

// aioDepth is the events one AIO context holds: the most reads one batch keeps in flight.
const aioDepth = 64

// iocb is struct iocb of linux/aio_abi.h (little-endian layout).
type iocb struct {
	data     uint64
	key      uint32
	rwFlags  int32
	opcode   uint16
	reqprio  int16
	fildes   uint32
	buf      uint64
	nbytes   uint64
	offset   int64
	reserved uint64
	flags    uint32
	resfd    uint32
}

// ioEvent is struct io_event.
type ioEvent struct {
	data uint64
	obj  uint64
	res  int64
	res2 int64
}

// aioContexts is a free list of AIO contexts: each batch has one to itself, so that the events it
// reaps are its own.
type aioContexts struct {
	mu     sync.Mutex
	free   []uintptr
	all    []uintptr
	broken bool // io_setup failed once: AIO is not available here
	closed bool
}

func (a *aioContexts) get() (uintptr, error) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closed {
		return 0, ErrClosed
	}
	if a.broken {
		return 0, ErrNoBatch
	}
	if n := len(a.free); n > 0 {
		c := a.free[n-1]
		a.free = a.free[:n-1]
		return c, nil
	}
	var c uintptr
	if _, _, errno := unix.Syscall(unix.SYS_IO_SETUP, aioDepth, uintptr(unsafe.Pointer(&c)), 0); errno != 0 {
		// ENOSYS (kernels built without AIO) or EAGAIN (aio-max-nr reached): read with threads.
		a.broken = true
		return 0, ErrNoBatch
	}
	a.all = append(a.all, c)
	return c, nil
}

func (a *aioContexts) put(c uintptr) {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.closed {
		unix.Syscall(unix.SYS_IO_DESTROY, c, 0, 0)
		return
	}
	a.free = append(a.free, c)
}

// close destroys the idle contexts; one still in use is destroyed when it is put back.
func (a *aioContexts) close() {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.closed = true
	for _, c := range a.free {
		unix.Syscall(unix.SYS_IO_DESTROY, c, 0, 0)
	}
	a.free = nil
}

// ReadBatch performs reads with Linux AIO, up to depth in flight. A read whose offset or buffers are
// not aligned for direct I/O, or that the file system turns down, is done with ReadvAt instead.
func (d *directFile) ReadBatch(ctx context.Context, reads []VectorRead, depth int, done func(i int, took time.Duration)) error {
	c, err := d.aio.get()
	if err != nil {
		return err
	}
	defer d.aio.put(c)
	depth = max(1, min(depth, aioDepth))
	b := aioBatch{d: d, ctx: c, reads: reads, done: done, submitted: make([]time.Time, len(reads))}
	return b.run(ctx, depth)
}

// aioBatch is one ReadBatch in progress.
type aioBatch struct {
	d     *directFile
	ctx   uintptr
	reads []VectorRead
	done  func(i int, took time.Duration)
	// submitted[i] is when read i went to the kernel.
	submitted []time.Time
	inflight  int
	firstErr  error
	// iovecs of the reads in flight, kept reachable until their submission is over.
	iovs [][]unix.Iovec
}

func (b *aioBatch) fail(err error) {
	if b.firstErr == nil {
		b.firstErr = err
	}
}

func (b *aioBatch) run(ctx context.Context, depth int) error {
	next := 0
	for b.firstErr == nil && next < len(b.reads) || b.inflight > 0 {
		if err := ctx.Err(); err != nil {
			b.fail(err)
		}
		// Submit while there is room (nothing new once something failed).
		var cbs []*iocb
		for b.firstErr == nil && next < len(b.reads) && b.inflight+len(cbs) < depth {
			i := next
			next++
			cb, ok := b.prepare(i)
			if !ok {
				// Not aligned: read it here and now (rare: slot reads are page-aligned).
				b.readNow(ctx, i)
				continue
			}
			cbs = append(cbs, cb)
		}
		if len(cbs) > 0 {
			b.submit(ctx, cbs)
		}
		if b.inflight > 0 {
			b.reap(ctx)
		}
	}
	return b.firstErr
}

// prepare builds the control block of read i, or reports that it cannot go direct.
func (b *aioBatch) prepare(i int) (*iocb, bool) {
	r := b.reads[i]
	if len(r.Bufs) == 0 || len(r.Bufs) > maxIovecs || !b.d.aligned(r.Off, r.Bufs) {
		return nil, false
	}
	iov := make([]unix.Iovec, len(r.Bufs))
	for j, buf := range r.Bufs {
		iov[j].Base = &buf[0]
		iov[j].SetLen(len(buf))
	}
	b.iovs = append(b.iovs, iov)
	return &iocb{data: uint64(i), opcode: aioCmdPreadv, fildes: uint32(b.d.direct.Fd()),
		buf: uint64(uintptr(unsafe.Pointer(&iov[0]))), nbytes: uint64(len(iov)), offset: r.Off}, true
}

// submit hands cbs to the kernel, retrying after partial submissions; what it cannot submit is read
// with ReadvAt (EINVAL: the file system will not do this read direct) or fails the batch.
func (b *aioBatch) submit(ctx context.Context, cbs []*iocb) {
	now := time.Now()
	for _, cb := range cbs {
		b.submitted[cb.data] = now
	}
	for len(cbs) > 0 {
		n, _, errno := unix.Syscall(unix.SYS_IO_SUBMIT, b.ctx, uintptr(len(cbs)), uintptr(unsafe.Pointer(&cbs[0])))
		runtime.KeepAlive(cbs)
		// (On an error the kernel submitted nothing.)
		if errno == unix.EINTR || errno == unix.EAGAIN && b.inflight > 0 {
			if errno == unix.EAGAIN {
				b.reap(ctx) // out of kernel resources: wait for some of ours to complete
			}
			continue
		}
		if errno != 0 {
			// The first control block was refused: read it with ReadvAt and go on.
			b.readNow(ctx, int(cbs[0].data))
			cbs = cbs[1:]
			continue
		}
		b.inflight += int(n)
		cbs = cbs[n:]
	}
	b.iovs = b.iovs[:0] // the kernel copied them
}

// reap waits for at least one completion and handles every one that is there.
func (b *aioBatch) reap(ctx context.Context) {
	var events [aioDepth]ioEvent
	// A timeout, so that a cancelled context is noticed even while a read hangs; reads in flight
	// are still waited for (their buffers belong to them until they complete).
	ts := unix.NsecToTimespec(100e6)
	n, _, errno := unix.Syscall6(unix.SYS_IO_GETEVENTS, b.ctx, 1, uintptr(min(b.inflight, aioDepth)),
		uintptr(unsafe.Pointer(&events[0])), uintptr(unsafe.Pointer(&ts)), 0)
	if errno != 0 {
		if errno != unix.EINTR {
			// Cannot happen with a valid context; stop submitting and keep waiting.
			b.fail(fmt.Errorf("io_getevents: %w", errno))
		}
		return
	}
	for _, ev := range events[:n] {
		b.inflight--
		i := int(ev.data)
		r := b.reads[i]
		total := bufsLen(r.Bufs)
		switch {
		case ev.res < 0:
			errno := syscall.Errno(-ev.res)
			if errno == unix.EINVAL {
				b.readNow(ctx, i)
				continue
			}
			b.fail(&ReadError{Path: b.d.Path(), Offset: r.Off, Len: total, Err: errno})
		case int(ev.res) < total:
			// A short count: read the rest synchronously (EOF there is an error).
			if err := b.finish(ctx, r, int(ev.res), total); err != nil {
				b.fail(err)
			} else {
				b.done(i, time.Since(b.submitted[i]))
			}
		default:
			b.done(i, time.Since(b.submitted[i]))
		}
	}
}

// readNow reads read i with ReadvAt, here and now.
func (b *aioBatch) readNow(ctx context.Context, i int) {
	start := time.Now()
	if err := b.d.ReadvAt(ctx, b.reads[i].Bufs, b.reads[i].Off); err != nil {
		b.fail(err)
		return
	}
	b.done(i, time.Since(start))
}

// finish reads what a short AIO read of r left, from byte got on.
func (b *aioBatch) finish(ctx context.Context, r VectorRead, got, total int) error {
	if got == 0 {
		return &ReadError{Path: b.d.Path(), Offset: r.Off, Len: total, Err: io.ErrUnexpectedEOF}
	}
	var rest [][]byte
	skip := got
	for _, buf := range r.Bufs {
		if skip >= len(buf) {
			skip -= len(buf)
			continue
		}
		rest = append(rest, buf[skip:])
		skip = 0
	}
	if err := readEach(ctx, b.d.buffered, rest, r.Off+int64(got)); err != nil {
		if !errors.As(err, new(*ReadError)) {
			err = &ReadError{Path: b.d.Path(), Offset: r.Off, Len: total, Err: err}
		}
		return err
	}
	return nil
}
