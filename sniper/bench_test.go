package sniper_test

import (
	"context"
	"math/rand/v2"
	"os"
	"testing"

	"github.com/expertsniper/expertsniper/sniper"
)

// BenchmarkStreamTokens measures the sniper's side of a decoded token on a real model file, without
// llama.cpp: for each token, every layer's Ensure of 8 experts drawn at random (uniform routing, the
// cache's worst case), with recycling on and off, with no cache and with a 1 GiB one. It prints
// ms/token and the useful read rate. Set EXPERTSNIPER_BENCH_MODEL to a MoE GGUF (e.g.
// models/qwen35-35b-a3b-q4_0.gguf); without it the benchmark is skipped.
//
//	EXPERTSNIPER_BENCH_MODEL=$PWD/models/qwen35-35b-a3b-q4_0.gguf go test ./sniper -run - -bench StreamTokens -benchtime 8x
func BenchmarkStreamTokens(b *testing.B) {
	path := os.Getenv("EXPERTSNIPER_BENCH_MODEL")
	if path == "" {
		b.Skip("set EXPERTSNIPER_BENCH_MODEL to a MoE GGUF file")
	}
	for _, c := range []struct {
		name      string
		budget    int64
		noRecycle bool
	}{
		{"cache0/recycle", 0, false},
		{"cache0/release", 0, true},
		{"cache1GiB/recycle", 1 << 30, false},
		{"cache1GiB/release", 1 << 30, true},
	} {
		b.Run(c.name, func(b *testing.B) {
			idx, _, err := sniper.OpenIndex(path, sniper.ModeExperts)
			if err != nil {
				b.Fatal(err)
			}
			s, err := sniper.Open(idx, sniper.Options{CacheBudget: c.budget, NoRecycle: c.noRecycle})
			if err != nil {
				b.Fatal(err)
			}
			defer s.Close()
			for _, t := range idx.Tensors() {
				if t.FusedInto == "" {
					if _, err := s.Bind(t.Name, t.ExpertBytes, t.ExpertBytes*int64(t.Experts)); err != nil {
						b.Fatal(err)
					}
				}
			}
			rng := rand.New(rand.NewPCG(1, 2))
			ids := make([]int32, 8)
			token := func() {
				for l := 0; l < idx.Layers; l++ {
					for i := range ids {
						ids[i] = int32(rng.IntN(idx.Experts))
					}
					if err := s.Ensure(context.Background(), l, ids); err != nil {
						b.Fatal(err)
					}
				}
			}
			token() // first touch of the memory the cache will recycle
			token()
			before := s.Stats()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				token()
			}
			b.StopTimer()
			st := s.Stats()
			read := st.BytesRead - before.BytesRead
			b.ReportMetric(float64(b.Elapsed().Milliseconds())/float64(b.N), "ms/token")
			b.ReportMetric(float64(read)/b.Elapsed().Seconds()/1e9, "GB/s")
			b.ReportMetric(float64(st.ReadTime-before.ReadTime)/float64(b.N)/1e6, "read-ms/token")
			b.ReportMetric(float64(st.Recycled-before.Recycled)/float64(b.N), "recycled/token")
		})
	}
}
