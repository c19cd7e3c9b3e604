package sniper

import (
	"errors"
	"unsafe"
)

// Memory recycling. On these machines a freshly faulted page costs about 10 µs per 4 KiB (the host
// reclaims what the guest frees; docs/design.md §5), so evicting an expert with MADV_DONTNEED and faulting
// the next one in costs more than reading it from disk. Instead, the resident pages of an evicted
// expert become a spare; the next expert to be read takes a spare of the same size, and the pages are
// moved under its address (mremap on Linux) before the read fills them. No page is freed or faulted.
// Spares nobody took by the end of a load are released as before, so memory stays within the budget.
// Where pages cannot be moved (macOS, an old kernel), eviction simply releases them.

// errMoveUnsupported is returned by movePages where the platform cannot move pages.
var errMoveUnsupported = errors.New("moving pages is not supported on this platform")

// recycler keeps the spares: page-aligned ranges of resident memory, at the addresses of evicted
// experts, whose contents are no longer valid, grouped by length.
type recycler struct {
	enabled bool
	spares  map[int][][]byte
	// dests is every range that ever received moved pages: each became a mapping of its own in the
	// kernel, and the number of mappings of a process is limited (vm.max_map_count).
	dests    map[uintptr]struct{}
	maxDests int
	// Recycled counts ranges moved under a new expert; Released ranges given back to the system.
	recycled, released int64
}

func newRecycler(enabled bool) *recycler {
	return &recycler{enabled: enabled && canMovePages(), spares: map[int][][]byte{}, dests: map[uintptr]struct{}{}, maxDests: maxMovedRanges()}
}

// put makes b (page aligned, the interior of an evicted expert) a spare, or releases it at once when
// recycling is off.
func (r *recycler) put(b []byte) error {
	if len(b) == 0 {
		return nil
	}
	if !r.enabled {
		r.released++
		return evictPages(b)
	}
	r.spares[len(b)] = append(r.spares[len(b)], b)
	return nil
}

// take moves the pages of a spare of the same length under dst, if there is one; dst's previous
// contents are discarded. It reports whether it moved anything; a failure to move is not an error
// (the read simply faults fresh pages), except that recycling is then switched off.
func (r *recycler) take(dst []byte) bool {
	if !r.enabled || len(dst) == 0 {
		return false
	}
	free := r.spares[len(dst)]
	if len(free) == 0 {
		return false
	}
	addr := uintptr(unsafe.Pointer(&dst[0]))
	if _, seen := r.dests[addr]; !seen && len(r.dests) >= r.maxDests {
		return false
	}
	src := free[len(free)-1]
	r.spares[len(dst)] = free[:len(free)-1]
	if err := movePages(src, dst); err != nil {
		// Keep the spare (its pages are still in place) and stop recycling: release the rest.
		r.spares[len(dst)] = append(r.spares[len(dst)], src)
		r.enabled = false
		_ = r.drain()
		return false
	}
	r.dests[addr] = struct{}{}
	r.recycled++
	return true
}

// drain releases every spare left.
func (r *recycler) drain() error {
	var errs []error
	for n, free := range r.spares {
		for _, b := range free {
			r.released++
			errs = append(errs, evictPages(b))
		}
		r.spares[n] = free[:0]
	}
	return errors.Join(errs...)
}

// interior is the page-aligned part of the tensor's bytes [off, off+n): the pages that belong to
// this range alone (the pages at its edges may be shared with neighbouring experts).
func (r *region) interior(off, n int64) []byte {
	base := int64(uintptr(r.data) - uintptr(unsafe.Pointer(&r.mapping[0])))
	start := alignUp(base+off, sysPageSize)
	end := alignDown(base+off+n, sysPageSize)
	if end <= start {
		return nil
	}
	return r.mapping[start:end:end]
}

// releaseSpares gives the spares no read took back to the system. Called with s.mu held.
func (s *Sniper) releaseSpares() {
	if err := s.rec.drain(); err != nil {
		s.stats.ReleaseErrors++
	}
}
