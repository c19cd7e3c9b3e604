package main

import (
	"bytes"
	"path/filepath"
	"testing"

	"github.com/expertsniper/expertsniper/modelgen/testmodels"
)

// TestPrefetchIsBitExact: --prefetch reads predicted experts ahead but never changes a result: the
// logits and text equal the in-RAM run for every MoE test architecture, with no cache, a small one
// and an unlimited one, and predictions are made and scored during decode.
func TestPrefetchIsBitExact(t *testing.T) {
	for _, arch := range []string{"qwen3moe", "qwen35moe", "olmoe", "qwen2moe"} {
		name := arch + "-q8_0"
		t.Run(name, func(t *testing.T) {
			t.Parallel()
			model := testmodels.Path(t, name)
			want := ramReference(t, model, 2, false)
			for _, cache := range []string{"0", "256KiB", "unlimited"} {
				statsPath := filepath.Join(t.TempDir(), "stats.json")
				got, err := runAgentRun(t, runOptions{Model: model, Mode: "sniper", Cache: cache, Threads: 2, Prefetch: true, predictInline: true, StatsJSON: statsPath})
				if err != nil {
					t.Fatalf("--prefetch --cache %s: %v", cache, err)
				}
				if !bytes.Equal(got.logits, want.logits) {
					t.Fatalf("--prefetch --cache %s: logits differ from the in-RAM run", cache)
				}
				if got.stdout != want.stdout {
					t.Fatalf("--prefetch --cache %s: text differs from the in-RAM run:\n%q\n%q", cache, got.stdout, want.stdout)
				}
				rs := readRunStats(t, statsPath)
				t.Logf("--cache %s: recall %.2f, %d read ahead, %d used, %d wasted; hit rate %.2f, decode hook %.1f ms/token",
					cache, rs.PrefetchRecall, rs.PrefetchReads, rs.PrefetchHits, rs.PrefetchWasted, rs.HitRate, rs.DecodeHookMsPerToken)
				if rs.PrefetchRecall <= 0 {
					t.Fatalf("--cache %s: no prediction was scored (recall %v)", cache, rs.PrefetchRecall)
				}
			}
		})
	}
}
