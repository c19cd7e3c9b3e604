package sniper

import (
	"slices"
	"sync"
	"time"
)

// Stats is a snapshot of what the sniper has done since it was created.
type Stats struct {
	// BytesRead counts the bytes of the experts that were missing (exactly their sizes).
	BytesRead int64
	// BytesIssued counts what was actually read from disk: the aligned supersets.
	BytesIssued int64
	Reads       int64
	// Hits and Misses count (layer, expert) lookups.
	Hits, Misses int64
	// Evictions counts experts dropped to stay within the budget.
	Evictions int64
	// CacheBytes is what is resident now; CacheBudget the configured budget (-1 = unlimited).
	CacheBytes, CacheBudget int64
	// PeakCacheBytes is the most that was ever resident at once.
	PeakCacheBytes   int64
	ReadP50, ReadP99 time.Duration
	// Ensures counts router callbacks (one per layer per micro-batch).
	Ensures int64
	// LayerActivations[l] is how often layer l's router chose any expert; ExpertActivations[l][e] how
	// often it chose expert e (each token counts).
	LayerActivations  []int64
	ExpertActivations [][]int64
	// LayerMisses[l] counts the experts of layer l that had to be read.
	LayerMisses []int64
	RSS         int64

	// EnsureTime is the time spent in Ensure (the compute threads wait for it: blocked in the router
	// hook); ReadTime the part of it spent reading missing experts, LockWaitTime the part spent
	// waiting for another user of the sniper (a prefetch, another context) to finish.
	EnsureTime, ReadTime, LockWaitTime time.Duration
	// Recycled counts reuses of an evicted expert's memory for a newly read one (sniper mode: a slot,
	// slots.go; stream mode: page ranges moved under it, recycle.go) instead of releasing it and
	// faulting fresh memory; Released counts memory given back to the system.
	Recycled, Released int64
	// ReleaseErrors counts page ranges the system refused to take back (they stay resident).
	ReleaseErrors int64
	// ConvertTime is the time spent converting streamed bytes into the layout llama.cpp computes
	// with (Convert: its repacked CPU layouts), summed over the reading goroutines.
	ConvertTime time.Duration
	// ConvertedBytes counts the bytes converted.
	ConvertedBytes int64
	// Prefetch: PrefetchReads experts read ahead of their layer, PrefetchHits of them later chosen
	// by the router while resident, PrefetchWasted evicted unused. PrefetchTime is the time the
	// prefetcher spent reading (in the background). Predicted counts experts predicted for layers the
	// router then ran, Chosen the experts it chose there, PredictedChosen those it chose that were
	// predicted: recall = PredictedChosen / Chosen.
	PrefetchReads, PrefetchHits, PrefetchWasted int64
	PrefetchTime                                time.Duration
	Predicted, Chosen, PredictedChosen          int64
	// RankPredicted[r] counts one-token predictions (decode) that had an r-th surest expert, and
	// RankChosen[r] those whose r-th surest expert the router then chose: the precision of each
	// rank, which decides how deep reading ahead pays (see Prefetcher).
	RankPredicted, RankChosen [PredictionRanks]int64
}

// PredictionRanks is how many ranks of a prediction are scored one by one.
const PredictionRanks = 16

// RankPrecision is the share of predictions whose r-th surest expert the router chose (0 before
// any).
func (s Stats) RankPrecision(r int) float64 {
	if r < 0 || r >= PredictionRanks || s.RankPredicted[r] == 0 {
		return 0
	}
	return float64(s.RankChosen[r]) / float64(s.RankPredicted[r])
}

// Recall is the share of the router's choices the prefetcher predicted (0 before any prediction).
func (s Stats) Recall() float64 {
	if s.Chosen == 0 {
		return 0
	}
	return float64(s.PredictedChosen) / float64(s.Chosen)
}

// HitRate is Hits / (Hits + Misses), or 0 before any lookup.
func (s Stats) HitRate() float64 {
	if s.Hits+s.Misses == 0 {
		return 0
	}
	return float64(s.Hits) / float64(s.Hits+s.Misses)
}

// latencies keeps the most recent read latencies for percentiles.
type latencies struct {
	mu      sync.Mutex
	samples []time.Duration
	next    int
}

const latencyWindow = 8192

func (l *latencies) reset() {
	l.mu.Lock()
	l.samples, l.next = l.samples[:0], 0
	l.mu.Unlock()
}

func (l *latencies) add(d time.Duration) {
	l.mu.Lock()
	if len(l.samples) < latencyWindow {
		l.samples = append(l.samples, d)
	} else {
		l.samples[l.next] = d
		l.next = (l.next + 1) % latencyWindow
	}
	l.mu.Unlock()
}

func (l *latencies) percentiles() (p50, p99 time.Duration) {
	l.mu.Lock()
	s := slices.Clone(l.samples)
	l.mu.Unlock()
	if len(s) == 0 {
		return 0, 0
	}
	slices.Sort(s)
	return s[(len(s)-1)*50/100], s[(len(s)-1)*99/100]
}
