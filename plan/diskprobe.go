package plan

import (
	"context"
	"errors"
	"fmt"
	"math/rand/v2"
	"sync"
	"sync/atomic"
	"time"
)

// ProbeOptions bound a disk probe.
type ProbeOptions struct {
	// ReadSize is the bytes of one read; use the model's bytes per expert (rounded to 4 KiB).
	ReadSize int64
	// Duration and MaxBytes stop the probe, whichever comes first.
	Duration time.Duration
	MaxBytes int64
	// Readers in parallel: about 2 reach an NVMe disk's ceiling (docs/design.md §5).
	Readers int
}

// directReader reads a file bypassing the page cache (O_DIRECT, F_NOCACHE), so that the probe
// measures the disk rather than RAM. Reads are at 4 KiB-aligned offsets into aligned buffers.
type directReader interface {
	ReadAt(buf []byte, off int64) (int, error)
	Size() int64
	NewBuffer(n int) ([]byte, func())
	Close() error
}

// ErrNoDirectIO means the filesystem refuses reads that bypass the page cache (tmpfs, some FUSE
// filesystems): a probe would measure memory, not the disk.
var ErrNoDirectIO = errors.New("direct I/O is not supported here")

// ProbeDisk measures the sustained direct-read speed of the disk holding path by reading ReadSize
// pieces at random offsets of the file itself, as the sniper will. It returns bytes per second.
func ProbeDisk(ctx context.Context, path string, o ProbeOptions) (float64, error) {
	r, err := openDirect(path)
	if err != nil {
		return 0, fmt.Errorf("probe disk with %q: %w", path, err)
	}
	defer r.Close()
	return probe(ctx, r, o)
}

func probe(ctx context.Context, r directReader, o ProbeOptions) (float64, error) {
	const align = 4096
	size := r.Size()
	chunk := (max(o.ReadSize, 64<<10) + align - 1) / align * align
	if chunk > size {
		chunk = size / align * align
	}
	if chunk <= 0 {
		return 0, fmt.Errorf("file of %d bytes is too small to probe", size)
	}
	readers := max(o.Readers, 1)
	if o.Duration <= 0 {
		o.Duration = 300 * time.Millisecond
	}
	if o.MaxBytes <= 0 {
		o.MaxBytes = 1 << 30
	}
	// The duration stops starting reads: every reader completes at least one, so that a loaded
	// machine (a reader scheduled late) measures a slow disk rather than failing with nothing read.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var total atomic.Int64
	var firstErr error
	var once sync.Once
	var wg sync.WaitGroup
	start := time.Now()
	deadline := start.Add(o.Duration)
	for w := 0; w < readers; w++ {
		wg.Add(1)
		go func(seed uint64) {
			defer wg.Done()
			buf, free := r.NewBuffer(int(chunk))
			defer free()
			rng := rand.New(rand.NewPCG(seed, uint64(time.Now().UnixNano())))
			slots := (size - chunk) / align
			for first := true; ctx.Err() == nil && (first || time.Now().Before(deadline) && total.Load() < o.MaxBytes); first = false {
				off := int64(0)
				if slots > 0 {
					off = rng.Int64N(slots+1) * align
				}
				n, err := r.ReadAt(buf, off)
				if err != nil && n == 0 {
					once.Do(func() { firstErr = fmt.Errorf("read %d bytes at %d: %w", chunk, off, err) })
					cancel()
					return
				}
				if n == 0 {
					once.Do(func() { firstErr = fmt.Errorf("read at %d returned no data", off) })
					cancel()
					return
				}
				total.Add(int64(n))
			}
		}(uint64(w) + 1)
	}
	wg.Wait()
	elapsed := time.Since(start)
	if firstErr != nil {
		return 0, firstErr
	}
	if err := ctx.Err(); err != nil {
		return 0, fmt.Errorf("probe: %w", err)
	}
	if total.Load() == 0 || elapsed <= 0 {
		return 0, fmt.Errorf("probe read nothing in %s", elapsed)
	}
	return float64(total.Load()) / elapsed.Seconds(), nil
}
