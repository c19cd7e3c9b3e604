package sniper

import (
	"container/heap"
	"fmt"
	"strings"
)

// LFU evicts the expert used least often, counting uses over the whole run (an evicted expert keeps
// its count, so a popular expert that comes back is kept at once); counts are halved periodically so
// that popularity long ago fades. Among equally used experts it evicts the most recently used one.
//
// Why not LRU: every token visits the layers in the same order, so when the experts in use do not all
// fit, LRU evicts precisely the experts whose layer comes next (the least recently used are the next
// layer's) and hits almost never. The most recently used expert, on the contrary, belongs to the
// layer that just ran, whose next visit is the farthest away (Belady's choice for a cyclic pattern).
// Counting keeps a stable set of the most used experts: hits in proportion to the budget, more with
// skewed routing.
type LFU struct {
	h       lfuHeap
	entries map[Key]*lfuEntry
	counts  map[Key]uint32 // uses of every expert ever touched, resident or not
	tick    uint64
	// halveEvery is how many touches pass between halvings of every count.
	halveEvery, sinceHalving int
	skipped                  []*lfuEntry
}

type lfuEntry struct {
	key   Key
	count uint32
	last  uint64
	index int
}

// NewLFU returns an empty LFU policy.
func NewLFU() *LFU {
	return &LFU{entries: map[Key]*lfuEntry{}, counts: map[Key]uint32{}, halveEvery: 1 << 16}
}

var _ Policy = (*LFU)(nil)

func (l *LFU) Touched(k Key) {
	l.tick++
	l.counts[k]++
	if e, ok := l.entries[k]; ok {
		e.count = l.counts[k]
		e.last = l.tick
		heap.Fix(&l.h, e.index)
	} else {
		e := &lfuEntry{key: k, count: l.counts[k], last: l.tick}
		l.entries[k] = e
		heap.Push(&l.h, e)
	}
	if l.sinceHalving++; l.sinceHalving >= l.halveEvery {
		l.sinceHalving = 0
		for k, n := range l.counts {
			if n /= 2; n == 0 {
				delete(l.counts, k)
			} else {
				l.counts[k] = n
			}
		}
		for _, e := range l.h {
			e.count = l.counts[e.key]
		}
		heap.Init(&l.h)
	}
}

func (l *LFU) Removed(k Key) {
	if e, ok := l.entries[k]; ok {
		heap.Remove(&l.h, e.index)
		delete(l.entries, k)
	}
}

func (l *LFU) Victim(evictable func(Key) bool) (Key, bool) {
	// Pop until an evictable entry shows up, then put back what was skipped (pinned experts).
	defer func() {
		for _, e := range l.skipped {
			heap.Push(&l.h, e)
		}
		l.skipped = l.skipped[:0]
	}()
	for l.h.Len() > 0 {
		e := heap.Pop(&l.h).(*lfuEntry)
		l.skipped = append(l.skipped, e)
		if evictable(e.key) {
			return e.key, true
		}
	}
	return Key{}, false
}

// lfuHeap orders entries by count, then most recent use first: the root is the next victim.
type lfuHeap []*lfuEntry

func (h lfuHeap) Len() int { return len(h) }
func (h lfuHeap) Less(i, j int) bool {
	if h[i].count != h[j].count {
		return h[i].count < h[j].count
	}
	return h[i].last > h[j].last
}
func (h lfuHeap) Swap(i, j int) {
	h[i], h[j] = h[j], h[i]
	h[i].index, h[j].index = i, j
}
func (h *lfuHeap) Push(x any) {
	e := x.(*lfuEntry)
	e.index = len(*h)
	*h = append(*h, e)
}
func (h *lfuHeap) Pop() any {
	old := *h
	e := old[len(old)-1]
	old[len(old)-1] = nil
	*h = old[:len(old)-1]
	return e
}

// Policies names the cache policies NewPolicy knows.
var Policies = []string{"lru", "lfu", "fixed"}

// DefaultPolicy is the policy users get when they do not choose: LFU, measured better than LRU on
// the real model shape (at a 256 MiB cache on the Qwen3.5-35B-A3B-shaped model: 36% of lookups hit
// instead of 0%, 330 instead of 566 MB read per token; when every expert in use fits both hold them).
const DefaultPolicy = "lfu"

// NewPolicy returns the policy called name ("lru", "lfu" or "fixed"; "" is DefaultPolicy).
func NewPolicy(name string) (Policy, error) {
	if name == "" {
		name = DefaultPolicy
	}
	switch strings.ToLower(name) {
	case "lru":
		return NewLRU(), nil
	case "lfu":
		return NewLFU(), nil
	case "fixed":
		return NewFixedLayers(), nil
	}
	return nil, fmt.Errorf("cache policy %q: want one of %s", name, strings.Join(Policies, ", "))
}
