package sniper

import (
	"context"
)

// Dense streaming (ModeDense): every token visits every layer in order, so which layer's FFN comes
// next is known, and any cache smaller than all FFNs sees a cyclic access pattern.
//
//   - Read-ahead (Options.ReadAhead): when a layer's FFN is resident (the end of its Ensure), the next
//     layer that is not resident, cyclically (after the last layer comes the next token's first), is
//     read in the background while this one computes; its Ensure then waits only for what is left of
//     that read. One read-ahead at a time: the disk is busy all the time when decode is bound by it,
//     since the next read starts as soon as the previous layer's is over.
//   - The working set is the layer being computed and the layer being read ahead: both are pinned and
//     held beyond the budget (plan.Model.MaxLayerBytes counts both). The budget bounds the other
//     resident layers.
//   - Which layers the budget keeps is the policy's choice. An LRU of layers evicts, in a cycle, always
//     the one needed soonest: it thrashes (no hits at all below the whole model). FixedLayers evicts
//     the highest-numbered layer, so the first layers that fit stay for good and the rest stream
//     through: a hit rate of budget / total, with nothing read twice for nothing. It is the default in
//     dense mode (PolicyFor).

// denseState is the read-ahead's state (guarded by s.mu).
type denseState struct {
	on bool
	// busy is set while a read-ahead goroutine runs; ahead is the layer it read (or reads), pinned
	// until an Ensure of that layer takes it over, or -1.
	busy  bool
	ahead int
	// ctx is cancelled by Close: a read-ahead in flight stops.
	ctx    context.Context
	cancel context.CancelFunc
}

func (d *denseState) init(on bool) {
	d.on, d.ahead = on, -1
	d.ctx, d.cancel = context.WithCancel(context.Background())
}

// takeAhead hands the read-ahead's pin of layer over to the Ensure that now needs it (the Ensure has
// pinned it itself). Called with s.mu held.
func (s *Sniper) takeAhead(layer int) {
	if s.dense.ahead == layer {
		s.unpinAhead()
	}
}

// unpinAhead drops the read-ahead's pin. Called with s.mu held.
func (s *Sniper) unpinAhead() {
	if s.dense.ahead < 0 {
		return
	}
	k := Key{s.dense.ahead, 0}
	if s.pinned[k]--; s.pinned[k] <= 0 {
		delete(s.pinned, k)
	}
	s.dense.ahead = -1
}

// nextMissing is the first layer after layer, cyclically, whose FFN is neither resident nor being
// read (-1 if every other layer is). Called with s.mu held.
func (s *Sniper) nextMissing(layer int) int {
	n := len(s.layers)
	for i := 1; i < n; i++ {
		l := (layer + i) % n
		if len(s.layers[l]) == 0 {
			continue
		}
		k := Key{l, 0}
		if _, ok := s.resident[k]; !ok && s.ahead.loading[k] == nil {
			return l
		}
	}
	return -1
}

// startReadAhead starts reading the FFN of the next missing layer after layer, unless read-ahead is
// off or the layer read ahead last is still waiting for its Ensure (while the cached layers after a
// token's last one compute, that is the first layer not kept; reading past it would evict it). Every
// pass visits every layer, so that Ensure always comes. Called by a dense Ensure with s.mu held, once
// layer is resident.
//
// Everything up to marking the layer as loading happens here, under the lock; only the read runs in
// the background. The Ensure of that layer then always waits for this read: were the marking left to
// the goroutine, on a loaded machine one not yet scheduled would let that Ensure read the layer
// itself, and the read-ahead would be lost.
func (s *Sniper) startReadAhead(layer int) {
	if !s.dense.on || s.dense.busy || s.dense.ahead >= 0 || s.closed {
		return
	}
	next := s.nextMissing(layer)
	if next < 0 {
		return
	}
	if err := s.makeRoomDense(); err != nil {
		return
	}
	reqs, err := s.readRequests(next, []int{0})
	if err != nil {
		s.releaseSpares()
		return
	}
	s.dense.busy = true
	s.dense.ahead = next
	s.pinned[Key{next, 0}]++
	need := s.expertBytes(next)
	s.stats.CacheBytes += need // charged now, so that no one else fills the room while it reads
	done := s.markLoading(next, []int{0})
	s.ahead.inflight.Add(1) // Close waits for the goroutine, not only for its read
	go s.readAhead(next, reqs, need, done)
}

// readAhead reads layer's FFN in the background (started by startReadAhead, which pinned it, charged
// its need bytes and marked it loading). Read errors are dropped: the layer stays missing, and its
// Ensure reads it again and reports what fails.
func (s *Sniper) readAhead(layer int, reqs []ReadRequest, need int64, done chan struct{}) {
	defer s.ahead.inflight.Done()
	took, err := s.readMarked(s.dense.ctx, layer, []int{0}, reqs, done)
	defer s.mu.Unlock()
	defer func() { s.dense.busy = false }()
	defer s.releaseSpares()
	s.stats.PrefetchTime += took
	if err != nil {
		s.stats.CacheBytes -= need
		return
	}
	s.admit(layer, []int{0}, nil)
	s.prefetched[Key{layer, 0}] = true
	s.stats.LayerMisses[layer]++
	s.stats.PrefetchReads++
}

// makeRoomDense evicts unpinned layers (the policy's choice) until those left fit in the budget: the
// pinned working set (the layers being computed and read ahead) is held beyond it. Called with s.mu
// held, before a layer is read.
func (s *Sniper) makeRoomDense() error {
	if s.budget < 0 {
		return nil
	}
	for {
		var unpinned int64
		for k, n := range s.resident {
			if s.pinned[k] == 0 {
				unpinned += n
			}
		}
		if unpinned <= s.budget {
			return nil
		}
		k, ok := s.policy.Victim(func(k Key) bool { _, res := s.resident[k]; return res && s.pinned[k] == 0 })
		if !ok {
			return nil
		}
		if err := s.evict(k); err != nil {
			return err
		}
	}
}

// FixedLayers evicts the resident entry of the highest-numbered layer (of the highest expert within
// it). In dense mode this keeps the first layers that fit in the cache for good and streams the
// others through it, instead of thrashing as an LRU does when every layer is visited in turn.
type FixedLayers struct {
	keys map[Key]struct{}
}

// NewFixedLayers returns an empty FixedLayers policy.
func NewFixedLayers() *FixedLayers { return &FixedLayers{keys: map[Key]struct{}{}} }

var _ Policy = (*FixedLayers)(nil)

func (f *FixedLayers) Touched(k Key) { f.keys[k] = struct{}{} }
func (f *FixedLayers) Removed(k Key) { delete(f.keys, k) }

func (f *FixedLayers) Victim(evictable func(Key) bool) (Key, bool) {
	var best Key
	found := false
	for k := range f.keys {
		if !evictable(k) {
			continue
		}
		if !found || k.Layer > best.Layer || k.Layer == best.Layer && k.Expert > best.Expert {
			best, found = k, true
		}
	}
	return best, found
}

// convertRows is how many rows of a dense FFN tensor are converted (repacked) at a time: llama.cpp's
// repacked CPU layouts interleave groups of 4 to 16 rows and are chosen by the row count being a
// multiple of the group, so any multiple of 256 rows converts on its own exactly as within the whole.
const convertRows = 256

// convertStep is the bytes of a converted read of a tensor of n bytes in the file: convertRows whole
// rows when the tensor is a dense matrix whose row count is a multiple of it, else all of it.
func convertStep(t *StreamedTensor, n int64) int64 {
	if t.Experts != 1 || len(t.Dims) < 2 || t.Dims[1] == 0 || t.Dims[1]%convertRows != 0 || n%int64(t.Dims[1]) != 0 {
		return n
	}
	return n / int64(t.Dims[1]) * convertRows
}

// DefaultDensePolicy is the policy of dense streaming when none is chosen (see FixedLayers).
const DefaultDensePolicy = "fixed"

// PolicyFor is NewPolicy with the mode's default for "": DefaultPolicy for experts,
// DefaultDensePolicy for dense layers.
func PolicyFor(mode Mode, name string) (Policy, error) {
	if name == "" && mode == ModeDense {
		name = DefaultDensePolicy
	}
	return NewPolicy(name)
}
