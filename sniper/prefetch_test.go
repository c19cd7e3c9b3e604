package sniper_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/expertsniper/expertsniper/sniper"
	"github.com/expertsniper/expertsniper/sniper/faultfs"
)

// routerFor returns a router of 8 experts over 4 values whose top two for x = (1,0,0,0) are 5 then 2.
func routerFor() []float32 {
	w := make([]float32, 8*4)
	for e := 0; e < 8; e++ {
		w[e*4] = float32(e)
	}
	w[5*4], w[2*4] = 100, 50
	return w
}

var hidden = []float32{1, 0, 0, 0}

func TestRoutersTopK(t *testing.T) {
	r := sniper.NewRouters(3)
	if err := r.Set(1, 4, 8, routerFor()); err != nil {
		t.Fatal(err)
	}
	if got := r.TopK(1, hidden, 3); len(got) != 3 || got[0] != 5 || got[1] != 2 || got[2] != 7 {
		t.Fatalf("top 3 = %v, want [5 2 7]", got)
	}
	if r.TopK(0, hidden, 2) != nil || r.TopK(1, []float32{1}, 2) != nil || r.Has(0) || !r.Has(1) {
		t.Fatal("prediction from an unknown router or a wrong-sized hidden state")
	}
	if r.Set(3, 4, 8, routerFor()) == nil || r.Set(0, 4, 7, routerFor()) == nil || r.Set(2, 8, 4, routerFor()) == nil {
		t.Fatal("bad router accepted (layer out of range, wrong size, or rows unlike the others)")
	}
}

// waitFor polls cond (the prefetcher works in the background) and fails after a generous deadline.
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestPrefetcherReadsPredictedExpertsAhead: after layer 0's Ensure, the predicted experts of layer 1
// are read in the background; layer 1's Ensure then finds them resident, byte-exact, and the
// prediction is scored.
func TestPrefetcherReadsPredictedExpertsAhead(t *testing.T) {
	const per = 10_000
	m := newFakeModel(t, t.TempDir(), 3, 8, per, false)
	s, mem := boundSniper(t, m, sniper.ModeExperts, false, sniper.Options{CacheBudget: sniper.Unlimited})
	r := sniper.NewRouters(3)
	if err := r.Set(1, 4, 8, routerFor()); err != nil {
		t.Fatal(err)
	}
	pf := s.NewPrefetcher(r)
	defer pf.Close()
	ctx := context.Background()
	if err := s.Ensure(ctx, 0, []int32{0}); err != nil {
		t.Fatal(err)
	}
	pf.Predict(1, hidden, 2)
	waitFor(t, "the prefetch", func() bool { return s.Stats().PrefetchReads == 2 })
	if err := s.Ensure(ctx, 1, []int32{5, 2}); err != nil {
		t.Fatal(err)
	}
	checkExpert(t, m, mem, 1, 5, per)
	checkExpert(t, m, mem, 1, 2, per)
	st := s.Stats()
	if st.PrefetchHits != 2 || st.LayerMisses[1] != 2 || st.Hits != 2 || st.Recall() != 1 {
		t.Fatalf("prefetch hits %d, layer 1 reads %d, hits %d, recall %v; want 2, 2, 2, 1", st.PrefetchHits, st.LayerMisses[1], st.Hits, st.Recall())
	}
	if st.BytesRead != 3*3*per {
		t.Fatalf("read %d bytes, want exactly the 3 experts' %d", st.BytesRead, 3*3*per)
	}
	// Scored by rank: predicted 5, 2, 7 (surest first), the router chose 5 and 2.
	pf.PredictInline(true)
	pf.Predict(1, hidden, 3)
	if err := s.Ensure(ctx, 1, []int32{2, 5}); err != nil {
		t.Fatal(err)
	}
	st = s.Stats()
	if st.RankPredicted[0] != 2 || st.RankPredicted[2] != 1 || st.RankPrecision(0) != 1 || st.RankPrecision(1) != 1 || st.RankPrecision(2) != 0 || st.RankPredicted[3] != 0 {
		t.Fatalf("by rank: predicted %v, chosen %v; want [2 2 1 0...] and [2 2 0 0...]", st.RankPredicted, st.RankChosen)
	}
	pf.Close()
	pf.Close() // idempotent
}

// layerOneReads matches reads of layer 1's expert tensors in m.
func layerOneReads(m *fakeModel) func(op faultfs.Op) bool {
	return func(op faultfs.Op) bool {
		for _, td := range m.tensors {
			if strings.HasPrefix(td.Name, "blk.1.ffn_") && op.Offset+int64(op.Len) > td.FileOffset && op.Offset < td.FileOffset+td.Bytes {
				return true
			}
		}
		return false
	}
}

// TestEnsureWaitsForAPrefetchInFlight: an Ensure that needs experts a prefetch is reading waits for
// that read instead of reading them again.
func TestEnsureWaitsForAPrefetchInFlight(t *testing.T) {
	const per = 10_000
	m := newFakeModel(t, t.TempDir(), 3, 8, per, false)
	var armed atomic.Bool
	started := make(chan struct{})
	var once sync.Once
	slow := faultfs.InjectorFunc(func(op faultfs.Op) faultfs.Fault {
		if armed.Load() && layerOneReads(m)(op) {
			once.Do(func() { close(started) })
			return faultfs.Fault{Delay: 200 * time.Millisecond}
		}
		return faultfs.Fault{}
	})
	s, mem := boundSniper(t, m, sniper.ModeExperts, false, sniper.Options{CacheBudget: sniper.Unlimited, FS: faultfs.Wrap(sniper.DirectFS{}, slow)})
	r := sniper.NewRouters(3)
	if err := r.Set(1, 4, 8, routerFor()); err != nil {
		t.Fatal(err)
	}
	pf := s.NewPrefetcher(r)
	defer pf.Close()
	ctx := context.Background()
	if err := s.Ensure(ctx, 0, []int32{0}); err != nil {
		t.Fatal(err)
	}
	readsBefore := s.Stats().Reads
	armed.Store(true)
	pf.Predict(1, hidden, 2)
	<-started
	if err := s.Ensure(ctx, 1, []int32{2, 5}); err != nil {
		t.Fatal(err)
	}
	checkExpert(t, m, mem, 1, 2, per)
	checkExpert(t, m, mem, 1, 5, per)
	st := s.Stats()
	if st.Hits != 2 || st.Misses != 1 || st.Reads-readsBefore != 2*3 {
		t.Fatalf("hits %d, misses %d, %d reads for layer 1; want 2, 1 (layer 0), 6 (the prefetch's only)", st.Hits, st.Misses, st.Reads-readsBefore)
	}
}

// TestPrefetchReadErrorsAreLeftToEnsure: a failed prefetch read is dropped silently; the Ensure that
// needs the expert reads it again and reports the failure with the file and offset.
func TestPrefetchReadErrorsAreLeftToEnsure(t *testing.T) {
	const per = 10_000
	m := newFakeModel(t, t.TempDir(), 3, 8, per, false)
	var armed atomic.Bool
	eio := faultfs.InjectorFunc(func(op faultfs.Op) faultfs.Fault {
		if armed.Load() && layerOneReads(m)(op) {
			return faultfs.Fault{Err: faultfs.ErrInjected}
		}
		return faultfs.Fault{}
	})
	s, mem := boundSniper(t, m, sniper.ModeExperts, false, sniper.Options{CacheBudget: sniper.Unlimited, FS: faultfs.Wrap(sniper.DirectFS{}, eio)})
	r := sniper.NewRouters(3)
	if err := r.Set(1, 4, 8, routerFor()); err != nil {
		t.Fatal(err)
	}
	pf := s.NewPrefetcher(r)
	defer pf.Close()
	ctx := context.Background()
	if err := s.Ensure(ctx, 0, []int32{0}); err != nil {
		t.Fatal(err)
	}
	armed.Store(true)
	pf.Predict(1, hidden, 2)
	waitFor(t, "the failed prefetch", func() bool { return s.Stats().PrefetchTime > 0 })
	if st := s.Stats(); st.PrefetchReads != 0 || s.Resident(1, 5) || s.Resident(1, 2) {
		t.Fatal("a failed prefetch left experts marked resident")
	}
	err := s.Ensure(ctx, 1, []int32{5, 2})
	var re *sniper.ReadError
	if !errors.Is(err, faultfs.ErrInjected) || !errors.As(err, &re) || re.Path != m.path {
		t.Fatalf("Ensure after a failed prefetch: %v; want the injected error naming %s and an offset", err, m.path)
	}
	armed.Store(false)
	if err := s.Ensure(ctx, 1, []int32{5, 2}); err != nil {
		t.Fatal(err)
	}
	checkExpert(t, m, mem, 1, 5, per)
	checkExpert(t, m, mem, 1, 2, per)
	if st := s.Stats(); st.CacheBytes != 3*3*per {
		t.Fatalf("cache holds %d bytes, want the 3 experts' %d (a failed prefetch must give back its room)", st.CacheBytes, 3*3*per)
	}
}

// TestPredictBatchReadsTheUnion: for a micro-batch of several tokens the union of each token's
// predicted experts is read ahead.
func TestPredictBatchReadsTheUnion(t *testing.T) {
	const per = 10_000
	m := newFakeModel(t, t.TempDir(), 3, 8, per, false)
	s, mem := boundSniper(t, m, sniper.ModeExperts, false, sniper.Options{CacheBudget: sniper.Unlimited})
	w := routerFor()
	w[7*4+1], w[1*4+1] = 30, 20 // the second value of the hidden state prefers 7, then 1
	r := sniper.NewRouters(3)
	if err := r.Set(1, 4, 8, w); err != nil {
		t.Fatal(err)
	}
	pf := s.NewPrefetcher(r)
	defer pf.Close()
	if err := s.Ensure(context.Background(), 0, []int32{0}); err != nil {
		t.Fatal(err)
	}
	pf.PredictBatch(1, []float32{1, 0, 0, 0, 0, 1, 0, 0}, 2, 2)
	waitFor(t, "the prefetch", func() bool { return s.Stats().PrefetchReads == 4 })
	for _, e := range []int{5, 2, 7, 1} {
		if !s.Resident(1, e) {
			t.Fatalf("expert %d of layer 1 not read ahead", e)
		}
		checkExpert(t, m, mem, 1, e, per)
	}
}

// TestPrefetcherPredictsRarelyWhileEverythingIsResident: once 64 predictions in a row found all
// their experts resident, only one call in 8 predicts (the others cost nothing).
func TestPrefetcherPredictsRarelyWhileEverythingIsResident(t *testing.T) {
	const per = 4096
	m := newFakeModel(t, t.TempDir(), 3, 8, per, false)
	s, _ := boundSniper(t, m, sniper.ModeExperts, false, sniper.Options{CacheBudget: sniper.Unlimited})
	r := sniper.NewRouters(3)
	if err := r.Set(1, 4, 8, routerFor()); err != nil {
		t.Fatal(err)
	}
	pf := s.NewPrefetcher(r)
	defer pf.Close()
	pf.PredictInline(true) // every prediction made is scored by the next Ensure of layer 1
	ctx := context.Background()
	round := func() {
		t.Helper()
		if err := s.Ensure(ctx, 0, []int32{0}); err != nil {
			t.Fatal(err)
		}
		pf.Predict(1, hidden, 2)
	}
	finish := func() {
		t.Helper()
		if err := s.Ensure(ctx, 1, []int32{5, 2}); err != nil {
			t.Fatal(err)
		}
	}
	finish() // 5 and 2 are resident from now on
	for i := 1; i <= 64; i++ {
		round()
		waitFor(t, "the prediction to be checked", func() bool { return pf.IdlePredictions() == i })
		finish()
	}
	before := s.Stats().Predicted
	for i := 0; i < 2*8; i++ {
		round()
		finish()
	}
	if got := (s.Stats().Predicted - before) / 2; got != 2 {
		t.Fatalf("%d of 16 calls predicted while everything was resident, want 2 (one in 8)", got)
	}
}

// TestPrefetcherSkipsLayersHeldWhole: once every expert of a layer is resident (an unlimited cache,
// warmed), predicting that layer could read nothing, so it is not predicted at all; a layer with
// experts missing still is.
func TestPrefetcherSkipsLayersHeldWhole(t *testing.T) {
	const per = 4096
	m := newFakeModel(t, t.TempDir(), 3, 8, per, false)
	s, _ := boundSniper(t, m, sniper.ModeExperts, false, sniper.Options{CacheBudget: sniper.Unlimited})
	r := sniper.NewRouters(3)
	for l := 1; l < 3; l++ {
		if err := r.Set(l, 4, 8, routerFor()); err != nil {
			t.Fatal(err)
		}
	}
	pf := s.NewPrefetcher(r)
	defer pf.Close()
	pf.PredictInline(true)
	ctx := context.Background()
	if !pf.Wanted(1) || pf.Wanted(0) {
		t.Fatalf("empty cache: layer 1 wanted %v (has a router), layer 0 %v (has none)", pf.Wanted(1), pf.Wanted(0))
	}
	all := []int32{0, 1, 2, 3, 4, 5, 6, 7}
	if err := s.Ensure(ctx, 1, all); err != nil {
		t.Fatal(err)
	}
	if pf.Wanted(1) || !pf.Wanted(2) {
		t.Fatalf("layer 1 held whole: wanted %v; layer 2 empty: wanted %v", pf.Wanted(1), pf.Wanted(2))
	}
	// predictThenRun predicts layer after layer 0 ran, then runs layer with the predicted choice.
	predictThenRun := func(layer int) {
		t.Helper()
		if err := s.Ensure(ctx, 0, []int32{0}); err != nil {
			t.Fatal(err)
		}
		pf.Predict(layer, hidden, 2)
		if err := s.Ensure(ctx, layer, []int32{5, 2}); err != nil {
			t.Fatal(err)
		}
	}
	before := s.Stats().Predicted
	for i := 0; i < 4; i++ {
		predictThenRun(1)
	}
	if got := s.Stats().Predicted - before; got != 0 {
		t.Fatalf("%d experts predicted for a layer held whole, want none", got)
	}
	predictThenRun(2)
	if got := s.Stats().Predicted - before; got != 2 {
		t.Fatalf("%d experts predicted for a layer with experts missing, want 2", got)
	}
}
