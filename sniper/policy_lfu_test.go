package sniper_test

import (
	"context"
	"testing"

	"github.com/expertsniper/expertsniper/sniper"
)

func TestLFUEvictsLeastUsedThenMostRecent(t *testing.T) {
	p := sniper.NewLFU()
	a, b, c := sniper.Key{Layer: 0, Expert: 1}, sniper.Key{Layer: 0, Expert: 2}, sniper.Key{Layer: 1, Expert: 1}
	p.Touched(a)
	p.Touched(a)
	p.Touched(c)
	p.Touched(b) // b and c used once; b more recently
	all := func(sniper.Key) bool { return true }
	if k, ok := p.Victim(all); !ok || k != b {
		t.Fatalf("victim %v, want %v (used once, most recently)", k, b)
	}
	// Pinned experts are skipped and stay tracked.
	if k, _ := p.Victim(func(k sniper.Key) bool { return k != b && k != c }); k != a {
		t.Fatalf("victim %v with b and c pinned, want %v", k, a)
	}
	p.Removed(b)
	if k, _ := p.Victim(all); k != c {
		t.Fatalf("victim %v after removing b, want %v", k, c)
	}
	p.Removed(c)
	p.Removed(a)
	if _, ok := p.Victim(all); ok {
		t.Fatal("victim from an empty policy")
	}
	// An evicted expert keeps its count: back in the cache, it outranks one used once.
	p.Touched(a)
	p.Touched(b)
	if k, _ := p.Victim(all); k != b {
		t.Fatalf("victim %v, want %v (a was used 3 times in all)", k, b)
	}
}

// TestLFUHitsWhereLRUThrashes: every token visits the layers in order; when the experts in use do
// not all fit, LRU evicts exactly the next layer's experts and never hits, while LFU keeps a stable
// part of them resident.
func TestLFUHitsWhereLRUThrashes(t *testing.T) {
	const per = 4096
	hits := func(p sniper.Policy) float64 {
		m := newFakeModel(t, t.TempDir(), 4, 4, per, false)
		// Room for 6 of the 8 experts in use (2 per layer), the 2 being computed included: at best
		// about half of the lookups hit.
		s, _ := boundSniper(t, m, sniper.ModeExperts, false, sniper.Options{CacheBudget: 6 * 3 * per, Policy: p})
		for tok := 0; tok < 20; tok++ {
			for l := 0; l < 4; l++ {
				if err := s.Ensure(context.Background(), l, []int32{1, 2}); err != nil {
					t.Fatal(err)
				}
			}
		}
		return s.Stats().HitRate()
	}
	lru, lfu := hits(sniper.NewLRU()), hits(sniper.NewLFU())
	t.Logf("hit rate: LRU %.2f, LFU %.2f", lru, lfu)
	if lfu < 0.4 || lfu <= lru+0.3 {
		t.Fatalf("LFU hit rate %.2f, LRU %.2f; want LFU well above", lfu, lru)
	}
}

func TestNewPolicyByName(t *testing.T) {
	for _, name := range []string{"", "lru", "LFU"} {
		if _, err := sniper.NewPolicy(name); err != nil {
			t.Fatalf("%q: %v", name, err)
		}
	}
	if _, err := sniper.NewPolicy("arc"); err == nil {
		t.Fatal("unknown policy accepted")
	}
}
