package sniper

import (
	"context"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
)

// Prefetch: while layer N's experts compute, read the experts layer N+1's router is expected to
// choose. The prediction applies layer N+1's router matrix to layer N's router input (the normalized
// hidden state of the FFN of layer N): the residual stream changes little from one layer to the next,
// so the same top-k mostly comes out. Prefetched experts enter the cache like any other (within the
// budget); they never change results: Ensure still makes exactly the router's choices resident before
// the expert matmuls run, whatever was predicted.

// Routers holds each layer's router matrix as float32 (experts rows of embd values), shared by every
// prefetcher of a model. Safe for concurrent use.
type Routers struct {
	mu     sync.RWMutex
	layers [][]float32
	embd   int
}

// NewRouters returns an empty set for a model with layers layers.
func NewRouters(layers int) *Routers { return &Routers{layers: make([][]float32, layers)} }

// Has reports whether layer's router is known.
func (r *Routers) Has(layer int) bool {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return layer >= 0 && layer < len(r.layers) && r.layers[layer] != nil
}

// Set records layer's router: w holds experts rows of embd float32 values each. The slice is kept,
// not copied (it may alias the model's own weights; the model must outlive every prefetcher).
func (r *Routers) Set(layer, embd, experts int, w []float32) error {
	if layer < 0 || layer >= len(r.layers) {
		return fmt.Errorf("router of layer %d: the model has %d layers", layer, len(r.layers))
	}
	if embd <= 0 || experts <= 0 || len(w) != embd*experts {
		return fmt.Errorf("router of layer %d: %d values for %d experts × %d", layer, len(w), experts, embd)
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.embd != 0 && r.embd != embd {
		return fmt.Errorf("router of layer %d has rows of %d, others %d", layer, embd, r.embd)
	}
	r.embd = embd
	r.layers[layer] = w
	return nil
}

// TopK returns the k experts whose router logits for hidden state x are largest at layer (nil if
// the router is unknown or x has the wrong length), in decreasing order of logit.
func (r *Routers) TopK(layer int, x []float32, k int) []int {
	r.mu.RLock()
	w, embd := []float32(nil), r.embd
	if layer >= 0 && layer < len(r.layers) {
		w = r.layers[layer]
	}
	r.mu.RUnlock()
	if w == nil || len(x) != embd || k <= 0 {
		return nil
	}
	experts := len(w) / embd
	logits := make([]float32, experts)
	for e := range logits {
		logits[e] = dot(w[e*embd:(e+1)*embd], x)
	}
	ids := make([]int, experts)
	for i := range ids {
		ids[i] = i
	}
	slices.SortStableFunc(ids, func(a, b int) int {
		switch {
		case logits[a] > logits[b]:
			return -1
		case logits[a] < logits[b]:
			return 1
		}
		return 0
	})
	return ids[:min(k, experts)]
}

// dot is a float32 dot product, unrolled by four for the compiler.
func dot(a, b []float32) float32 {
	b = b[:len(a)]
	var s0, s1, s2, s3 float32
	i := 0
	for ; i+4 <= len(a); i += 4 {
		s0 += a[i] * b[i]
		s1 += a[i+1] * b[i+1]
		s2 += a[i+2] * b[i+2]
		s3 += a[i+3] * b[i+3]
	}
	for ; i < len(a); i++ {
		s0 += a[i] * b[i]
	}
	return s0 + s1 + s2 + s3
}

// prediction is the experts predicted for a layer, made after Ensure call number seq.
type prediction struct {
	seq uint64
	ids []int
	// oneToken: ids are one token's experts, surest first (scored by rank).
	oneToken bool
}

// aheadState is the sniper's side of prefetching (guarded by s.mu).
type aheadState struct {
	pred map[int]prediction // by layer
	// loading holds the experts being read right now (by a prefetch or an Ensure, without the
	// lock: readUnlocked); the channel is closed when the read is over.
	loading  map[Key]chan struct{}
	inflight sync.WaitGroup
	// rankSeen[r] and rankHit[r] tally one-token predictions with an r-th surest expert and those
	// the router then chose, over the sniper's life (Stats has the same, but may be reset).
	rankSeen, rankHit [PredictionRanks]int64
}

// A one-token prediction's r-th surest expert is read ahead only while the predictions of rank r
// have been right at least minRankPrecision of the time (once minRankSamples were scored). When
// decode is bound by the disk, as it is without many cache hits, a wrong guess costs the bytes of a
// whole expert and a right one only saves waiting for a read that has to happen anyway: measured on
// the uniform 35B-shaped model with a 2 GiB cache, precision by rank is 96 92 87 81 73 63 52 46%,
// and reading the top 4 or 5 decoded 5-10% faster than all 8 (11% fewer bytes).
const (
	minRankPrecision = 0.7
	minRankSamples   = 64
)

// worthReading is the prefix of a one-token prediction (surest first) worth reading ahead. Called
// with s.mu held.
func (s *Sniper) worthReading(ids []int) []int {
	for r := range min(len(ids), PredictionRanks) {
		seen, hit := s.ahead.rankSeen[r], s.ahead.rankHit[r]
		if seen >= minRankSamples && float64(hit) < minRankPrecision*float64(seen) {
			return ids[:r]
		}
	}
	return ids
}

// scorePrediction compares the router's actual choice (s.union) at layer with the prediction made
// right after the previous Ensure, if one was made in time. Called by Ensure with s.mu held, after
// the union is computed and before ensureSeq advances.
func (s *Sniper) scorePrediction(layer int) {
	p, ok := s.ahead.pred[layer]
	if !ok {
		return
	}
	delete(s.ahead.pred, layer)
	if p.seq != s.ensureSeq {
		return // made for an earlier pass; another Ensure came in between
	}
	s.stats.Predicted += int64(len(p.ids))
	s.stats.Chosen += int64(len(s.union))
	for _, e := range s.union {
		if slices.Contains(p.ids, e) {
			s.stats.PredictedChosen++
		}
	}
	if p.oneToken {
		for r, e := range p.ids[:min(len(p.ids), PredictionRanks)] {
			s.stats.RankPredicted[r]++
			s.ahead.rankSeen[r]++
			if slices.Contains(s.union, e) {
				s.stats.RankChosen[r]++
				s.ahead.rankHit[r]++
			}
		}
	}
}

// Prefetcher reads predicted experts in the background for one user of the sniper (one llama.cpp
// context). Predict is cheap (it copies the hidden state and queues it); Close waits for the
// goroutine.
type Prefetcher struct {
	s       *Sniper
	routers *Routers
	jobs    chan prefetchJob
	ctx     context.Context
	cancel  context.CancelFunc
	done    chan struct{}
	// batch is how many experts are read at once: enough to keep two reads or more in flight (the
	// disk's ceiling here), few enough that an Ensure needing one of them waits little for the rest,
	// and that a prediction gone stale stops soon.
	batch int
	// inline makes Predict compute and record the prediction before returning (only the reads run
	// in the background), so that every prediction is scored whatever the timing; see PredictInline.
	inline bool
	// idle counts consecutive predictions whose experts were all resident already; calls counts
	// Predict calls. When the cache holds what is used, predicting is pure cost (a matrix-vector
	// product per layer on the cores the model computes on): then only one call in idleSample
	// predicts, to notice when reads are needed again.
	idle  atomic.Int32
	calls uint64
}

const (
	idleAfter  = 64
	idleSample = 8
)

// IdlePredictions is how many predictions in a row found every predicted expert resident already.
func (p *Prefetcher) IdlePredictions() int { return int(p.idle.Load()) }

// PredictInline makes predictions in the caller (the graph callback) instead of the background: the
// compute threads wait for the matrix-vector products, but every prediction is made before the
// next layer's Ensure, so recall is measured on every layer. For tests and measurements of recall.
func (p *Prefetcher) PredictInline(on bool) { p.inline = on }

type prefetchJob struct {
	seq   uint64
	layer int
	k     int
	// x holds one or more hidden states of len(x)/rows values each (the tokens of a micro-batch).
	x    []float32
	rows int
	// ids is the prediction when it was made inline (then x is not needed).
	ids []int
}

// NewPrefetcher starts a prefetcher that predicts with routers.
func (s *Sniper) NewPrefetcher(routers *Routers) *Prefetcher {
	ctx, cancel := context.WithCancel(context.Background())
	p := &Prefetcher{s: s, routers: routers, jobs: make(chan prefetchJob, 1), ctx: ctx, cancel: cancel,
		done: make(chan struct{}), batch: 2}
	go p.run()
	return p
}

// Predict asks for the k experts layer's router would choose for hidden state x (copied) to be read
// in the background. Call it right after the Ensure of the layer before: the prediction is dropped as
// stale as soon as another Ensure begins. A pending, not yet started prediction is replaced.
func (p *Prefetcher) Predict(layer int, x []float32, k int) { p.PredictBatch(layer, x, 1, k) }

// PredictBatch is Predict for several tokens at once (a prompt's micro-batch): x holds rows hidden
// states one after the other, and the union of their predicted experts is read.
func (p *Prefetcher) PredictBatch(layer int, x []float32, rows, k int) {
	if rows <= 0 || len(x)%rows != 0 || !p.Wanted(layer) {
		return
	}
	if p.calls++; p.idle.Load() >= idleAfter && p.calls%idleSample != 0 {
		return
	}
	p.s.mu.Lock()
	seq := p.s.ensureSeq
	p.s.mu.Unlock()
	job := prefetchJob{seq: seq, layer: layer, k: k, rows: rows}
	if p.inline {
		job.ids = p.predict(layer, x, rows, k)
		if job.ids == nil || !p.s.notePrediction(job, job.ids) {
			return
		}
	} else {
		job.x = slices.Clone(x)
	}
	for {
		select {
		case p.jobs <- job:
			return
		default:
		}
		select { // drop the older pending job
		case <-p.jobs:
		default:
		}
	}
}

// Wanted reports whether a prediction for layer could read anything: its router is known and some
// of its experts are not resident. When the cache holds a whole layer (an unlimited cache, warmed),
// predicting it would only cost the compute threads a matrix-vector product per token; callers check
// this before gathering the hidden state.
func (p *Prefetcher) Wanted(layer int) bool {
	if !p.routers.Has(layer) {
		return false
	}
	p.s.mu.Lock()
	defer p.s.mu.Unlock()
	return layer >= 0 && layer < len(p.s.residentIn) && p.s.residentIn[layer] < p.s.idx.Experts
}

// Close stops the prefetcher and waits for its goroutine; reads in flight finish first.
func (p *Prefetcher) Close() {
	if p == nil || p.cancel == nil {
		return
	}
	p.cancel()
	close(p.jobs)
	<-p.done
	p.cancel = nil
}

func (p *Prefetcher) run() {
	defer close(p.done)
	for job := range p.jobs {
		if p.ctx.Err() != nil {
			continue
		}
		ids := job.ids
		if ids == nil {
			ids = p.predict(job.layer, job.x, job.rows, job.k)
			if ids == nil || !p.s.notePrediction(job, ids) {
				continue
			}
		}
		if job.rows == 1 {
			p.s.mu.Lock()
			ids = p.s.worthReading(ids)
			p.s.mu.Unlock()
		}
		if p.s.countMissing(job.layer, ids) == 0 {
			p.idle.Add(1)
			continue
		}
		p.idle.Store(0)
		for i := 0; i < len(ids); i += p.batch {
			if !p.s.prefetch(p.ctx, job.seq, job.layer, ids[i:min(i+p.batch, len(ids))]) {
				break
			}
		}
	}
}

// countMissing is how many of experts of layer are not resident.
func (s *Sniper) countMissing(layer int, experts []int) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, e := range experts {
		if _, ok := s.resident[Key{layer, e}]; !ok {
			n++
		}
	}
	return n
}

// predict is the union of the top k experts of layer for each of the rows hidden states in x, those
// predicted for the most rows first (they are the surest, and a prefetch cut short by the next
// Ensure has read them).
func (p *Prefetcher) predict(layer int, x []float32, rows, k int) []int {
	var ids []int
	votes := map[int]int{}
	n := len(x) / rows
	for r := 0; r < rows; r++ {
		for _, e := range p.routers.TopK(layer, x[r*n:(r+1)*n], k) {
			if votes[e] == 0 {
				ids = append(ids, e)
			}
			votes[e]++
		}
	}
	slices.SortStableFunc(ids, func(a, b int) int { return votes[b] - votes[a] })
	return ids
}

// notePrediction records ids as the prediction for job's layer, unless the job is already stale.
func (s *Sniper) notePrediction(job prefetchJob, ids []int) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || s.ensureSeq != job.seq {
		return false
	}
	if s.ahead.pred == nil {
		s.ahead.pred = map[int]prediction{}
	}
	s.ahead.pred[job.layer] = prediction{seq: job.seq, ids: ids, oneToken: job.rows == 1}
	return true
}

// prefetch reads those of experts of layer that are neither resident nor being read, if the
// prediction made after Ensure number seq is still current and the budget has room for them without
// evicting anything pinned. The read runs without the lock (an Ensure that needs one of these experts
// waits for it in awaitLoads; others proceed). It reports whether the prefetcher should go on with
// this prediction. Read errors are dropped: the expert stays missing, and Ensure reads it again and
// reports what fails.
func (s *Sniper) prefetch(ctx context.Context, seq uint64, layer int, experts []int) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.closed || s.ensureSeq != seq || s.ensureWaiting.Load() > 0 || ctx.Err() != nil || layer < 0 || layer >= len(s.layers) || len(s.layers[layer]) == 0 {
		return false
	}
	var missing []int
	for _, e := range experts {
		if e < 0 || e >= s.idx.Experts {
			continue
		}
		k := Key{layer, e}
		if _, ok := s.resident[k]; !ok && s.ahead.loading[k] == nil {
			missing = append(missing, e)
		}
	}
	if len(missing) == 0 {
		return true
	}
	per := s.expertBytes(layer)
	need := int64(len(missing)) * per
	if s.slotOf == nil {
		return false // only expert slots (sniper mode) are read ahead
	}
	// Slots from the cache only (never overflow), sparing the experts of this layer.
	var slots []int32
	for range missing {
		sl, err := s.takeSlot(layer, false, func(k Key) bool { return k.Layer == layer })
		if err != nil {
			break
		}
		slots = append(slots, sl)
	}
	if len(slots) < len(missing) {
		s.freeSlots(layer, slots)
		return false // the pinned working sets (and this layer's experts) fill the cache
	}
	reqs, err := s.slotReadRequests(layer, missing, slots)
	if err != nil {
		s.freeSlots(layer, slots)
		return false
	}
	// The bytes are charged now, so that no one else fills the room while the read runs.
	s.stats.CacheBytes += need
	took, err := s.readUnlocked(ctx, layer, missing, reqs)
	s.stats.PrefetchTime += took
	if err != nil {
		s.stats.CacheBytes -= need
		s.freeSlots(layer, slots)
		return false
	}
	s.admit(layer, missing, slots)
	for _, e := range missing {
		s.prefetched[Key{layer, e}] = true
	}
	s.stats.LayerMisses[layer] += int64(len(missing))
	s.stats.PrefetchReads += int64(len(missing))
	return true
}

// awaitLoads waits, without the lock, for reads in flight (a prefetch's or another Ensure's) of the
// experts union of layer, so that Ensure finds them resident (or, if the read failed, missing)
// instead of reading them again. Called by Ensure with s.mu held, after pinning the union.
func (s *Sniper) awaitLoads(ctx context.Context, layer int, union []int) error {
	for {
		var wait []chan struct{}
		for _, e := range union {
			if ch := s.ahead.loading[Key{layer, e}]; ch != nil && !slices.Contains(wait, ch) {
				wait = append(wait, ch)
			}
		}
		if len(wait) == 0 {
			return nil
		}
		s.mu.Unlock()
		var err error
		for _, ch := range wait {
			select {
			case <-ch:
			case <-ctx.Done():
				err = ctx.Err()
			}
			if err != nil {
				break
			}
		}
		s.mu.Lock()
		if err != nil {
			return fmt.Errorf("ensure layer %d: %w", layer, err)
		}
		if s.closed {
			return ErrClosed
		}
	}
}
