package binding

import (
	"context"
	"testing"

	"github.com/expertsniper/expertsniper/sniper"
	"github.com/expertsniper/expertsniper/stream"
)

// TestPrefetchIsBitExactAndPredicts: with prefetch on, logits stay bit-exact with the in-RAM run at
// every budget, and the next layer's experts are predicted and scored during decode (recall).
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
	// 0: no room to read ahead; 480 KiB: 10 of the 16 experts fit, so predicted ones may be read;
	// unlimited: everything stays after the prompt.
	for _, budget := range []int64{0, 480 << 10, sniper.Unlimited} {
		m, w, err := loadStreamed(ctx, path, stream.Options{CacheBudget: budget, Prefetch: true, PredictInline: true})
		if err != nil {
			t.Fatal(err)
		}
		got, err := evalLogits(t, m, prompt, 12, 2)
		if err != nil {
			t.Fatal(err)
		}
		sameLogits(t, "sniper with prefetch", want, got)
		st := w.Sniper().Stats()
		t.Logf("budget %d: predicted %d, chosen %d, recall %.2f; prefetched %d, used %d, wasted %d; misses %d",
			budget, st.Predicted, st.Chosen, st.Recall(), st.PrefetchReads, st.PrefetchHits, st.PrefetchWasted, st.Misses)
		if st.Predicted == 0 || st.Chosen == 0 {
			t.Fatalf("budget %d: no prediction was scored during decode", budget)
		}
		if budget == 0 && st.PrefetchReads != 0 {
			t.Fatalf("budget 0: %d experts read ahead with no room in the cache", st.PrefetchReads)
		}
		// Whether a read ahead starts before the next layer's Ensure depends on scheduling (the sniper
		// tests check the read path deterministically, with faultfs).
		if err := m.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

// TestRoutersAreKnownAtLoad: every layer's router is known before the first graph runs, so the
// prompt's first micro-batch is read ahead too (learning them in the hook would leave layer N+1
// unknown while layer N of the first graph runs).
func TestRoutersAreKnownAtLoad(t *testing.T) {
	m, w, err := loadStreamed(context.Background(), tinyModelPath(t), stream.Options{CacheBudget: sniper.Unlimited, Prefetch: true})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	idx := w.Sniper().Index()
	for l := 0; l < idx.Layers; l++ {
		if len(idx.LayerTensors(l)) > 0 && !w.RouterKnown(l) {
			t.Fatalf("router of layer %d unknown after load", l)
		}
	}
}
