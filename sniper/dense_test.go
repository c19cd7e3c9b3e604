package sniper_test

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/expertsniper/expertsniper/sniper"
	"github.com/expertsniper/expertsniper/sniper/faultfs"
)

// checkLayer fails unless every FFN tensor of layer holds the file's bytes.
func checkLayer(t *testing.T, m *fakeModel, mem boundMemory, layer int) {
	t.Helper()
	for _, kind := range []string{"gate", "up", "down"} {
		name := "blk." + itoa(layer) + ".ffn_" + kind + ".weight"
		if !bytes.Equal(mem.mem[name], m.expert(name, 0)) {
			t.Fatalf("%s differs from the file", name)
		}
	}
}

// passes runs n tokens' worth of dense Ensures (every layer in order) and checks each layer's bytes.
func passes(t *testing.T, s *sniper.Sniper, m *fakeModel, mem boundMemory, layers, n int) {
	t.Helper()
	for p := 0; p < n; p++ {
		for l := 0; l < layers; l++ {
			if err := s.Ensure(context.Background(), l, nil); err != nil {
				t.Fatal(err)
			}
			checkLayer(t, m, mem, l)
		}
	}
}

// TestDensePoliciesOnCyclicAccess measures what the issue asked to choose between: with a budget of
// 3 of 8 layers, an LRU of layers never hits (each pass evicts exactly the layers the next pass needs
// first), while FixedLayers keeps layers 0-2 and hits 3 of 8 from the second pass on.
func TestDensePoliciesOnCyclicAccess(t *testing.T) {
	const per, layers, budget = 12_000, 8, 3
	m := newFakeModel(t, t.TempDir(), layers, 1, per, true)
	layerBytes := int64(3 * per)
	for _, c := range []struct {
		policy   string
		wantHits int64
	}{{"lru", 0}, {"fixed", 2 * budget}, {"", 2 * budget}} {
		pol, err := sniper.PolicyFor(sniper.ModeDense, c.policy)
		if err != nil {
			t.Fatal(err)
		}
		s, mem := boundSniper(t, m, sniper.ModeDense, false, sniper.Options{CacheBudget: budget * layerBytes, Policy: pol})
		passes(t, s, m, mem, layers, 3)
		st := s.Stats()
		if st.Hits != c.wantHits || st.Misses != 3*layers-c.wantHits {
			t.Errorf("policy %q: hits %d misses %d, want %d and %d", c.policy, st.Hits, st.Misses, c.wantHits, 3*layers-c.wantHits)
		}
		// The budget bounds the layers kept; the layer being computed is held beyond it.
		if st.PeakCacheBytes > (budget+1)*layerBytes {
			t.Errorf("policy %q: %d bytes resident at the peak, budget %d plus one layer %d", c.policy, st.PeakCacheBytes, budget*layerBytes, layerBytes)
		}
		if c.policy != "lru" {
			for l := 0; l < layers; l++ {
				if want := l < budget; s.Resident(l, 0) != want && l != layers-1 {
					t.Errorf("policy %q: layer %d resident %v, want %v", c.policy, l, !want, want)
				}
			}
		}
		s.Close()
	}
}

// waitResident waits until layer's FFN is resident (read-ahead reads it in the background).
func waitResident(t *testing.T, s *sniper.Sniper, layer int) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !s.Resident(layer, 0) {
		if time.Now().After(deadline) {
			t.Fatalf("layer %d never became resident by read-ahead", layer)
		}
		time.Sleep(time.Millisecond)
	}
}

// TestDenseReadAheadReadsTheNextMissingLayer checks that, with read-ahead, the layer after the one
// just ensured is read in the background (after the last layer: the first one not kept), that its
// Ensure then counts a read-ahead hit with the file's exact bytes, and that the working set of two
// layers (computed, read ahead) is all that is held beyond the budget, at every budget.
func TestDenseReadAheadReadsTheNextMissingLayer(t *testing.T) {
	const per, layers = 10_000, 6
	m := newFakeModel(t, t.TempDir(), layers, 1, per, true)
	layerBytes := int64(3 * per)
	ctx := context.Background()
	for _, kept := range []int{0, 1, 2, layers} {
		budget := int64(kept) * layerBytes
		s, mem := boundSniper(t, m, sniper.ModeDense, false, sniper.Options{CacheBudget: budget, Policy: sniper.NewFixedLayers(), ReadAhead: true})
		for pass := 0; pass < 3; pass++ {
			for l := 0; l < layers; l++ {
				if err := s.Ensure(ctx, l, nil); err != nil {
					t.Fatal(err)
				}
				checkLayer(t, m, mem, l)
				// The next layer not kept: read ahead (unless every layer is resident).
				next := l + 1
				if next == layers {
					next = min(kept, layers)
				}
				if next < layers && !(pass > 0 && next < kept) {
					waitResident(t, s, next)
				}
			}
		}
		st := s.Stats()
		if st.PeakCacheBytes > budget+2*layerBytes {
			t.Errorf("kept %d: peak %d bytes resident, budget %d plus two layers %d", kept, st.PeakCacheBytes, budget, 2*layerBytes)
		}
		// Every layer is read once in the first pass, the first of all on demand, the others ahead of
		// their Ensure; each later pass reads the streamed ones ahead, and the last pass reads the
		// next token's first streamed layer, which no Ensure used.
		wantRead, unused := int64(layers), int64(0)
		if kept < layers {
			streamed := int64(layers - kept)
			wantRead, unused = int64(layers)+2*streamed+1, 1
		}
		if got := st.BytesRead / layerBytes; got != wantRead {
			t.Errorf("kept %d: read %d layers, want %d", kept, got, wantRead)
		}
		if st.Misses != 1 || st.PrefetchHits != wantRead-1-unused || st.PrefetchReads != wantRead-1 {
			t.Errorf("kept %d: misses %d, read-ahead hits %d reads %d; want 1, %d, %d", kept, st.Misses, st.PrefetchHits, st.PrefetchReads, wantRead-1-unused, wantRead-1)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

// gatedFS holds every read starting in file bytes [from, to) until open is closed.
type gatedFS struct {
	from, to int64
	open     chan struct{}
}

type gatedFile struct {
	sniper.File
	fs *gatedFS
}

func (g *gatedFS) Open(path string) (sniper.File, error) {
	f, err := sniper.DirectFS{}.Open(path)
	if err != nil {
		return nil, err
	}
	return gatedFile{f, g}, nil
}

func (f gatedFile) ReadAt(ctx context.Context, p []byte, off int64) error {
	if off >= f.fs.from && off < f.fs.to {
		select {
		case <-f.fs.open:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	return f.File.ReadAt(ctx, p, off)
}

// TestDenseReadAheadIsAlwaysWaitedFor: once an Ensure returns, the next layer's read-ahead is already
// under way as far as the next Ensure can tell, even if its goroutine has not run yet (a loaded
// machine): that Ensure waits for it and counts a read-ahead hit, never reading the layer itself.
// Layer 1's reads are held until that Ensure is waiting, so the read-ahead cannot have finished.
func TestDenseReadAheadIsAlwaysWaitedFor(t *testing.T) {
	const per, layers = 10_000, 3
	m := newFakeModel(t, t.TempDir(), layers, 1, per, true)
	// Reads start at page boundaries: those of layer 1's tensors from the page holding its first
	// byte on, and before its last tensor ends (layer 0's start a tensor's size before, layer 2's
	// after: tensors are bigger than a page).
	var lo, hi int64 = -1, 0
	for _, td := range m.tensors {
		if strings.HasPrefix(td.Name, "blk.1.ffn_") {
			if lo < 0 {
				lo = td.FileOffset / 4096 * 4096
			}
			hi = td.FileOffset + 1
		}
	}
	for range 20 {
		gate := &gatedFS{from: lo, to: hi, open: make(chan struct{})}
		s, mem := boundSniper(t, m, sniper.ModeDense, false, sniper.Options{FS: gate, Policy: sniper.NewFixedLayers(), ReadAhead: true})
		if err := s.Ensure(context.Background(), 0, nil); err != nil {
			t.Fatal(err)
		}
		ensured := make(chan error, 1)
		go func() { ensured <- s.Ensure(context.Background(), 1, nil) }()
		select {
		case err := <-ensured:
			t.Fatalf("layer 1's Ensure returned (%v) while its only read was held", err)
		case <-time.After(20 * time.Millisecond):
		}
		close(gate.open)
		if err := <-ensured; err != nil {
			t.Fatal(err)
		}
		checkLayer(t, m, mem, 1)
		st := s.Stats()
		if st.Misses != 1 || st.PrefetchHits != 1 {
			t.Fatalf("misses %d (want layer 0's only), read-ahead hits %d (want 1)", st.Misses, st.PrefetchHits)
		}
		s.Close()
	}
}

// TestDenseReadAheadFaultsAreRetriedByEnsure injects one read fault at every position in turn: a
// failed read-ahead leaves its layer missing and its Ensure reads it (or reports the fault, which a
// retry then gets past); the bytes are always the file's.
func TestDenseReadAheadFaultsAreRetriedByEnsure(t *testing.T) {
	const per, layers = 9_000, 4
	m := newFakeModel(t, t.TempDir(), layers, 1, per, true)
	for i := int64(0); ; i++ {
		inj := faultfs.EIO(faultfs.OnIndex(i, faultfs.Reads))
		s, mem := boundSniper(t, m, sniper.ModeDense, false, sniper.Options{FS: faultfs.Wrap(sniper.DirectFS{}, inj),
			CacheBudget: 3 * per, Policy: sniper.NewFixedLayers(), ReadAhead: true})
		for pass := 0; pass < 2; pass++ {
			for l := 0; l < layers; l++ {
				if err := s.Ensure(context.Background(), l, nil); err != nil {
					if !errors.Is(err, faultfs.ErrInjected) {
						t.Fatalf("fault %d: %v", i, err)
					}
					if err := s.Ensure(context.Background(), l, nil); err != nil {
						t.Fatalf("fault %d: retry: %v", i, err)
					}
				}
				checkLayer(t, m, mem, l)
			}
		}
		reads := s.Stats().Reads
		s.Close()
		if i > reads+3 {
			break // past every read a run makes
		}
	}
}

// TestDenseCloseStopsReadAhead closes the sniper right after an Ensure started a read-ahead: Close
// waits for it (its memory is unmapped after) and nothing fails.
func TestDenseCloseStopsReadAhead(t *testing.T) {
	const per, layers = 200_000, 3
	m := newFakeModel(t, t.TempDir(), layers, 1, per, true)
	for range 5 {
		s, _ := boundSniper(t, m, sniper.ModeDense, false, sniper.Options{Policy: sniper.NewFixedLayers(), ReadAhead: true})
		if err := s.Ensure(context.Background(), 0, nil); err != nil {
			t.Fatal(err)
		}
		if err := s.Close(); err != nil {
			t.Fatal(err)
		}
		if err := s.Ensure(context.Background(), 1, nil); !errors.Is(err, sniper.ErrClosed) {
			t.Fatalf("Ensure after Close: %v", err)
		}
	}
}

// TestDenseReadsAreDeviceSizedPieces: a dense FFN tensor of several MiB is read as direct reads of at
// most 4 MiB (several in flight through the AIO pool), landing in place with the file's exact bytes.
func TestDenseReadsAreDeviceSizedPieces(t *testing.T) {
	const per, layers = 9<<20 + 1000, 2
	m := newFakeModel(t, t.TempDir(), layers, 1, per, true)
	s, mem := boundSniper(t, m, sniper.ModeDense, false, sniper.Options{})
	passes(t, s, m, mem, layers, 1)
	st := s.Stats()
	// Each tensor spans at most 10 MiB of pages: three pieces of at most 4 MiB.
	if want := int64(layers * 3 * 3); st.Reads != want {
		t.Fatalf("%d reads for %d tensors of %d bytes, want %d pieces of at most 4 MiB", st.Reads, layers*3, per, want)
	}
	if st.BytesRead != layers*3*per || st.BytesIssued < st.BytesRead || st.BytesIssued > st.BytesRead+int64(layers*3*2*4096) {
		t.Fatalf("read %d bytes, issued %d", st.BytesRead, st.BytesIssued)
	}
}

// TestDenseConvertedReadsGoInRowGroups: a dense tensor converted on its way into place (llama.cpp's
// repacked layout) is read and converted 256 rows at a time, each piece landing where its rows go.
func TestDenseConvertedReadsGoInRowGroups(t *testing.T) {
	const rows, rowBytes = 768, 36
	const per = rows * rowBytes
	m := newFakeModel(t, t.TempDir(), 2, 1, per, true)
	for i := range m.tensors {
		m.tensors[i].Dims = []uint64{rowBytes * 2, rows}
	}
	idx, err := sniper.NewIndex(m.path, m.tensors, sniper.ModeDense, false)
	if err != nil {
		t.Fatal(err)
	}
	s, err := sniper.Open(idx, sniper.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	var mu sync.Mutex
	var pieces []int
	// The conversion here is a copy that also records each piece's size.
	conv := func(dst, src []byte) error {
		mu.Lock()
		pieces = append(pieces, len(src))
		mu.Unlock()
		copy(dst, src)
		return nil
	}
	mem := map[string][]byte{}
	for _, st := range idx.Tensors() {
		b, err := s.BindConverted(st.Name, st.ExpertBytes, st.ExpertBytes, []sniper.Convert{conv})
		if err != nil {
			t.Fatal(err)
		}
		mem[st.Name] = unsafeBytes(b.Data, st.ExpertBytes)
	}
	for l := 0; l < 2; l++ {
		if err := s.Ensure(context.Background(), l, nil); err != nil {
			t.Fatal(err)
		}
		for _, kind := range []string{"gate", "up", "down"} {
			name := "blk." + itoa(l) + ".ffn_" + kind + ".weight"
			if !bytes.Equal(mem[name], m.expert(name, 0)) {
				t.Fatalf("%s differs from the file", name)
			}
		}
	}
	if len(pieces) != 2*3*3 {
		t.Fatalf("%d converted pieces, want 3 per tensor (768 rows, 256 at a time): %v", len(pieces), pieces)
	}
	for _, n := range pieces {
		if n != 256*rowBytes {
			t.Fatalf("a piece of %d bytes, want 256 rows of %d: %v", n, rowBytes, pieces)
		}
	}
}
