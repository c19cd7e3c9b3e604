package sniper_test

import (
	"context"
	"math/rand/v2"
	"testing"

	"github.com/expertsniper/expertsniper/sniper"
)

// churn runs Ensures of random experts over every layer with a cache of two experts, checking every
// chosen expert's bytes right after its Ensure, and returns the stats.
func churn(t *testing.T, opts sniper.Options, rounds int) sniper.Stats {
	t.Helper()
	const per = 64<<10 + 96 // not page aligned: interiors are shorter than experts, edges are shared
	m := newFakeModel(t, t.TempDir(), 3, 8, per, false)
	opts.CacheBudget = 2 * 3 * per
	s, mem := boundSniper(t, m, sniper.ModeExperts, false, opts)
	rng := rand.New(rand.NewPCG(7, 8))
	ctx := context.Background()
	for i := 0; i < rounds; i++ {
		layer := i % 3
		ids := []int32{int32(rng.IntN(8)), int32(rng.IntN(8))}
		if err := s.Ensure(ctx, layer, ids); err != nil {
			t.Fatal(err)
		}
		for _, e := range ids {
			checkExpert(t, m, mem, layer, int(e), per)
		}
	}
	return s.Stats()
}

// TestRecyclingKeepsBytesExactAndReusesSlots: evicted experts' slots are reused, pages and all, by
// the experts read next, and every expert read into a reused slot is byte-for-byte the file's.
func TestRecyclingKeepsBytesExactAndReusesSlots(t *testing.T) {
	st := churn(t, sniper.Options{}, 300)
	t.Logf("recycled %d slots, released %d, evictions %d, misses %d", st.Recycled, st.Released, st.Evictions, st.Misses)
	if st.Evictions < 100 {
		t.Fatalf("only %d evictions: the test does not exercise recycling", st.Evictions)
	}
	// Every eviction frees a slot the next miss takes: nearly every miss reuses one.
	if st.Recycled < st.Evictions*8/10 || st.Released != 0 {
		t.Fatalf("recycled %d slots and released %d for %d evictions; want nearly all and none", st.Recycled, st.Released, st.Evictions)
	}
	if st.CacheBytes > st.CacheBudget {
		t.Fatalf("cache holds %d bytes over its budget %d", st.CacheBytes, st.CacheBudget)
	}
}

// TestNoRecycleReleasesEvictedPages: with recycling off every evicted slot's pages go back to the
// system.
func TestNoRecycleReleasesEvictedPages(t *testing.T) {
	st := churn(t, sniper.Options{NoRecycle: true}, 120)
	if st.Recycled != 0 || st.Released < st.Evictions {
		t.Fatalf("recycled %d, released %d for %d evictions; want 0 and ≥ %d", st.Recycled, st.Released, st.Evictions, st.Evictions)
	}
}
