package binding

import (
	"context"
	"testing"

	"github.com/expertsniper/expertsniper/sniper"
)

// TestPrefetchIsBitExactAndPredicts: with prefetch on, logits stay bit-exact with the in-RAM run at
// every budget, the next layer's experts are predicted during decode (recall is reported), and with
// room in the cache the predicted experts are read ahead.
func TestPrefetchIsBitExactAndPredicts(t *testing.T) {
	path := tinyModelPath(t)
	ctx := context.Background()
	ram, err := LoadModel(ctx, path, WithExtraBufts(false))
	if err != nil {
		t.Fatal(err)
	}
	defer ram.Close()
	prompt := streamPrompt(t, ram)
	want, err := evalLogits(t, ram, prompt, 12, 2)
	if err != nil {
		t.Fatal(err)
	}
	// 0: no room to read ahead; 480 KiB: 10 of the 16 experts fit, so predicted ones are read;
	// unlimited: everything stays after the prompt.
	for _, budget := range []int64{0, 480 << 10, sniper.Unlimited} {
		m, err := LoadStreamed(ctx, path, StreamOptions{CacheBudget: budget, Prefetch: true})
		if err != nil {
			t.Fatal(err)
		}
		got, err := evalLogits(t, m, prompt, 12, 2)
		if err != nil {
			t.Fatal(err)
		}
		sameLogits(t, "sniper with prefetch", want, got)
		st := m.Sniper().Stats()
		t.Logf("budget %d: predicted %d, chosen %d, recall %.2f; prefetched %d, used %d, wasted %d; misses %d",
			budget, st.Predicted, st.Chosen, st.Recall(), st.PrefetchReads, st.PrefetchHits, st.PrefetchWasted, st.Misses)
		if st.Predicted == 0 || st.Chosen == 0 {
			t.Fatalf("budget %d: no prediction was scored during decode", budget)
		}
		if budget == 0 && st.PrefetchReads != 0 {
			t.Fatalf("budget 0: %d experts read ahead with no room in the cache", st.PrefetchReads)
		}
		if budget == 480<<10 && (st.PrefetchReads == 0 || st.PrefetchHits == 0) {
			t.Fatalf("budget %d: %d experts read ahead, %d of them used; want some of each", budget, st.PrefetchReads, st.PrefetchHits)
		}
		if st.BytesRead > 0 && st.CacheBytes > max(budget, 0) && budget >= 0 && st.CacheBytes > st.PeakCacheBytes {
			t.Fatalf("cache accounting broken: %d held, peak %d", st.CacheBytes, st.PeakCacheBytes)
		}
		if err := m.Close(); err != nil {
			t.Fatal(err)
		}
	}
}
