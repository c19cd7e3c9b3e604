package sniper

import (
	"context"
	"os"
	"path/filepath"
	"testing"
)

// TestSlotReuseDoesNotNeedPageMoving: where pages cannot be moved (macOS; rec disabled), an evicted
// expert's slot still keeps its pages for the next expert: only NoRecycle releases them.
func TestSlotReuseDoesNotNeedPageMoving(t *testing.T) {
	const per, experts = 8192, 4
	path := filepath.Join(t.TempDir(), "model.gguf")
	var tensors []TensorDesc
	off := int64(4096)
	for _, kind := range []string{"gate", "up", "down"} {
		tensors = append(tensors, TensorDesc{Name: "blk.0.ffn_" + kind + "_exps.weight",
			Dims: []uint64{per / 4, 1, experts}, FileOffset: off, Bytes: per * experts})
		off += per * experts
	}
	if err := os.WriteFile(path, make([]byte, off+4096), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, noRecycle := range []bool{false, true} {
		idx, err := NewIndex(path, tensors, ModeExperts, false)
		if err != nil {
			t.Fatal(err)
		}
		s, err := Open(idx, Options{CacheBudget: 3 * per, NoRecycle: noRecycle}) // one expert
		if err != nil {
			t.Fatal(err)
		}
		s.rec.enabled = false // as on a platform that cannot move pages
		for _, td := range tensors {
			if _, err := s.Bind(td.Name, per, per*experts); err != nil {
				t.Fatal(err)
			}
		}
		for e := int32(0); e < experts; e++ {
			if err := s.Ensure(context.Background(), 0, []int32{e}); err != nil {
				t.Fatal(err)
			}
		}
		st := s.Stats()
		s.Close()
		if st.Evictions == 0 {
			t.Fatal("no evictions: the test does not exercise slot reuse")
		}
		if noRecycle != (st.Released > 0) || noRecycle == (st.Recycled > 0) {
			t.Fatalf("NoRecycle %v: %d slots reused, %d released", noRecycle, st.Recycled, st.Released)
		}
	}
}

// TestOnlyPreciseRanksAreReadAhead: a rank of one-token predictions is read ahead until it has been
// scored minRankSamples times, then only while it is right minRankPrecision of the time.
func TestOnlyPreciseRanksAreReadAhead(t *testing.T) {
	s := &Sniper{}
	ids := []int{5, 2, 7}
	score := func(chosen ...int) {
		s.ahead.pred = map[int]prediction{1: {seq: s.ensureSeq, ids: ids, oneToken: true}}
		s.union = chosen
		s.scorePrediction(1)
	}
	for i := 0; i < minRankSamples-1; i++ {
		score(5, 7) // rank 2 (expert 2) always wrong, rank 3 always right
	}
	if got := s.worthReading(ids); len(got) != 3 {
		t.Fatalf("before %d samples: %v read ahead, want all of %v", minRankSamples, got, ids)
	}
	score(5, 7)
	if got := s.worthReading(ids); len(got) != 1 || got[0] != 5 {
		t.Fatalf("rank 2 never right: %v read ahead, want [5]", got)
	}
	for i := 0; i < 4*minRankSamples; i++ {
		score(5, 2, 7) // rank 2 right from now on: 80% overall
	}
	if got := s.worthReading(ids); len(got) != 3 {
		t.Fatalf("rank 2 right 80%% of the time: %v read ahead, want all of %v", got, ids)
	}
	if s.stats.RankPredicted[1] != 5*minRankSamples || s.stats.RankChosen[1] != 4*minRankSamples {
		t.Fatalf("stats by rank: %d predicted, %d chosen", s.stats.RankPredicted[1], s.stats.RankChosen[1])
	}
}
