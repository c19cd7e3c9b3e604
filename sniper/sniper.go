package sniper

import (
	"context"
	"errors"
	"fmt"
	"os"
	"slices"
	"sync"
	"sync/atomic"
	"time"
	"unsafe"
)

// Unlimited as a cache budget keeps every expert once read.
const Unlimited int64 = -1

// Options configure a Sniper. The zero value reads with DirectFS, DefaultReaders, no cache (budget 0:
// only the layer being computed is held) and LRU.
type Options struct {
	FS FS
	// Readers is the number of parallel preads (DefaultReaders if 0).
	Readers int
	// CacheBudget is the bytes of experts kept resident beyond the layer being computed; Unlimited
	// keeps everything.
	CacheBudget int64
	Policy      Policy
	// NoRecycle releases evicted experts' pages (MADV_DONTNEED) instead of reusing them for the next
	// expert read (a slot in sniper mode, slots.go; pages moved under it in stream mode, recycle.go);
	// for measuring what recycling buys.
	NoRecycle bool
	// Contexts is how many users (llama.cpp contexts, each with its Pin) may decode at once (0: 1).
	// In sniper mode it sizes the overflow slots that hold working sets beyond the cache.
	Contexts int
	// ReadAhead (ModeDense) reads the next layer's FFN while the current one computes (dense.go).
	ReadAhead bool
}

// boundTensor is a streamed tensor llama.cpp has allocated, with the memory the sniper gave it.
type boundTensor struct {
	*StreamedTensor
	mem *region
	// slotLead is where the tensor's data starts in its class's slot memory (ModeExperts).
	slotLead int64
	// convert, if set, turns each part's bytes as the file holds them into the layout llama.cpp
	// computes with (one per part; see Convert): the part's reads then go through bounce buffers.
	convert []Convert
}

// Convert writes one expert's bytes of one part of a streamed tensor, as the file holds them (src),
// into dst in the layout llama.cpp computes with (the same length), e.g. its repacked CPU layout. It
// is called on the reading goroutines, concurrently for distinct destinations, and must not keep src.
type Convert func(dst, src []byte) error

// Binding is where a streamed tensor's data must point and how llama.cpp must see it.
type Binding struct {
	Data unsafe.Pointer
	// Experts is the tensor's ne[2] (its slots in ModeExperts, 1 for a dense FFN tensor) and Stride
	// its nb[2], the bytes between them.
	Experts int
	Stride  int64
}

// Sniper makes the experts the router picks resident, reading them from the model file on demand and
// keeping them while the budget allows. Ensure is called from the graph callback on one thread at a
// time; Stats may be called concurrently from anywhere.
type Sniper struct {
	idx    *Index
	file   File
	pool   *Pool
	policy Policy
	budget int64
	// identity of the file when opened, to detect a replaced or truncated file before reading.
	stat os.FileInfo

	mu       sync.Mutex
	closed   bool
	bound    map[string]*boundTensor
	layers   [][]*boundTensor
	resident map[Key]int64 // bytes charged per resident expert
	// residentIn counts the resident experts of each layer (a layer with all of them resident needs
	// no prediction).
	residentIn []int
	// pinned counts, per expert, the Pins whose working set holds it; pinned experts are never evicted.
	pinned     map[Key]int
	defaultPin *Pin
	hot        []*Pin // the hottest experts, pinned for good (PinHot)
	stats      Stats
	union      []int
	seen       []bool
	rec        *recycler
	// ensureSeq counts Ensure calls: a prefetch planned after call n is stale once call n+1 began.
	ensureSeq uint64
	// prefetched marks experts a prefetch read that no Ensure has used yet.
	prefetched map[Key]bool
	ahead      aheadState
	// ensureWaiting counts Ensure calls waiting for mu.
	ensureWaiting atomic.Int32
	// Expert slots (ModeExperts; see slots.go): the classes of layers, each layer's class, and the
	// slot of every resident expert.
	classes []*slotClass
	classOf []*slotClass
	slotOf  map[Key]int32
	// releaseEvicted gives an evicted expert's slot pages back (Options.NoRecycle). Slot reuse needs
	// no page moving, so it does not depend on the platform as rec does.
	releaseEvicted bool
	// convertErr is the first error of a Convert (cannot happen for conversions the binding checked
	// at Bind): from then on every read fails with it rather than compute with unconverted bytes.
	convertErr atomic.Pointer[error]
	// convertNanos is the time spent in Convert (over all reading goroutines), convertBytes what it
	// converted.
	convertNanos, convertBytes atomic.Int64
	// dense is the read-ahead of ModeDense (dense.go).
	dense denseState
}

// Open opens the model file of idx for streaming. Bind the streamed tensors, then call Ensure.
func Open(idx *Index, opts Options) (*Sniper, error) {
	fsys := opts.FS
	if fsys == nil {
		fsys = DirectFS{}
	}
	st, err := os.Stat(idx.Path)
	if err != nil {
		return nil, fmt.Errorf("sniper: %w", err)
	}
	f, err := fsys.Open(idx.Path)
	if err != nil {
		return nil, fmt.Errorf("sniper: %w", err)
	}
	pol := opts.Policy
	if pol == nil {
		pol = NewLRU()
	}
	s := &Sniper{
		idx: idx, file: f, pool: NewPool(f, opts.Readers), policy: pol, budget: opts.CacheBudget, stat: st,
		bound: map[string]*boundTensor{}, layers: make([][]*boundTensor, idx.Layers),
		resident: map[Key]int64{}, residentIn: make([]int, idx.Layers), pinned: map[Key]int{}, seen: make([]bool, max(idx.Experts, 1)),
		rec: newRecycler(!opts.NoRecycle), prefetched: map[Key]bool{}, releaseEvicted: opts.NoRecycle,
	}
	if idx.Mode == ModeExperts {
		s.classes, s.classOf = planSlots(idx, opts.CacheBudget, overflowSetsFor(opts.Contexts))
		s.slotOf = map[Key]int32{}
	}
	s.dense.init(opts.ReadAhead && idx.Mode == ModeDense)
	s.stats.CacheBudget = opts.CacheBudget
	s.defaultPin = &Pin{s: s}
	s.stats.LayerActivations = make([]int64, idx.Layers)
	s.stats.LayerMisses = make([]int64, idx.Layers)
	s.stats.ExpertActivations = make([][]int64, idx.Layers)
	for l := range s.stats.ExpertActivations {
		s.stats.ExpertActivations[l] = make([]int64, max(idx.Experts, 1))
	}
	return s, nil
}

// Index returns the index the sniper streams.
func (s *Sniper) Index() *Index { return s.idx }

// File returns the file the sniper reads.
func (s *Sniper) File() File { return s.file }

// Bind is BindConverted without conversion: llama.cpp computes with the file's bytes as they are.
func (s *Sniper) Bind(name string, nb2, size int64) (Binding, error) {
	return s.BindConverted(name, nb2, size, nil)
}

// BindConverted is called for each streamed tensor as llama.cpp allocates it: nb2 is the tensor's byte stride
// between experts (ggml nb[2]; the whole size for a dense tensor) and size its total bytes. It says
// where the tensor's data must point and, in ModeExperts, the slots llama.cpp must see instead of
// experts (the tensor's ne[2] and nb[2]; the router's choices are rewritten to slots: see
// EnsureSlots). convert, if not nil, has one Convert per part of the tensor (StreamedTensor.Parts)
// that each read of that part goes through. Nothing is read until Ensure.
func (s *Sniper) BindConverted(name string, nb2, size int64, convert []Convert) (Binding, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed {
		return Binding{}, ErrClosed
	}
	t := s.idx.Tensor(name)
	if t == nil {
		return Binding{}, fmt.Errorf("bind %s: not a streamed tensor of %q", name, s.idx.Path)
	}
	if s.bound[name] != nil {
		return Binding{}, fmt.Errorf("bind %s: bound twice", name)
	}
	if convert != nil && len(convert) != len(t.Parts) {
		return Binding{}, fmt.Errorf("bind %s: %d conversions for %d parts", name, len(convert), len(t.Parts))
	}
	if size != t.ExpertBytes*int64(t.Experts) || (t.Experts > 1 && nb2 != t.ExpertBytes) {
		return Binding{}, fmt.Errorf("bind %s: llama.cpp expects %d bytes with expert stride %d, the file has %d experts of %d bytes",
			name, size, nb2, t.Experts, t.ExpertBytes)
	}
	if s.classOf != nil {
		c := s.classOf[t.Layer]
		if c == nil || t.FusedInto != "" {
			return Binding{}, fmt.Errorf("bind %s: llama.cpp allocates it, but the sniper planned no slots for it", name)
		}
		kind := kindOf(name)
		r, err := c.memory(kind)
		if err != nil {
			return Binding{}, fmt.Errorf("bind %s: %w", name, err)
		}
		bt := &boundTensor{StreamedTensor: t, mem: r, slotLead: slotLead(t), convert: convert}
		if convert != nil {
			// Converted parts are bounced (the file's page offsets do not matter): slots start on a
			// page, where the kernels' loads are aligned as in llama.cpp's own buffers.
			bt.slotLead = 0
		}
		s.bound[name] = bt
		s.layers[t.Layer] = append(s.layers[t.Layer], bt)
		return Binding{Data: unsafe.Add(r.data, bt.slotLead), Experts: c.n, Stride: c.stride[kind]}, nil
	}
	// Stream mode: the tensor's memory mirrors the file (only sniper mode synthesizes tensors).
	if !t.Mirrors() {
		return Binding{}, fmt.Errorf("bind %s: a tensor assembled from several file ranges streams only in sniper mode", name)
	}
	off := t.Parts[0].FileOffset
	if end := off + size; end > s.file.Size() {
		return Binding{}, fmt.Errorf("bind %s: data ends at %d, past the end of %q (%d bytes)", name, end, s.idx.Path, s.file.Size())
	}
	r, err := newMirrorRegion(size, off)
	if err != nil {
		return Binding{}, fmt.Errorf("bind %s: %w", name, err)
	}
	bt := &boundTensor{StreamedTensor: t, mem: r, convert: convert}
	s.bound[name] = bt
	s.layers[t.Layer] = append(s.layers[t.Layer], bt)
	return Binding{Data: r.data, Experts: t.Experts, Stride: t.ExpertBytes}, nil
}

// Bound reports how many tensors have been bound.
func (s *Sniper) Bound() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.bound)
}

// expertBytes is what one expert of layer costs in memory (over the tensors llama.cpp bound).
func (s *Sniper) expertBytes(layer int) int64 {
	var n int64
	for _, t := range s.layers[layer] {
		n += t.ExpertBytes
	}
	return n
}

// Pin is the working set of one user of the sniper (one llama.cpp context): the experts of its last
// Ensure stay resident until its next Ensure or Release, whatever other contexts do meanwhile.
type Pin struct {
	s    *Sniper
	keys []Key
}

// NewPin returns a new, empty working set. Release it when its user is done.
func (s *Sniper) NewPin() *Pin { return &Pin{s: s} }

// Release unpins the working set.
func (p *Pin) Release() {
	p.s.mu.Lock()
	defer p.s.mu.Unlock()
	p.unpin()
}

func (p *Pin) unpin() {
	s := p.s
	for _, k := range p.keys {
		if s.pinned[k]--; s.pinned[k] <= 0 {
			delete(s.pinned, k)
			// An expert in an overflow slot was held beyond the budget only for its working set.
			if slot, ok := s.slotOf[k]; ok && int(slot) >= s.classOf[k.Layer].regular {
				if err := s.evict(k); err != nil {
					s.stats.ReleaseErrors++
				}
			}
		}
	}
	p.keys = p.keys[:0]
}

// Ensure is Pin.Ensure on the sniper's default working set (for a single user).
func (s *Sniper) Ensure(ctx context.Context, layer int, ids []int32) error {
	return s.defaultPin.Ensure(ctx, layer, ids)
}

// Ensure is EnsureSlots without asking where the experts are.
func (p *Pin) Ensure(ctx context.Context, layer int, ids []int32) error {
	return p.EnsureSlots(ctx, layer, ids, nil)
}

// Ensure makes experts ids (the router's choices for every token of a micro-batch; duplicates are
// fine) of layer resident, reading the missing ones. In dense mode ids is ignored: the layer's FFN is
// made resident. The experts of this call stay pinned until the pin's next call; others may be
// evicted to stay within the budget. In ModeExperts, slots (if not nil; as long as ids) receives the
// slot each ids[i] is resident in: what llama.cpp must compute with instead (see slots.go). On error
// nothing of the failed experts is considered resident and the error names the file and offset.
//
// The sniper's lock is never held while reading: the experts being read are marked as loading
// (readUnlocked), so that Stats, other contexts' Ensures and the prefetcher go on meanwhile, and an
// Ensure that needs an expert being read waits for that read (awaitLoads) rather than for the lock.
func (p *Pin) EnsureSlots(ctx context.Context, layer int, ids, slots []int32) error {
	s := p.s
	start := time.Now()
	s.ensureWaiting.Add(1) // tells a prefetch holding the lock to yield
	s.mu.Lock()
	s.ensureWaiting.Add(-1)
	defer s.mu.Unlock()
	if s.closed {
		return ErrClosed
	}
	s.stats.LockWaitTime += time.Since(start)
	defer func() { s.stats.EnsureTime += time.Since(start) }()
	if layer < 0 || layer >= len(s.layers) || len(s.layers[layer]) == 0 {
		return fmt.Errorf("ensure layer %d: no streamed tensors bound for this layer of %q", layer, s.idx.Path)
	}
	if slots != nil && len(slots) != len(ids) {
		return fmt.Errorf("ensure layer %d: room for %d slots for %d experts", layer, len(slots), len(ids))
	}
	// The union of the chosen experts, and the activation counts.
	clear(s.seen)
	s.union = s.union[:0]
	if s.idx.Mode == ModeDense {
		s.union = append(s.union, 0)
	} else {
		for _, id := range ids {
			if id < 0 || int(id) >= s.idx.Experts {
				return fmt.Errorf("ensure layer %d: router chose expert %d, the model has %d", layer, id, s.idx.Experts)
			}
			if !s.seen[id] {
				s.seen[id] = true
				s.union = append(s.union, int(id))
			}
		}
		slices.Sort(s.union)
		s.scorePrediction(layer)
	}
	s.ensureSeq++ // after scorePrediction; a prefetch planned before is now stale
	// The lock is let go while reading, and other Ensures reuse s.union meanwhile: keep ours.
	union := slices.Clone(s.union)
	s.stats.Ensures++
	if s.idx.Mode == ModeDense {
		s.stats.LayerActivations[layer]++
		s.stats.ExpertActivations[layer][0]++
	} else {
		for _, id := range ids {
			s.stats.LayerActivations[layer]++
			s.stats.ExpertActivations[layer][id]++
		}
	}
	// Pin this layer's working set; this pin's previous one (whose matmuls have run) becomes evictable.
	p.unpin()
	for _, e := range union {
		k := Key{layer, e}
		s.pinned[k]++
		p.keys = append(p.keys, k)
	}
	s.takeAhead(layer)
	if err := s.awaitLoads(ctx, layer, union); err != nil {
		return err
	}
	var missing []int
	for _, e := range union {
		k := Key{layer, e}
		if _, ok := s.resident[k]; ok {
			s.stats.Hits++
			if s.prefetched[k] {
				// Its first use was counted when the prefetch loaded it, as a demand load counts
				// one: counting again would make a frequency policy favour prefetched experts.
				delete(s.prefetched, k)
				s.stats.PrefetchHits++
			} else {
				s.policy.Touched(k)
			}
		} else {
			s.stats.Misses++
			s.stats.LayerMisses[layer]++
			missing = append(missing, e)
		}
	}
	if len(missing) > 0 {
		if err := s.load(ctx, layer, missing); err != nil {
			return err
		}
	}
	if slots != nil && s.slotOf != nil {
		for i, id := range ids {
			slots[i] = s.slotOf[Key{layer, int(id)}]
		}
	}
	s.startReadAhead(layer)
	return nil
}

// load reads experts missing of layer (none of them resident nor being read) after making room for
// them, and marks them resident. Called with s.mu held; the lock is let go during the read.
func (s *Sniper) load(ctx context.Context, layer int, missing []int) error {
	if s.slotOf != nil {
		return s.loadSlots(ctx, layer, missing)
	}
	need := int64(len(missing)) * s.expertBytes(layer)
	if s.idx.Mode == ModeDense {
		if err := s.makeRoomDense(); err != nil {
			return err
		}
	} else if err := s.makeRoom(need); err != nil {
		return err
	}
	// Spares the reads did not take go back to the system, so that the budget holds.
	defer s.releaseSpares()
	reqs, err := s.readRequests(layer, missing)
	if err != nil {
		return fmt.Errorf("load experts %v of layer %d: %w", missing, layer, err)
	}
	// The bytes are charged before the read, so that no one else fills the room while it runs.
	s.stats.CacheBytes += need
	took, err := s.readUnlocked(ctx, layer, missing, reqs)
	s.stats.ReadTime += took
	if err != nil {
		s.stats.CacheBytes -= need
		return fmt.Errorf("load experts %v of layer %d: %w", missing, layer, err)
	}
	s.admit(layer, missing, nil)
	return nil
}

// admit marks experts missing of layer, just read (into slots[i] in ModeExperts) and already charged
// to CacheBytes, resident and counts them. Called with s.mu held.
func (s *Sniper) admit(layer int, missing []int, slots []int32) {
	per := s.expertBytes(layer)
	for i, e := range missing {
		k := Key{layer, e}
		s.setResident(k, per)
		if slots != nil {
			s.slotOf[k] = slots[i]
		}
		s.policy.Touched(k)
	}
	s.stats.BytesRead += int64(len(missing)) * per
	s.stats.PeakCacheBytes = max(s.stats.PeakCacheBytes, s.stats.CacheBytes)
}

// loadSlots is load in ModeExperts: each missing expert gets a slot (evicting as needed) and is read
// into it. Called with s.mu held; the lock is let go during the read.
func (s *Sniper) loadSlots(ctx context.Context, layer int, missing []int) error {
	slots := make([]int32, 0, len(missing))
	for range missing {
		sl, err := s.takeSlot(layer, true, nil)
		if err != nil {
			s.freeSlots(layer, slots)
			return fmt.Errorf("load experts %v of layer %d: %w", missing, layer, err)
		}
		slots = append(slots, sl)
	}
	reqs, err := s.slotReadRequests(layer, missing, slots)
	if err != nil {
		s.freeSlots(layer, slots)
		return fmt.Errorf("load experts %v of layer %d: %w", missing, layer, err)
	}
	need := int64(len(missing)) * s.expertBytes(layer)
	s.stats.CacheBytes += need
	took, err := s.readUnlocked(ctx, layer, missing, reqs)
	s.stats.ReadTime += took
	if err != nil {
		s.stats.CacheBytes -= need
		s.freeSlots(layer, slots)
		return fmt.Errorf("load experts %v of layer %d: %w", missing, layer, err)
	}
	s.admit(layer, missing, slots)
	return nil
}

// readUnlocked runs reqs, the reads of experts of layer, without s.mu: meanwhile the experts are
// marked as loading, so that an Ensure needing one of them waits for this read (awaitLoads) and
// nobody reads it twice, while statistics, predictions and the Ensures of other experts go on. It
// checks first that the file is still the one opened (a stat, also outside the lock). Called with
// s.mu held; held again on return, when it reports the read's duration and ErrClosed if the sniper
// was closed meanwhile (Close waits for the read: the memory stays mapped until it ends).
func (s *Sniper) readUnlocked(ctx context.Context, layer int, experts []int, reqs []ReadRequest) (time.Duration, error) {
	done := s.markLoading(layer, experts)
	s.mu.Unlock()
	return s.readMarked(ctx, layer, experts, reqs, done)
}

// markLoading is readUnlocked's first half, for a read that another goroutine runs: it marks experts
// of layer as loading and counts the read as in flight (Close waits for it). Called with s.mu held;
// readMarked, called without it, must follow.
func (s *Sniper) markLoading(layer int, experts []int) chan struct{} {
	done := make(chan struct{})
	if s.ahead.loading == nil {
		s.ahead.loading = map[Key]chan struct{}{}
	}
	for _, e := range experts {
		s.ahead.loading[Key{layer, e}] = done
	}
	s.ahead.inflight.Add(1)
	return done
}

// readMarked is readUnlocked's second half: it runs the read markLoading marked, without s.mu, and
// returns with s.mu held and the marks gone (done closed).
func (s *Sniper) readMarked(ctx context.Context, layer int, experts []int, reqs []ReadRequest, done chan struct{}) (time.Duration, error) {
	start := time.Now()
	err := s.checkFile(layer, experts[0])
	if err == nil {
		err = s.pool.Read(ctx, reqs)
	}
	if e := s.convertErr.Load(); e != nil && err == nil {
		err = *e
	}
	took := time.Since(start)
	s.mu.Lock()
	s.ahead.inflight.Done()
	for _, e := range experts {
		delete(s.ahead.loading, Key{layer, e})
	}
	close(done)
	if err == nil && s.closed {
		err = ErrClosed
	}
	return took, err
}

// makeRoom evicts unpinned experts until need more bytes fit in the budget, or nothing evictable is
// left (the pinned working set is always held, even beyond the budget).
func (s *Sniper) makeRoom(need int64) error {
	if s.budget < 0 {
		return nil
	}
	for s.stats.CacheBytes+need > s.budget {
		k, ok := s.policy.Victim(func(k Key) bool { return s.pinned[k] == 0 })
		if !ok {
			return nil
		}
		if err := s.evict(k); err != nil {
			return err
		}
	}
	return nil
}

func (s *Sniper) evict(k Key) error {
	s.policy.Removed(k)
	n, ok := s.resident[k]
	if !ok {
		return nil
	}
	delete(s.resident, k)
	s.residentIn[k.Layer]--
	s.stats.CacheBytes -= n
	s.stats.Evictions++
	if s.prefetched[k] {
		delete(s.prefetched, k)
		s.stats.PrefetchWasted++
	}
	if slot, ok := s.slotOf[k]; ok {
		delete(s.slotOf, k)
		if err := s.freeSlot(k.Layer, slot); err != nil {
			return fmt.Errorf("evict expert %d of layer %d: %w", k.Expert, k.Layer, err)
		}
		return nil
	}
	for _, t := range s.layers[k.Layer] {
		if err := s.rec.put(t.mem.interior(int64(k.Expert)*t.ExpertBytes, t.ExpertBytes)); err != nil {
			return fmt.Errorf("evict expert %d of %s: %w", k.Expert, t.Name, err)
		}
	}
	return nil
}

// checkFile refuses to read from a model file that was replaced or truncated since it was opened:
// its bytes would no longer be the weights llama.cpp was loaded with. It needs no lock (what it
// reads is set before the first Ensure).
func (s *Sniper) checkFile(layer, expert int) error {
	t := s.layers[layer][0]
	off := t.Parts[0].FileOffset + int64(expert)*t.Parts[0].Stride
	st, err := os.Stat(s.idx.Path)
	if err != nil {
		return &ReadError{Path: s.idx.Path, Offset: off, Len: int(t.ExpertBytes), Err: fmt.Errorf("model file is gone: %w", err)}
	}
	if !os.SameFile(st, s.stat) || st.Size() != s.stat.Size() || !st.ModTime().Equal(s.stat.ModTime()) {
		return &ReadError{Path: s.idx.Path, Offset: off, Len: int(t.ExpertBytes),
			Err: errors.New("model file was replaced or modified while running (size, time or inode changed); reload the model")}
	}
	return nil
}

// readRequests prepares the reads of experts of layer into mirrored memory (stream mode), moving
// spare pages under them first: aligned supersets land in place, as neighbouring bytes are the same
// file bytes. Called with s.mu held; the reads themselves may run without it.
func (s *Sniper) readRequests(layer int, experts []int) ([]ReadRequest, error) {
	var reqs []ReadRequest
	size := s.file.Size()
	for _, t := range s.layers[layer] {
		for _, e := range experts {
			// Resident pages of an evicted expert, moved here, spare faulting fresh ones.
			s.rec.take(t.mem.interior(int64(e)*t.ExpertBytes, t.ExpertBytes))
			p := t.Parts[0]
			off := p.FileOffset + int64(e)*p.Stride
			start := alignDown(off, pageSize)
			end := min(alignUp(off+p.Len, pageSize), size)
			if t.convert != nil {
				// Read aside, then converted into the tensor's memory (where the file's bytes would lie),
				// in pieces of whole row groups (dense.go: convertStep), so that the bounce buffers stay
				// small and are reused rather than a dense tensor's tens of MiB faulted in every read.
				step := convertStep(t.StreamedTensor, p.Len)
				for at := int64(0); at < p.Len; at += step {
					o, n := off+at, min(step, p.Len-at)
					dst, ok := t.mem.fileSlice(o, n)
					if !ok {
						return nil, fmt.Errorf("expert %d of %s: file range [%d,%d) outside its memory", e, t.Name, o, o+n)
					}
					lo, hi := alignDown(o, pageSize), min(alignUp(o+n, pageSize), size)
					conv, skip := t.convert[0], o-lo
					reqs = append(reqs, ReadRequest{Offset: lo, Len: int(hi - lo), Then: func(b []byte) {
						s.runConvert(conv, dst, b[skip:skip+n])
					}})
				}
				continue
			}
			// A dense FFN tensor is tens of MiB: read in pieces the device serves at full speed
			// with several in flight, rather than as one request the kernel splits anyway.
			for at := start; at < end; at += readChunk {
				n := min(readChunk, end-at)
				dst, ok := t.mem.fileSlice(at, n)
				if !ok {
					return nil, fmt.Errorf("expert %d of %s: file range [%d,%d) outside its memory", e, t.Name, at, at+n)
				}
				reqs = append(reqs, ReadRequest{Offset: at, Dst: dst})
			}
		}
	}
	return reqs, nil
}

// readChunk is the largest read of mirrored (stream mode) memory: a few MiB reach a fast SSD's
// bandwidth with two in flight (docs/design.md §5: 4 MiB at random, one thread, 2.57 GB/s).
const readChunk = 4 << 20

// Resident reports whether expert e of layer is resident.
func (s *Sniper) Resident(layer, e int) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	_, ok := s.resident[Key{layer, e}]
	return ok
}

// Stats returns a snapshot of the counters.
func (s *Sniper) Stats() Stats {
	s.mu.Lock()
	st := s.stats
	st.LayerActivations = slices.Clone(s.stats.LayerActivations)
	st.LayerMisses = slices.Clone(s.stats.LayerMisses)
	st.ExpertActivations = make([][]int64, len(s.stats.ExpertActivations))
	for i, a := range s.stats.ExpertActivations {
		st.ExpertActivations[i] = slices.Clone(a)
	}
	st.Recycled, st.Released = s.rec.recycled, s.rec.released
	s.mu.Unlock()
	st.Reads = s.pool.reads.Load()
	st.BytesIssued = s.pool.issued.Load()
	st.ReadP50, st.ReadP99 = s.pool.lat.percentiles()
	st.RSS = CurrentRSS()
	st.ConvertTime = time.Duration(s.convertNanos.Load())
	st.ConvertedBytes = s.convertBytes.Load()
	return st
}

// Close releases the file and the memory of every bound tensor. Call it only after llama.cpp no
// longer uses the tensors (after the model is freed): their data points into this memory.
func (s *Sniper) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	s.mu.Unlock()
	s.dense.cancel()
	s.ahead.inflight.Wait() // prefetch reads run without the lock and write into the memory unmapped below
	s.mu.Lock()
	defer s.mu.Unlock()
	s.pool.Close()
	var errs []error
	if s.classes != nil {
		for _, c := range s.classes {
			for _, r := range c.mem {
				errs = append(errs, r.close())
			}
		}
	} else {
		for _, t := range s.bound {
			errs = append(errs, t.mem.close())
		}
	}
	errs = append(errs, s.file.Close())
	return errors.Join(errs...)
}

// runConvert converts src into dst with conv, timing it and keeping its first error.
func (s *Sniper) runConvert(conv Convert, dst, src []byte) {
	start := time.Now()
	err := conv(dst, src)
	s.convertNanos.Add(int64(time.Since(start)))
	s.convertBytes.Add(int64(len(src)))
	if err != nil {
		err = fmt.Errorf("convert streamed weights: %w", err)
		s.convertErr.CompareAndSwap(nil, &err)
	}
}

// setResident records expert k as resident, charged bytes. Called with s.mu held.
func (s *Sniper) setResident(k Key, bytes int64) {
	if _, ok := s.resident[k]; !ok {
		s.residentIn[k.Layer]++
	}
	s.resident[k] = bytes
}
