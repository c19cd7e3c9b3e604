package bench

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sort"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"

	"github.com/expertsniper/expertsniper/gguf"
	"github.com/expertsniper/expertsniper/sniper"
)

// expertRead is one contiguous byte range the streaming engine reads for one expert of one tensor.
type expertRead struct {
	off, n int64
}

// readPlan lists, for a model, every per-expert read and what one token costs at 0% cache hits.
type readPlan struct {
	reads             []expertRead
	readsPerToken     int
	missBytesPerToken int64
	typicalRead       int64
	// layerBytes are a dense model's FFN bytes per layer (nil for MoE).
	layerBytes []int64
}

// planReads indexes the model the way the sniper does and derives its reads: each streamed tensor
// that is actually read (a fused qwen35moe gate_up is read through its gate and up parts), each
// expert, each part. One token misses expert_used experts in every layer.
func planReads(path string) (readPlan, error) {
	f, err := gguf.Open(path)
	if err != nil {
		return readPlan{}, fmt.Errorf("disk probe: %w", err)
	}
	mode := sniper.ModeExperts
	if !sniper.IsMoE(f) {
		mode = sniper.ModeDense // a dense model streams each layer's FFN whole
	}
	idx, err := sniper.IndexGGUF(path, f, mode)
	if err != nil {
		return readPlan{}, fmt.Errorf("disk probe: index %q: %w", path, err)
	}
	used := 1
	if mode == sniper.ModeExperts {
		u, ok := f.ArchUint("expert_used_count")
		if !ok || u == 0 {
			return readPlan{}, fmt.Errorf("disk probe: %q has experts but no %s.expert_used_count", path, f.Architecture())
		}
		used = int(u)
	}
	var p readPlan
	var sizes []int64
	for layer := 0; layer < idx.Layers; layer++ {
		tensors := idx.LayerTensors(layer)
		partsPerExpert := 0
		for _, t := range tensors {
			if t.FusedInto != "" {
				continue // read as part of the fused tensor
			}
			for e := 0; e < t.Experts; e++ {
				for _, part := range t.Parts {
					p.reads = append(p.reads, expertRead{off: part.FileOffset + int64(e)*part.Stride, n: part.Len})
				}
			}
			partsPerExpert += len(t.Parts)
			for _, part := range t.Parts {
				sizes = append(sizes, part.Len)
			}
		}
		if len(tensors) > 0 {
			p.readsPerToken += used * partsPerExpert
			p.missBytesPerToken += int64(used) * idx.ExpertBytes(layer)
			if mode == sniper.ModeDense {
				p.layerBytes = append(p.layerBytes, idx.ExpertBytes(layer))
			}
		}
	}
	if len(p.reads) == 0 {
		return readPlan{}, fmt.Errorf("disk probe: %q has no streamed tensors", path)
	}
	sort.Slice(sizes, func(i, j int) bool { return sizes[i] < sizes[j] })
	p.typicalRead = sizes[len(sizes)/2]
	return p, nil
}

// ProbeOptions bound the disk probe.
type ProbeOptions struct {
	// Threads reading in parallel (default 2: about 2 reads in flight reach this disk's ceiling).
	Threads int
	// Duration to start reads for (default 3 s: each thread finishes the read it is in, and reads at
	// least once), and MaxBytes to stop earlier (default 8 GiB).
	Duration time.Duration
	MaxBytes int64
	// Seed of the random choice of experts.
	Seed uint64
	// FS opens the model (default sniper.DirectFS: O_DIRECT on Linux, F_NOCACHE on macOS).
	FS sniper.FS
}

// ProbeDisk measures direct-read throughput on the model file itself, reading random experts' byte
// ranges inside its expert tensors exactly as the sniper does (aligned supersets into aligned memory),
// and derives the decode ceiling when no expert is cached.
func ProbeDisk(ctx context.Context, path string, o ProbeOptions) (DiskBound, error) {
	if o.Threads <= 0 {
		o.Threads = 2
	}
	if o.Duration <= 0 {
		o.Duration = 3 * time.Second
	}
	if o.MaxBytes <= 0 {
		o.MaxBytes = 8 << 30
	}
	if o.FS == nil {
		o.FS = sniper.DirectFS{}
	}
	plan, err := planReads(path)
	if err != nil {
		return DiskBound{}, err
	}
	f, err := o.FS.Open(path)
	if err != nil {
		return DiskBound{}, fmt.Errorf("disk probe: open %q: %w", path, err)
	}
	defer f.Close()
	// Whole pages, as the sniper reads (direct I/O needs the file system's alignment; 4096 covers it).
	align := int64(max(f.Align(), 4096))

	// The duration stops starting reads, it does not cut one short: every thread completes at least
	// one, so that a loaded machine (a thread scheduled late, a read slower than the whole duration)
	// measures a slow disk instead of failing with nothing read. Only ctx cancels reads.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var useful atomic.Int64
	var wg sync.WaitGroup
	errs := make(chan error, o.Threads)
	start := time.Now()
	deadline := start.Add(o.Duration)
	for w := 0; w < o.Threads; w++ {
		wg.Add(1)
		go func(w int) {
			defer wg.Done()
			rng := rand.New(rand.NewPCG(o.Seed, uint64(w)+1))
			var buf []byte
			for first := true; ctx.Err() == nil && (first || time.Now().Before(deadline) && useful.Load() < o.MaxBytes); first = false {
				r := plan.reads[rng.IntN(len(plan.reads))]
				lo := r.off / align * align
				hi := (r.off + r.n + align - 1) / align * align
				if hi > f.Size() {
					hi = f.Size() // the last bytes of a file need no padding beyond its end
				}
				if int64(cap(buf)) < hi-lo {
					buf = alignedBuffer(hi-lo, align)
				}
				if err := f.ReadAt(ctx, buf[:hi-lo], lo); err != nil {
					if ctx.Err() != nil {
						return
					}
					errs <- fmt.Errorf("disk probe: read %d bytes at offset %d of %q: %w", hi-lo, lo, path, err)
					cancel()
					return
				}
				useful.Add(r.n)
			}
		}(w)
	}
	wg.Wait()
	elapsed := time.Since(start)
	close(errs)
	if err := <-errs; err != nil {
		return DiskBound{}, err
	}
	if err := context.Cause(ctx); err != nil {
		return DiskBound{}, fmt.Errorf("disk probe: %w", err)
	}
	if useful.Load() == 0 {
		return DiskBound{}, fmt.Errorf("disk probe: nothing read from %q in %v", path, o.Duration)
	}
	gbps := float64(useful.Load()) / elapsed.Seconds() / 1e9
	return DiskBound{ReadSize: plan.typicalRead, ReadsPerToken: plan.readsPerToken,
		MissBytesPerToken: plan.missBytesPerToken, Threads: o.Threads, GBps: gbps, Direct: f.Direct(),
		TokPerSec: gbps * 1e9 / float64(plan.missBytesPerToken), LayerBytes: plan.layerBytes}, nil
}

// alignedBuffer returns n bytes whose address is a multiple of align (direct I/O needs it). Go's heap
// does not move objects, so aligning inside a larger slice is enough.
func alignedBuffer(n, align int64) []byte {
	raw := make([]byte, n+align)
	shift := int64(0)
	if rem := int64(uintptr(unsafe.Pointer(&raw[0]))) % align; rem != 0 {
		shift = align - rem
	}
	return raw[shift : shift+n : shift+n]
}
