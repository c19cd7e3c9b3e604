package sniper_test

import (
	"context"
	"slices"
	"testing"

	"github.com/expertsniper/expertsniper/sniper"
)

func TestHottestExpertsMostActivatedFirst(t *testing.T) {
	got := sniper.HottestExperts([][]int64{{0, 4, 1}, {9, 0, 4}})
	want := []sniper.Key{{Layer: 1, Expert: 0}, {Layer: 0, Expert: 1}, {Layer: 1, Expert: 2}, {Layer: 0, Expert: 2}}
	if !slices.Equal(got, want) {
		t.Fatalf("hottest: %v, want %v", got, want)
	}
}

// TestPinnedHotExpertsSurviveEveryEviction: the pinned experts are read once, keep their exact bytes
// while every other expert of the model passes through a small cache, and no more than half the
// budget may be pinned.
func TestPinnedHotExpertsSurviveEveryEviction(t *testing.T) {
	const per, layers, experts = 4096, 3, 8
	m := newFakeModel(t, t.TempDir(), layers, experts, per, false)
	expert := int64(3 * per) // gate, up and down
	s, mem := boundSniper(t, m, sniper.ModeExperts, false, sniper.Options{CacheBudget: 6 * expert})
	ctx := context.Background()
	if _, _, err := s.PinHot(ctx, nil, 4*expert); err == nil {
		t.Fatal("pinning 4 experts' bytes of a 6-expert cache was accepted; at most half may be")
	}
	hot := []sniper.Key{{Layer: 2, Expert: 7}, {Layer: 0, Expert: 5}, {Layer: 9, Expert: 0}, {Layer: 2, Expert: 1}, {Layer: 1, Expert: 1}}
	n, bytes, err := s.PinHot(ctx, hot, 3*expert)
	if err != nil {
		t.Fatal(err)
	}
	if n != 3 || bytes != 3*expert {
		t.Fatalf("pinned %d experts (%d bytes), want the 3 hottest that exist (%d bytes)", n, bytes, 3*expert)
	}
	if st := s.Stats(); st.Misses != 3 {
		t.Fatalf("pinning read %d experts, want 3", st.Misses)
	}
	for round := 0; round < 2; round++ {
		for l := 0; l < layers; l++ {
			for e := 0; e < experts; e += 2 {
				if err := s.Ensure(ctx, l, []int32{int32(e), int32(e + 1)}); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	if st := s.Stats(); st.Evictions == 0 || st.CacheBytes > 6*expert {
		t.Fatalf("%d evictions, %d bytes cached: the test does not churn a 6-expert cache", st.Evictions, st.CacheBytes)
	}
	for _, k := range []sniper.Key{{Layer: 2, Expert: 7}, {Layer: 0, Expert: 5}, {Layer: 2, Expert: 1}} {
		if !s.Resident(k.Layer, k.Expert) {
			t.Fatalf("pinned expert %v was evicted", k)
		}
		checkExpert(t, m, mem, k.Layer, k.Expert, per)
	}
}
