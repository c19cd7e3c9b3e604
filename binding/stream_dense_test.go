package binding

import (
	"context"
	"testing"

	"github.com/expertsniper/expertsniper/modelgen/testmodels"
	"github.com/expertsniper/expertsniper/sniper"
	"github.com/expertsniper/expertsniper/stream"
)

// TestDenseStreamingIsBitExactAtEveryBudget streams the generated dense (qwen3) model of every test
// type with caches of none, one, two and all of its layers' FFNs, with and without the next layer
// read ahead, on both numeric paths (repacked as llama.cpp's default load, and --no-repack): the
// logits of a prompt and a greedy continuation equal the in-RAM run's bit for bit, and the cache
// keeps the layers the budget holds (hits from the second token on).
func TestDenseStreamingIsBitExactAtEveryBudget(t *testing.T) {
	ctx := context.Background()
	for _, typ := range testmodels.Types {
		t.Run(typ, func(t *testing.T) {
			path := testmodels.Path(t, "qwen3-"+typ)
			for _, noRepack := range []bool{false, true} {
				ram, err := LoadModel(ctx, path, WithExtraBufts(!noRepack))
				if err != nil {
					t.Fatal(err)
				}
				prompt := streamPrompt(t, ram)
				want, err := evalLogits(t, ram, prompt, 6, 2)
				ram.Close()
				if err != nil {
					t.Fatal(err)
				}
				probe, err := stream.Open(path, stream.Options{Mode: sniper.ModeDense})
				if err != nil {
					t.Fatal(err)
				}
				info := probe.Info()
				probe.Close()
				layer := info.StreamedBytes / int64(info.Layers)
				for _, kept := range []int{0, 1, 2, -1} {
					budget := int64(kept) * layer
					if kept < 0 {
						budget = sniper.Unlimited
					}
					for _, ahead := range []bool{false, true} {
						m, w, err := loadStreamed(ctx, path, stream.Options{Mode: sniper.ModeDense, CacheBudget: budget, Prefetch: ahead, NoRepack: noRepack})
						if err != nil {
							t.Fatal(err)
						}
						got, err := evalLogits(t, m, prompt, 6, 2)
						if err != nil {
							t.Fatal(err)
						}
						sameLogits(t, "stream", want, got)
						st := w.Sniper().Stats()
						m.Close()
						// 7 passes over the layers (the prompt, 6 tokens); the first reads every layer.
						cached := int64(kept)
						if kept < 0 {
							cached = int64(info.Layers)
						}
						if min := 6 * cached; st.Hits-st.PrefetchHits < min {
							t.Errorf("no-repack %v, %d layers kept, read-ahead %v: %d cache hits (besides %d read ahead), want at least %d",
								noRepack, kept, ahead, st.Hits-st.PrefetchHits, st.PrefetchHits, min)
						}
						if ahead && kept >= 0 && kept < info.Layers && st.PrefetchHits == 0 {
							t.Errorf("%d layers kept: read-ahead never served a layer", kept)
						}
						if !ahead && st.PrefetchReads != 0 {
							t.Errorf("read-ahead off, yet %d layers read ahead", st.PrefetchReads)
						}
					}
				}
			}
		})
	}
}
