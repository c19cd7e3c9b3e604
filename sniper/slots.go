package sniper

import (
	"context"
	"errors"
	"fmt"
	"sort"
	"strconv"
	"strings"
	"unsafe"
)

// Expert slots (ModeExperts). Each streamed expert tensor's memory is an array of slots, shared by all
// the layers of a class (layers whose tensors have the same kinds and sizes), and an expert is read
// into whichever slot the cache gives it. The router's choices are rewritten to slot numbers before
// the expert matmuls run (EnsureSlots; the binding writes them back into the graph and gives every
// such tensor the Binding's ne[2] and nb[2]), so llama.cpp computes with the same bytes at another
// address: the same results, bit for bit.
//
// A slot's stride is the expert's bytes rounded up to whole pages plus one page, and each layer's
// tensor starts at its own offset within the first page (its data pointer), the page offset its
// experts have in the file: so every layer's experts are read straight into their slots with direct
// I/O whatever their alignment in the file, and only the partial pages at the ends of each part go
// through a bounce buffer.
//
// Why not keep every expert at its own address (expert e at data + e·nb[2]) and map memory in and
// out under it? Because the page tables would change on every load, and on these VMs the CPU's first
// access through a new page-table entry costs about 8 µs per 4 KiB page (measured: summing 576 KiB
// of freshly mapped or mremap-moved pages takes 1.1 ms, of pages mapped before 25 µs), which is more
// than reading the expert from disk. Slots are mapped once and then only ever rewritten, by direct
// I/O (the kernel's writes do not pay that cost) or by a copy into pages that are already mapped.
//
// A class has Regular slots, the cache (its share of the budget), and overflow slots for working
// sets that do not fit in the cache (a prompt's micro-batch may choose every expert of a layer, more
// than a small budget holds); an overflow slot's pages are released as soon as its expert is unpinned,
// so the budget holds between Ensures.

// Overflow slots come in whole layers' worth of working sets: one per context that may decode at
// once (Options.Contexts) plus one spare, for when every slot of the cache is pinned (a server's
// contexts with a small cache). They cost address space until used, but also ne[2] of the expert
// tensors, and llama.cpp's expert matmul does work per slot (it counts rows per expert and resets a
// cache-line-sized counter per expert, whether chosen or not), so they are not made generous. More
// concurrent working sets than this make an Ensure fail with errNoSlot.
func overflowSetsFor(contexts int) int { return max(contexts, 1) + 1 }

// slotClass is the slots of the layers whose streamed tensors look alike.
type slotClass struct {
	layers    []int
	kinds     []string         // the kinds of tensor each layer binds ("ffn_down_exps.weight", ...)
	bytes     map[string]int64 // expert bytes per kind
	slotBytes int64            // one slot over all kinds: what one resident expert costs
	regular   int              // slots [0, regular) hold the cache; [regular, n) are overflow
	// populate: fault the cache's slots in at once (a finite budget: that memory is promised to it).
	populate bool
	n        int
	mem      map[string]*region // n slots of each kind
	stride   map[string]int64   // the distance between slots of each kind
	written  []bool             // the slot's pages were written before (its reuse is counted as recycled)
	free     []int32            // free regular slots
	freeOver []int32            // free overflow slots
}

// kindOf is a streamed tensor's name without its "blk.N." prefix.
func kindOf(name string) string {
	if rest, ok := strings.CutPrefix(name, "blk."); ok {
		if i := strings.IndexByte(rest, '.'); i > 0 {
			if _, err := strconv.Atoi(rest[:i]); err == nil {
				return rest[i+1:]
			}
		}
	}
	return name
}

// planSlots groups the layers of idx into classes and gives each its share of budget (bytes of
// experts, or Unlimited) in slots.
func planSlots(idx *Index, budget int64, overflowSets int) ([]*slotClass, []*slotClass) {
	// A budget that holds every expert never evicts: each layer gets a class of its own, of exactly
	// its experts, and no overflow. llama.cpp's expert matmul then sees n_expert slots, as in RAM,
	// rather than every layer's (10,240 for 40 layers of 256), and it does a little work per slot.
	total := expertBytesOf(idx)
	holdsAll := budget < 0 || budget >= total
	var classes []*slotClass
	bySig := map[string]*slotClass{}
	classOf := make([]*slotClass, idx.Layers)
	for l := 0; l < idx.Layers; l++ {
		var kinds []string
		bytes := map[string]int64{}
		for _, t := range idx.LayerTensors(l) {
			if t.FusedInto != "" {
				continue // llama.cpp allocates the fused tensor, not its sources
			}
			k := kindOf(t.Name)
			kinds = append(kinds, k)
			bytes[k] = t.ExpertBytes
		}
		if len(kinds) == 0 {
			continue
		}
		sort.Strings(kinds)
		var sig strings.Builder
		if holdsAll {
			fmt.Fprintf(&sig, "layer %d;", l)
		}
		for _, k := range kinds {
			fmt.Fprintf(&sig, "%s=%d;", k, bytes[k])
		}
		c := bySig[sig.String()]
		if c == nil {
			c = &slotClass{kinds: kinds, bytes: bytes, mem: map[string]*region{}, stride: map[string]int64{}}
			for _, k := range kinds {
				c.slotBytes += bytes[k]
				c.stride[k] = alignUp(bytes[k], pageSize) + pageSize
			}
			bySig[sig.String()] = c
			classes = append(classes, c)
		}
		c.layers = append(c.layers, l)
		classOf[l] = c
	}
	for _, c := range classes {
		all := len(c.layers) * idx.Experts
		switch {
		case holdsAll:
			c.regular = all
		case total > 0:
			// The class's share of the budget in proportion to its share of the model's experts.
			share := float64(budget) * float64(int64(all)*c.slotBytes) / float64(total)
			c.regular = min(all, int(share/float64(c.slotBytes)))
		}
		c.populate = budget >= 0
		c.n = c.regular
		if !holdsAll {
			c.n += overflowSets * idx.Experts
		}
		c.written = make([]bool, c.n)
		for s := c.regular - 1; s >= 0; s-- {
			c.free = append(c.free, int32(s))
		}
		for s := c.n - 1; s >= c.regular; s-- {
			c.freeOver = append(c.freeOver, int32(s))
		}
	}
	return classes, classOf
}

// expertBytesOf is the bytes of every expert of every layer as slots hold them (fused tensors
// counted once, under their own name).
func expertBytesOf(idx *Index) int64 {
	var total int64
	for l := 0; l < idx.Layers; l++ {
		for _, t := range idx.LayerTensors(l) {
			if t.FusedInto == "" {
				total += int64(idx.Experts) * t.ExpertBytes
			}
		}
	}
	return total
}

// slotLead is where in a page tensor t's slots start: where its first part's bytes lie in their
// page of the file, so that its experts' whole pages are read straight in.
func slotLead(t *StreamedTensor) int64 {
	p := t.Parts[0]
	return ((p.FileOffset-p.MemOffset)%pageSize + pageSize) % pageSize
}

// memory maps the slots of kind (once per class).
func (c *slotClass) memory(kind string) (*region, error) {
	if r := c.mem[kind]; r != nil {
		return r, nil
	}
	r, err := newRegion(int64(c.n)*c.stride[kind]+pageSize, 0)
	if err != nil {
		return nil, err
	}
	adviseHugePages(r.mapping)
	if c.populate {
		// The cache's slots will all be filled: faulting them in now, from the kernel, costs a few
		// hundred ms per GiB; faulting them one by one as experts first land there costs seconds.
		// (Faulting each slot in just before its first read was measured slower than letting the
		// direct reads fault it: only the whole range at once pays off.)
		populatePages(r.mapping[:min(int64(len(r.mapping)), int64(c.regular)*c.stride[kind]+pageSize)])
	}
	c.mem[kind] = r
	return r, nil
}

// release gives slot s's pages back to the system (the next write faults fresh ones).
func (c *slotClass) release(s int32) error {
	var err error
	for _, k := range c.kinds {
		if r := c.mem[k]; r != nil {
			if e := r.evictRange(int64(s)*c.stride[k], c.stride[k]); e != nil && err == nil {
				err = e
			}
		}
	}
	c.written[s] = false
	return err
}

// takeSlot gives layer's class a slot for a new expert: a free regular one, else the one of the
// policy's victim among unpinned experts of the class for which spare is false, else (allowOverflow)
// an overflow slot. Called with s.mu held.
func (s *Sniper) takeSlot(layer int, allowOverflow bool, spare func(Key) bool) (int32, error) {
	c := s.classOf[layer]
	if len(c.free) == 0 {
		k, ok := s.policy.Victim(func(k Key) bool {
			return s.pinned[k] == 0 && s.classOf[k.Layer] == c && (spare == nil || !spare(k))
		})
		if ok {
			if err := s.evict(k); err != nil {
				return -1, err
			}
		}
	}
	var slot int32
	switch {
	case len(c.free) > 0:
		slot = c.free[len(c.free)-1]
		c.free = c.free[:len(c.free)-1]
	case allowOverflow && len(c.freeOver) > 0:
		slot = c.freeOver[len(c.freeOver)-1]
		c.freeOver = c.freeOver[:len(c.freeOver)-1]
	default:
		return -1, fmt.Errorf("%w (%d layers' worth of overflow slots)", errNoSlot, (c.n-c.regular)/max(s.idx.Experts, 1))
	}
	if c.written[slot] {
		s.rec.recycled++
	}
	return slot, nil
}

// errNoSlot: every slot holds an expert some working set needs.
var errNoSlot = errors.New("every expert slot is held by a working set: more contexts decoding at once than the sniper was opened for (Options.Contexts) with a cache this small")

// freeSlot returns slot to its class; overflow slots (and every slot when recycling is off) give
// their pages back so that the budget holds. Called with s.mu held.
func (s *Sniper) freeSlot(layer int, slot int32) error {
	c := s.classOf[layer]
	var err error
	if int(slot) >= c.regular || s.releaseEvicted {
		s.rec.released++
		err = c.release(slot)
	}
	if int(slot) >= c.regular {
		c.freeOver = append(c.freeOver, slot)
	} else {
		c.free = append(c.free, slot)
	}
	return err
}

// freeSlots gives back slots a load or a prefetch took and did not fill. Called with s.mu held.
func (s *Sniper) freeSlots(layer int, slots []int32) {
	for _, sl := range slots {
		if err := s.freeSlot(layer, sl); err != nil {
			s.stats.ReleaseErrors++
		}
	}
}

// slotReadRequests prepares the reads of experts of layer into slots (slots[i] for experts[i]): for
// each part of each tensor, one gathered read per run of experts that lie back to back in the file
// (see partReads). Called with s.mu held.
func (s *Sniper) slotReadRequests(layer int, experts []int, slots []int32) ([]ReadRequest, error) {
	var reqs []ReadRequest
	c := s.classOf[layer]
	for _, t := range s.layers[layer] {
		for i, p := range t.Parts {
			var conv Convert
			if t.convert != nil {
				conv = t.convert[i]
			}
			var err error
			if reqs, err = s.partReads(reqs, c, t, p, conv, experts, slots); err != nil {
				return nil, err
			}
		}
	}
	for i := range slots {
		c.written[slots[i]] = true
	}
	return reqs, nil
}

// maxGatherBytes bounds one gathered read, so that a prompt's many experts still spread over
// several readers.
const maxGatherBytes = 4 << 20

// partTarget is where one expert's bytes of a part go: the slot's memory span and, inside it, the
// part's bytes [at, at+len) and the window [lo, hi) that a whole-page read may write (the part
// itself plus the slot's slack before the tensor's first byte or after its last).
type partTarget struct {
	off        int64 // the part's first byte in the file
	span       []byte
	at, lo, hi int64
}

// partReads appends the reads of part p of tensor t for experts; experts back to back in the file
// share one read. Every file page that holds bytes of one expert only and maps to a whole page of
// that expert's window is read straight into the slot; the others (a page shared by two experts, or
// by two parts of a fused tensor in memory) go through a bounce buffer and are copied. A part that
// is converted on its way into the slot (conv, see Convert) is read whole into a bounce buffer and
// each expert's bytes are converted from there.
func (s *Sniper) partReads(reqs []ReadRequest, c *slotClass, t *boundTensor, p Part, conv Convert, experts []int, slots []int32) ([]ReadRequest, error) {
	size := s.file.Size()
	kind := kindOf(t.Name)
	stride := c.stride[kind]
	targets := make([]partTarget, len(experts))
	for i, e := range experts {
		off := p.FileOffset + int64(e)*p.Stride
		if off < 0 || off+p.Len > size {
			return nil, fmt.Errorf("expert %d of %s: file range [%d,%d) past the end of the file (%d bytes)", e, t.Name, off, off+p.Len, size)
		}
		at := t.slotLead + p.MemOffset
		tg := partTarget{off: off, span: c.mem[kind].slice(int64(slots[i])*stride, stride), at: at, lo: at, hi: at + p.Len}
		if p.MemOffset == 0 {
			tg.lo = 0
		}
		if p.MemOffset+p.Len == t.ExpertBytes {
			tg.hi = stride
		}
		targets[i] = tg
	}
	sort.Slice(targets, func(i, j int) bool { return targets[i].off < targets[j].off })
	for first := 0; first < len(targets); {
		last := first
		for last+1 < len(targets) && targets[last+1].off == targets[last].off+p.Len &&
			targets[last+1].off+p.Len-targets[first].off <= maxGatherBytes {
			last++
		}
		if conv != nil {
			reqs = append(reqs, s.convertedRun(targets[first:last+1], p.Len, size, conv))
		} else {
			reqs = append(reqs, gatherRun(targets[first:last+1], p.Len, size))
		}
		first = last + 1
	}
	return reqs, nil
}

// convertedRun is the read of a run of parts of n bytes each, back to back in the file, into a
// bounce buffer, from which conv converts each part into its slot.
func (s *Sniper) convertedRun(run []partTarget, n, size int64, conv Convert) ReadRequest {
	start := alignDown(run[0].off, pageSize)
	end := min(alignUp(run[len(run)-1].off+n, pageSize), size)
	return ReadRequest{Offset: start, Len: int(end - start), Then: func(b []byte) {
		for _, tg := range run {
			from := tg.off - start
			s.runConvert(conv, tg.span[tg.at:tg.at+n], b[from:from+n])
		}
	}}
}

// gatherRun is the read of a run of parts of n bytes each, back to back in the file.
func gatherRun(run []partTarget, n, size int64) ReadRequest {
	start := alignDown(run[0].off, pageSize)
	end := min(alignUp(run[len(run)-1].off+n, pageSize), size)
	req := ReadRequest{Offset: start}
	// copies of the bounce segment being built: file offset, destination.
	type bounceCopy struct {
		from int64
		to   []byte
	}
	var copies []bounceCopy
	flush := func() {
		if len(copies) == 0 {
			return
		}
		seg := &req.Segs[len(req.Segs)-1]
		base := req.Offset + int64(segsLen(req.Segs[:len(req.Segs)-1]))
		cs := copies
		seg.Then = func(b []byte) {
			for _, c := range cs {
				copy(c.to, b[c.from-base:])
			}
		}
		copies = nil
	}
	j := 0 // the first part that may overlap the page
	for pg := start; pg < end; pg += pageSize {
		l := min(pageSize, end-pg)
		for j < len(run) && run[j].off+n <= pg {
			j++
		}
		// The parts this page holds bytes of.
		k := j
		for k < len(run) && run[k].off < pg+l {
			k++
		}
		if k-j == 1 && l == pageSize {
			tg := run[j]
			m := tg.at + pg - tg.off // where the page lands in the slot
			if m%pageSize == 0 && m >= tg.lo && m+l <= tg.hi {
				dst := tg.span[m : m+l]
				if last := len(req.Segs) - 1; last >= 0 && req.Segs[last].Dst != nil && contiguous(req.Segs[last].Dst, dst) {
					req.Segs[last].Dst = req.Segs[last].Dst[:len(req.Segs[last].Dst)+int(l)]
				} else {
					flush()
					req.Segs = append(req.Segs, Segment{Dst: dst})
				}
				continue
			}
		}
		if last := len(req.Segs) - 1; last < 0 || req.Segs[last].Dst != nil {
			flush()
			req.Segs = append(req.Segs, Segment{})
		}
		req.Segs[len(req.Segs)-1].Len += int(l)
		for _, tg := range run[j:k] {
			from, to := max(pg, tg.off), min(pg+l, tg.off+n)
			m := tg.at + from - tg.off
			copies = append(copies, bounceCopy{from: from, to: tg.span[m : m+to-from]})
		}
	}
	flush()
	return req
}

// segsLen is the file bytes segs cover.
func segsLen(segs []Segment) int {
	n := 0
	for _, sg := range segs {
		if sg.Dst != nil {
			n += len(sg.Dst)
		} else {
			n += sg.Len
		}
	}
	return n
}

// contiguous reports whether b starts right where a ends in memory, with room in a's capacity.
func contiguous(a, b []byte) bool {
	return cap(a)-len(a) >= len(b) && unsafe.Pointer(unsafe.SliceData(a[len(a):cap(a)])) == unsafe.Pointer(unsafe.SliceData(b))
}

// Slot returns the slot expert e of layer is resident in (ModeExperts), and whether it is resident.
func (s *Sniper) Slot(layer, e int) (int, bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	slot, ok := s.slotOf[Key{layer, e}]
	return int(slot), ok
}

// Slots is the number of slots of layer's expert tensors (what their ne[2] must be), or 0 in dense
// mode.
func (s *Sniper) Slots(layer int) int {
	if s.classOf == nil || layer < 0 || layer >= len(s.classOf) || s.classOf[layer] == nil {
		return 0
	}
	return s.classOf[layer].n
}

// ErrWarmTooSmall is returned by Warm when the cache cannot hold every expert.
var ErrWarmTooSmall = fmt.Errorf("warm: the expert cache cannot hold every expert (use an unlimited cache)")

// Warm reads every expert of every layer into the cache, so that what follows runs entirely from
// memory: with an unlimited budget the sniper then computes exactly as the in-RAM model does, which
// measures the cost of the hook itself. It refuses a budget that cannot hold every expert (warming
// would only churn the cache). Statistics count the reads; ResetStats forgets them.
func (s *Sniper) Warm(ctx context.Context) error {
	if s.classOf == nil {
		return fmt.Errorf("warm: only expert streaming (sniper mode) has a cache to warm")
	}
	for _, c := range s.classes {
		if c.regular < len(c.layers)*s.idx.Experts {
			return ErrWarmTooSmall
		}
	}
	pin := s.NewPin()
	defer pin.Release()
	ids := make([]int32, s.idx.Experts)
	for e := range ids {
		ids[e] = int32(e)
	}
	for l := 0; l < s.idx.Layers; l++ {
		if s.classOf[l] == nil {
			continue
		}
		if err := pin.Ensure(ctx, l, ids); err != nil {
			return fmt.Errorf("warm layer %d: %w", l, err)
		}
	}
	return nil
}

// ResetStats zeroes the counters (what is resident, the budget and the peak stay).
func (s *Sniper) ResetStats() {
	s.mu.Lock()
	old := s.stats
	s.stats = Stats{CacheBytes: old.CacheBytes, CacheBudget: old.CacheBudget, PeakCacheBytes: old.PeakCacheBytes,
		LayerActivations: make([]int64, len(old.LayerActivations)), LayerMisses: make([]int64, len(old.LayerMisses)),
		ExpertActivations: make([][]int64, len(old.ExpertActivations))}
	for i, a := range old.ExpertActivations {
		s.stats.ExpertActivations[i] = make([]int64, len(a))
	}
	s.rec.recycled, s.rec.released = 0, 0
	s.mu.Unlock()
	s.pool.reads.Store(0)
	s.pool.issued.Store(0)
	s.pool.lat.reset()
	s.convertNanos.Store(0)
	s.convertBytes.Store(0)
}
