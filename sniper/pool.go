package sniper

import (
	"context"
	"errors"
	"fmt"
	"runtime"
	"sync"
	"sync/atomic"
	"time"
)

// DefaultReaders is how many reads the pool keeps in flight. About two ≥0.5 MiB direct reads already
// saturate a fast SSD; more hide latency of smaller reads.
const DefaultReaders = 8

// ReadRequest asks for file bytes [Offset, Offset+len(Dst)) to be read into Dst. With Dst nil, the
// pool reads Len bytes into one of its own aligned bounce buffers and hands them to Then, on the
// reading goroutine, before reusing the buffer: at most one buffer per reader is ever live.
//
// With Segs set, the request is one gathered read of consecutive file bytes from Offset on (one
// preadv: see VectorReader), each segment taking the next bytes in turn: straight into its Dst, or
// (Dst nil) Len bytes into a bounce buffer handed to its Then.
type ReadRequest struct {
	Offset int64
	Dst    []byte
	Len    int
	Then   func(b []byte)
	Segs   []Segment
}

// Segment is one destination of a gathered read.
type Segment struct {
	Dst  []byte
	Len  int
	Then func(b []byte)
}

// Pool runs preads of one file in parallel, at most n at a time.
type Pool struct {
	file   File
	sem    chan struct{}
	lat    *latencies
	reads  atomic.Int64
	issued atomic.Int64
	bufMu  sync.Mutex
	// free are bounce buffers kept for reuse (each handed out again for any read it can hold, the
	// smallest first), freeBytes their capacity, at most StagingBytes(readers)/2. Reusing them
	// matters: a fresh buffer's every page faults on first use, which on these VMs costs about as
	// much as reading it, and under a memory cap makes the kernel reclaim to find it room.
	free      [][]byte
	freeBytes int
	// mapped marks bounce buffers that are anonymous mappings (by first byte): one not kept for
	// reuse is unmapped at once, so that staging memory is back with the system as soon as it is
	// free (garbage in the Go heap would hold it until the runtime returns it, under a memory cap).
	mapped  map[*byte]bool
	closeMu sync.RWMutex
	closed  bool
	noBatch atomic.Bool // the file is a BatchReader that turned batches down
}

// NewPool reads f with up to readers parallel preads (DefaultReaders if readers <= 0).
func NewPool(f File, readers int) *Pool {
	if readers <= 0 {
		readers = DefaultReaders
	}
	return &Pool{file: f, sem: make(chan struct{}, readers), lat: &latencies{}, mapped: map[*byte]bool{}}
}

// ErrClosed is returned by a pool or sniper used after Close.
var ErrClosed = errors.New("sniper: closed")

// Read performs every request and returns when all are done. The first error cancels the rest and is
// returned (it names the file and offset).
func (p *Pool) Read(ctx context.Context, reqs []ReadRequest) error {
	p.closeMu.RLock()
	defer p.closeMu.RUnlock()
	if p.closed {
		return ErrClosed
	}
	if br, ok := p.file.(BatchReader); ok && !p.noBatch.Load() {
		// A batch lays out every read's buffers up front: bounced bytes go in batches of at most
		// half the staging area (a prompt's many converted experts would otherwise all be staged).
		var err error
		for rest := reqs; len(rest) > 0 && err == nil; {
			n := p.stagedPrefix(rest)
			err = p.readBatch(ctx, br, rest[:n])
			rest = rest[n:]
		}
		if !errors.Is(err, ErrNoBatch) {
			return err
		}
		p.noBatch.Store(true)
	}
	if len(reqs) == 1 {
		return p.readOne(ctx, reqs[0])
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var (
		wg       sync.WaitGroup
		errOnce  sync.Once
		firstErr error
	)
	for _, r := range reqs {
		select {
		case p.sem <- struct{}{}:
		case <-ctx.Done():
		}
		if ctx.Err() != nil {
			break
		}
		wg.Add(1)
		go func(r ReadRequest) {
			defer wg.Done()
			defer func() { <-p.sem }()
			if err := p.readOne(ctx, r); err != nil {
				errOnce.Do(func() { firstErr = err; cancel() })
			}
		}(r)
	}
	wg.Wait()
	if firstErr != nil {
		return firstErr
	}
	return ctx.Err()
}

func (p *Pool) readOne(ctx context.Context, r ReadRequest) error {
	bufs, bounce := p.requestBufs(r)
	if bounce != nil {
		defer p.putBuf(bounce)
	}
	if err := p.readRange(ctx, bufs, r.Offset); err != nil {
		return err
	}
	deliver(r, bufs)
	return nil
}

// requestBufs lays out r's destinations as the buffers of one read: its Dst; a bounce buffer of Len
// bytes; or, for segments, each one's Dst or its share of one bounce buffer that holds every bounced
// segment. bounce is the pool's buffer to give back afterwards (nil if none).
func (p *Pool) requestBufs(r ReadRequest) (bufs [][]byte, bounce []byte) {
	switch {
	case r.Segs != nil:
		if bounced := bouncedBytes(r); bounced > 0 {
			bounce = p.getBuf(bounced)
		}
		bufs = make([][]byte, len(r.Segs))
		at := 0
		for i, sg := range r.Segs {
			if sg.Dst != nil {
				bufs[i] = sg.Dst
			} else {
				bufs[i] = bounce[at : at+sg.Len]
				at += sg.Len
			}
		}
		return bufs, bounce
	case r.Dst == nil:
		bounce = p.getBuf(r.Len)
		return [][]byte{bounce}, bounce
	default:
		return [][]byte{r.Dst}, nil
	}
}

// bufsLen is the bytes bufs hold.
func bufsLen(bufs [][]byte) int {
	n := 0
	for _, b := range bufs {
		n += len(b)
	}
	return n
}

// deliver hands what r read into bufs (laid out by requestBufs) to its Then functions.
func deliver(r ReadRequest, bufs [][]byte) {
	switch {
	case r.Segs != nil:
		for i, sg := range r.Segs {
			if sg.Dst == nil && sg.Then != nil {
				sg.Then(bufs[i])
			}
		}
	case r.Then != nil:
		r.Then(bufs[0])
	}
}

// StagingBytes is the most memory a pool with readers parallel reads holds in bounce buffers: the
// reads a batch stages at once (half of it: one layer's experts at decode take about 14 MiB on the
// Qwen3.5-35B-A3B shape), and as much again of free buffers kept for reuse. Reads converted on
// their way into place (sniper.Convert) are all bounced, so the memory plan counts it.
func StagingBytes(readers int) int64 {
	if readers <= 0 {
		readers = DefaultReaders
	}
	return int64(readers) * (maxGatherBytes + 2*pageSize)
}

// bouncedBytes is what r reads into bounce buffers.
func bouncedBytes(r ReadRequest) int {
	switch {
	case r.Segs != nil:
		n := 0
		for _, sg := range r.Segs {
			if sg.Dst == nil {
				n += sg.Len
			}
		}
		return n
	case r.Dst == nil:
		return r.Len
	}
	return 0
}

// stagedPrefix is how many of reqs (at least one) one batch reads, so that their bounced bytes stay
// within half the staging area.
func (p *Pool) stagedPrefix(reqs []ReadRequest) int {
	limit := StagingBytes(cap(p.sem)) / 2
	var staged int64
	for i, r := range reqs {
		staged += int64(bouncedBytes(r))
		if staged > limit && i > 0 {
			return i
		}
	}
	return len(reqs)
}

// readBatch performs reqs with one BatchReader batch of at most the pool's readers in flight. What a
// read hands to its Then functions (copies out of bounce buffers, conversions) runs on up to
// GOMAXPROCS goroutines while the other reads go on; the batch returns when all of it is done.
func (p *Pool) readBatch(ctx context.Context, br BatchReader, reqs []ReadRequest) error {
	reads := make([]VectorRead, len(reqs))
	var bounces [][]byte
	defer func() {
		for _, b := range bounces {
			p.putBuf(b)
		}
	}()
	for i, r := range reqs {
		bufs, bounce := p.requestBufs(r)
		if bounce != nil {
			bounces = append(bounces, bounce)
		}
		if err := p.checkRange(r.Offset, bufsLen(bufs)); err != nil {
			return err
		}
		reads[i] = VectorRead{Bufs: bufs, Off: r.Offset}
	}
	var (
		wg       sync.WaitGroup
		panicked atomic.Pointer[string]
	)
	workers := make(chan struct{}, runtime.GOMAXPROCS(0))
	err := br.ReadBatch(ctx, reads, cap(p.sem), func(i int, took time.Duration) {
		p.lat.add(took)
		p.reads.Add(1)
		p.issued.Add(int64(bufsLen(reads[i].Bufs)))
		if bouncedBytes(reqs[i]) == 0 {
			return
		}
		workers <- struct{}{}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer func() { <-workers }()
			defer func() {
				if r := recover(); r != nil {
					msg := fmt.Sprint(r)
					panicked.CompareAndSwap(nil, &msg)
				}
			}()
			deliver(reqs[i], reads[i].Bufs)
		}()
	})
	wg.Wait() // the bounce buffers go back to the pool after this
	if msg := panicked.Load(); msg != nil && err == nil {
		err = fmt.Errorf("read: internal error handling read bytes: %s", *msg)
	}
	return err
}

// minMappedBuf is the smallest bounce buffer made as its own mapping (smaller ones come from the Go
// heap: a page or two that bounce the shared edges of direct reads).
const minMappedBuf = 64 << 10

func (p *Pool) getBuf(n int) []byte {
	p.bufMu.Lock()
	defer p.bufMu.Unlock()
	best := -1
	for i, b := range p.free {
		if cap(b) >= n && (best < 0 || cap(b) < cap(p.free[best])) {
			best = i
		}
	}
	if best >= 0 {
		b := p.free[best]
		p.free = append(p.free[:best], p.free[best+1:]...)
		p.freeBytes -= cap(b)
		return b[:n]
	}
	if n >= minMappedBuf {
		if m, err := mapAnon(int(alignUp(int64(n), pageSize))); err == nil {
			p.mapped[&m[0]] = true
			return m[:n]
		}
	}
	return alignedBuffer(n, pageSize)
}

func (p *Pool) putBuf(b []byte) {
	p.bufMu.Lock()
	defer p.bufMu.Unlock()
	if int64(p.freeBytes+cap(b)) <= StagingBytes(cap(p.sem))/2 {
		p.free = append(p.free, b)
		p.freeBytes += cap(b)
		return
	}
	if p.mapped[&b[0]] {
		delete(p.mapped, &b[0])
		_ = unmapAnon(b[:cap(b)]) // nothing refers to it any more; a failure only leaves it mapped
	}
}

// checkRange refuses a read of total bytes from off on that does not lie inside the file.
func (p *Pool) checkRange(off int64, total int) error {
	if off < 0 || off+int64(total) > p.file.Size() {
		return &ReadError{Path: p.file.Path(), Offset: off, Len: total,
			Err: fmt.Errorf("range ends at %d, past the end of the file (%d bytes): was the file truncated?", off+int64(total), p.file.Size())}
	}
	return nil
}

// readRange fills bufs with the file's bytes from off on, as one request, and counts it.
func (p *Pool) readRange(ctx context.Context, bufs [][]byte, off int64) error {
	total := bufsLen(bufs)
	if err := p.checkRange(off, total); err != nil {
		return err
	}
	start := time.Now()
	err := ReadVector(ctx, p.file, bufs, off)
	p.lat.add(time.Since(start))
	p.reads.Add(1)
	p.issued.Add(int64(total))
	if err != nil {
		var re *ReadError
		if !errors.As(err, &re) {
			err = &ReadError{Path: p.file.Path(), Offset: off, Len: total, Err: err}
		}
		return err
	}
	return nil
}

// Close waits for reads in flight; later reads fail with ErrClosed. It does not close the file.
func (p *Pool) Close() {
	p.closeMu.Lock()
	p.closed = true
	p.closeMu.Unlock()
	p.bufMu.Lock()
	defer p.bufMu.Unlock()
	for _, b := range p.free {
		if p.mapped[&b[0]] {
			delete(p.mapped, &b[0])
			_ = unmapAnon(b[:cap(b)])
		}
	}
	p.free, p.freeBytes = nil, 0
}
