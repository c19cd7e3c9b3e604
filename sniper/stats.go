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
