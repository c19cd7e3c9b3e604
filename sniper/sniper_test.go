package sniper_test

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/expertsniper/expertsniper/sniper"
	"github.com/expertsniper/expertsniper/sniper/faultfs"
)

// fakeModel is a file of random bytes with expert tensors laid out like a GGUF's data section
// (32-byte aligned, deliberately not page aligned).
type fakeModel struct {
	path    string
	data    []byte
	tensors []sniper.TensorDesc
}

func newFakeModel(t *testing.T, dir string, layers, experts int, expertBytes int64, dense bool) *fakeModel {
	t.Helper()
	rng := rand.New(rand.NewPCG(1, 2))
	off := int64(96) // a header-sized gap, not page aligned
	var tensors []sniper.TensorDesc
	for l := 0; l < layers; l++ {
		for _, kind := range []string{"gate", "up", "down"} {
			name := "blk." + itoa(l) + ".ffn_" + kind + "_exps.weight"
			dims := []uint64{uint64(expertBytes / 4), 1, uint64(experts)}
			n := expertBytes * int64(experts)
			if dense {
				name = "blk." + itoa(l) + ".ffn_" + kind + ".weight"
				dims = []uint64{uint64(expertBytes / 4), 1}
				n = expertBytes
			}
			tensors = append(tensors, sniper.TensorDesc{Name: name, Dims: dims, FileOffset: off, Bytes: n})
			off += n + 32 + int64(l)*32 // uneven gaps keep offsets 32-aligned only
		}
		// a pinned tensor in between, as attention weights would be
		tensors = append(tensors, sniper.TensorDesc{Name: "blk." + itoa(l) + ".attn_q.weight", Dims: []uint64{8, 8}, FileOffset: off, Bytes: 256})
		off += 256 + 32
	}
	data := make([]byte, off+100)
	for i := range data {
		data[i] = byte(rng.Uint32())
	}
	path := filepath.Join(dir, "model.gguf")
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	return &fakeModel{path: path, data: data, tensors: tensors}
}

func itoa(i int) string { return strconv.Itoa(i) }

// boundMemory is the memory of every bound tensor, by name (in sniper mode the slots, shared by the
// layers of a class).
type boundMemory struct {
	s      *sniper.Sniper
	mem    map[string][]byte
	stride map[string]int64
}

// expert is expert e of layer in tensor name: in its slot in sniper mode, in its own place otherwise.
func (b boundMemory) expert(name string, layer, e int, per int64) []byte {
	pos := e
	if slot, ok := b.s.Slot(layer, e); ok {
		pos = slot
	}
	at := int64(pos) * b.stride[name]
	return b.mem[name][at : at+per]
}

// boundSniper opens a sniper over m and binds every streamed tensor, returning the memory of each.
func boundSniper(t *testing.T, m *fakeModel, mode sniper.Mode, fuse bool, opts sniper.Options) (*sniper.Sniper, boundMemory) {
	t.Helper()
	return bindAll(t, m, mode, fuse, opts, nil)
}

// bindAll opens a sniper on m and binds every tensor llama.cpp would allocate, each of its parts
// converted with conv if it is not nil.
func bindAll(t *testing.T, m *fakeModel, mode sniper.Mode, fuse bool, opts sniper.Options, conv sniper.Convert) (*sniper.Sniper, boundMemory) {
	t.Helper()
	idx, err := sniper.NewIndex(m.path, m.tensors, mode, fuse)
	if err != nil {
		t.Fatal(err)
	}
	s, err := sniper.Open(idx, opts)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	mem, stride := map[string][]byte{}, map[string]int64{}
	for _, st := range idx.Tensors() {
		if st.FusedInto != "" {
			continue // llama.cpp allocates only the fused tensor
		}
		size := st.ExpertBytes * int64(st.Experts)
		var convs []sniper.Convert
		for range st.Parts {
			if conv != nil {
				convs = append(convs, conv)
			}
		}
		b, err := s.BindConverted(st.Name, st.ExpertBytes, size, convs)
		if err != nil {
			t.Fatal(err)
		}
		mem[st.Name] = unsafeBytes(b.Data, b.Stride*int64(b.Experts-1)+st.ExpertBytes)
		stride[st.Name] = b.Stride
	}
	return s, boundMemory{s, mem, stride}
}

func (m *fakeModel) expert(name string, e int) []byte {
	for _, td := range m.tensors {
		if td.Name == name {
			per := td.Bytes
			if len(td.Dims) == 3 {
				per /= int64(td.Dims[2])
			}
			o := td.FileOffset + int64(e)*per
			return m.data[o : o+per]
		}
	}
	panic("no tensor " + name)
}

func checkExpert(t *testing.T, m *fakeModel, mem boundMemory, layer, e int, per int64) {
	t.Helper()
	for _, kind := range []string{"gate", "up", "down"} {
		name := "blk." + itoa(layer) + ".ffn_" + kind + "_exps.weight"
		got := mem.expert(name, layer, e, per)
		if !bytes.Equal(got, m.expert(name, e)) {
			t.Fatalf("%s expert %d: memory differs from the file", name, e)
		}
	}
}

func TestEnsureMakesChosenExpertsResidentWithExactBytes(t *testing.T) {
	const per = 10_000 // not a multiple of 512: supersets span neighbours
	m := newFakeModel(t, t.TempDir(), 3, 8, per, false)
	s, mem := boundSniper(t, m, sniper.ModeExperts, false, sniper.Options{CacheBudget: sniper.Unlimited})
	ctx := context.Background()
	if err := s.Ensure(ctx, 1, []int32{3, 5, 3, 7}); err != nil {
		t.Fatal(err)
	}
	for _, e := range []int{3, 5, 7} {
		checkExpert(t, m, mem, 1, e, per)
	}
	st := s.Stats()
	if st.Misses != 3 || st.Hits != 0 {
		t.Fatalf("hits/misses = %d/%d, want 0/3", st.Hits, st.Misses)
	}
	if want := int64(3 * 3 * per); st.BytesRead != want {
		t.Fatalf("BytesRead = %d, want %d (3 experts × 3 tensors × %d)", st.BytesRead, want, per)
	}
	if st.BytesIssued < st.BytesRead || st.Reads != 9 {
		t.Fatalf("issued %d bytes in %d reads; want ≥ %d in 9", st.BytesIssued, st.Reads, st.BytesRead)
	}
	if st.ExpertActivations[1][3] != 2 || st.LayerActivations[1] != 4 {
		t.Fatalf("activations: expert 3 = %d (want 2), layer = %d (want 4)", st.ExpertActivations[1][3], st.LayerActivations[1])
	}
	// Again: all hits, nothing read.
	if err := s.Ensure(ctx, 1, []int32{5}); err != nil {
		t.Fatal(err)
	}
	if st2 := s.Stats(); st2.Hits != 1 || st2.BytesRead != st.BytesRead {
		t.Fatalf("second ensure: hits %d, bytes read %d → %d", st2.Hits, st.BytesRead, st2.BytesRead)
	}
	// Neighbours of loaded experts that were never loaded keep whatever, but loaded ones stay exact
	// after loading their neighbours.
	if err := s.Ensure(ctx, 1, []int32{4, 6}); err != nil {
		t.Fatal(err)
	}
	for _, e := range []int{3, 4, 5, 6, 7} {
		checkExpert(t, m, mem, 1, e, per)
	}
}

func TestBudgetEvictsLeastRecentlyUsedButNeverTheCurrentLayer(t *testing.T) {
	const per = 8192
	m := newFakeModel(t, t.TempDir(), 4, 4, per, false)
	perExpert := int64(3 * per)
	s, mem := boundSniper(t, m, sniper.ModeExperts, false, sniper.Options{CacheBudget: 3 * perExpert})
	ctx := context.Background()
	must := func(layer int, ids ...int32) {
		t.Helper()
		if err := s.Ensure(ctx, layer, ids); err != nil {
			t.Fatal(err)
		}
		for _, e := range ids {
			if !s.Resident(layer, int(e)) {
				t.Fatalf("layer %d expert %d not resident right after Ensure", layer, e)
			}
			checkExpert(t, m, mem, layer, int(e), per)
		}
	}
	must(0, 0, 1)
	must(1, 2)
	must(0, 1) // hit; (0,1) is now most recent, (0,0) least
	must(2, 3) // needs room: evicts (0,0)
	if s.Resident(0, 0) || !s.Resident(0, 1) || !s.Resident(1, 2) {
		t.Fatal("LRU order not respected")
	}
	// A working set larger than the budget is held entirely.
	must(3, 0, 1, 2, 3)
	st := s.Stats()
	if st.CacheBytes != 4*perExpert {
		t.Fatalf("cache holds %d bytes, want the pinned working set %d", st.CacheBytes, 4*perExpert)
	}
	if st.Evictions == 0 {
		t.Fatal("no evictions counted")
	}
}

func TestZeroBudgetRereadsEveryTime(t *testing.T) {
	const per = 5000
	m := newFakeModel(t, t.TempDir(), 2, 4, per, false)
	s, mem := boundSniper(t, m, sniper.ModeExperts, false, sniper.Options{})
	ctx := context.Background()
	for i := 0; i < 3; i++ {
		for l := 0; l < 2; l++ {
			if err := s.Ensure(ctx, l, []int32{1, 2}); err != nil {
				t.Fatal(err)
			}
			checkExpert(t, m, mem, l, 1, per)
			checkExpert(t, m, mem, l, 2, per)
		}
	}
	st := s.Stats()
	if st.Hits != 0 || st.Misses != 12 || st.BytesRead != 12*3*per {
		t.Fatalf("hits %d misses %d bytes %d; want 0, 12, %d", st.Hits, st.Misses, st.BytesRead, 12*3*per)
	}
	if st.CacheBytes != 2*3*per {
		t.Fatalf("resident %d bytes, want one layer's working set %d", st.CacheBytes, 2*3*per)
	}
}

func TestFusedGateUpIsGateSliceThenUpSlice(t *testing.T) {
	const per = 6000
	m := newFakeModel(t, t.TempDir(), 2, 4, per, false)
	s, mem := boundSniper(t, m, sniper.ModeExperts, true, sniper.Options{CacheBudget: sniper.Unlimited})
	ids, slots := []int32{2}, []int32{-1}
	if err := s.NewPin().EnsureSlots(context.Background(), 1, ids, slots); err != nil {
		t.Fatal(err)
	}
	if slot, _ := s.Slot(1, 2); ids[0] != 2 || slots[0] != int32(slot) {
		t.Fatalf("EnsureSlots left ids %v and said slot %d; expert 2 is in slot %d", ids, slots[0], slot)
	}
	got := mem.expert(sniper.FusedGateUpName(1), 1, 2, 2*per)
	want := append(append([]byte{}, m.expert("blk.1.ffn_gate_exps.weight", 2)...), m.expert("blk.1.ffn_up_exps.weight", 2)...)
	if !bytes.Equal(got, want) {
		t.Fatal("fused expert 2 is not gate expert 2 followed by up expert 2")
	}
	down := mem.expert("blk.1.ffn_down_exps.weight", 1, 2, per)
	if !bytes.Equal(down, m.expert("blk.1.ffn_down_exps.weight", 2)) {
		t.Fatal("down expert differs")
	}
	if st := s.Stats(); st.BytesRead != 3*per {
		t.Fatalf("BytesRead %d, want %d", st.BytesRead, 3*per)
	}
}

// TestFusedGateUpReadStraightIn covers the fused tensor when gate and up lie page-congruent in the
// file (as in real and generated Qwen3.5 files, whose expert slices are whole pages): whole pages are
// read straight into place and only the pages two experts, or the gate and up halves of the fused
// tensor, share go through a bounce buffer, all in one gathered read per part. Neighbouring experts
// share those pages in the file, so loading one must not disturb the other; experts back to back in
// the file are read together.
func TestFusedGateUpReadStraightIn(t *testing.T) {
	for _, c := range []struct {
		name  string
		start int64 // file offset of the gate tensor
		per   int64
	}{
		{"unaligned", 96, 3 * 4096},
		{"page aligned", 4 * 4096, 2 * 4096},
		{"not whole pages", 96, 3*4096 + 512},
		{"smaller than a page", 96, 1000},
	} {
		t.Run(c.name, func(t *testing.T) {
			const experts = 5
			rng := rand.New(rand.NewPCG(3, 4))
			off := c.start
			var tensors []sniper.TensorDesc
			for _, kind := range []string{"gate", "up", "down"} {
				n := c.per * experts
				tensors = append(tensors, sniper.TensorDesc{Name: "blk.0.ffn_" + kind + "_exps.weight",
					Dims: []uint64{uint64(c.per / 4), 1, experts}, FileOffset: off, Bytes: n})
				off += n // adjacent, as a converter writes them
			}
			data := make([]byte, off+4096+100)
			for i := range data {
				data[i] = byte(rng.Uint32())
			}
			path := filepath.Join(t.TempDir(), "model.gguf")
			if err := os.WriteFile(path, data, 0o644); err != nil {
				t.Fatal(err)
			}
			m := &fakeModel{path: path, data: data, tensors: tensors}
			s, mem := boundSniper(t, m, sniper.ModeExperts, true, sniper.Options{CacheBudget: sniper.Unlimited})
			check := func(e int) {
				t.Helper()
				got := mem.expert(sniper.FusedGateUpName(0), 0, e, 2*c.per)
				want := append(append([]byte{}, m.expert("blk.0.ffn_gate_exps.weight", e)...), m.expert("blk.0.ffn_up_exps.weight", e)...)
				if !bytes.Equal(got, want) {
					t.Fatalf("fused expert %d is not gate expert %d followed by up expert %d", e, e, e)
				}
			}
			// Middle first, then its neighbours on either side, then the ends.
			order := []int{2, 1, 3, 0, 4}
			for i, e := range order {
				if err := s.Ensure(context.Background(), 0, []int32{int32(e)}); err != nil {
					t.Fatal(err)
				}
				for _, done := range order[:i+1] {
					check(done)
				}
			}
			// One gathered read per part (gate, up, down) and expert.
			if got := s.Stats().Reads; got != 3*experts {
				t.Fatalf("%d reads for %d experts, want 3 each", got, experts)
			}
			// Experts back to back in the file: one read per part for all of them.
			s2, mem2 := boundSniper(t, m, sniper.ModeExperts, true, sniper.Options{CacheBudget: sniper.Unlimited})
			if err := s2.Ensure(context.Background(), 0, []int32{4, 0, 2, 1, 3}); err != nil {
				t.Fatal(err)
			}
			mem = mem2
			for e := range experts {
				check(e)
			}
			if got := s2.Stats().Reads; got != 3 {
				t.Fatalf("%d reads for %d adjacent experts, want 3 (one per part)", got, experts)
			}
		})
	}
}

func TestDenseModeStreamsWholeLayerFFN(t *testing.T) {
	const per = 20_000
	m := newFakeModel(t, t.TempDir(), 3, 1, per, true)
	s, mem := boundSniper(t, m, sniper.ModeDense, false, sniper.Options{})
	for l := 0; l < 3; l++ {
		if err := s.Ensure(context.Background(), l, nil); err != nil {
			t.Fatal(err)
		}
		for _, kind := range []string{"gate", "up", "down"} {
			name := "blk." + itoa(l) + ".ffn_" + kind + ".weight"
			if !bytes.Equal(mem.mem[name], m.expert(name, 0)) {
				t.Fatalf("%s differs from the file", name)
			}
		}
	}
	if st := s.Stats(); st.CacheBytes != 3*per || st.BytesRead != 9*per {
		t.Fatalf("resident %d read %d; want %d and %d", st.CacheBytes, st.BytesRead, 3*per, 9*per)
	}
}

func TestEnsureRejectsBadInput(t *testing.T) {
	m := newFakeModel(t, t.TempDir(), 1, 4, 4096, false)
	s, _ := boundSniper(t, m, sniper.ModeExperts, false, sniper.Options{})
	if err := s.Ensure(context.Background(), 0, []int32{4}); err == nil || !strings.Contains(err.Error(), "expert 4") {
		t.Fatalf("out-of-range expert: err = %v", err)
	}
	if err := s.Ensure(context.Background(), 7, []int32{0}); err == nil {
		t.Fatal("unknown layer accepted")
	}
	if _, err := s.Bind("blk.0.attn_q.weight", 1, 256); err == nil {
		t.Fatal("binding a pinned tensor accepted")
	}
	if _, err := sniper.NewIndex(m.path, m.tensors[3:4], sniper.ModeExperts, false); err == nil {
		t.Fatal("index with nothing to stream accepted")
	}
}

// TestFaultSweep fails the i-th read for i = 0, 1, ... until a whole sequence of Ensure calls
// succeeds. Every failure must name the file and an offset, leave the expert not resident, and the
// next attempt (without the fault) must read correct bytes.
func TestFaultSweep(t *testing.T) {
	const per = 7000
	dir := t.TempDir()
	m := newFakeModel(t, dir, 3, 6, per, false)
	seq := [][]int32{{0, 1}, {2, 3}, {4, 5}, {1, 2}}
	for _, kind := range []string{"eio", "short"} {
		for i := int64(0); ; i++ {
			pred := faultfs.OnIndex(i, faultfs.Reads)
			inj := faultfs.EIO(pred)
			if kind == "short" {
				inj = faultfs.ShortRead(pred)
			}
			s, mem := boundSniper(t, m, sniper.ModeExperts, false, sniper.Options{FS: faultfs.Wrap(sniper.DirectFS{}, inj), CacheBudget: 2 * 3 * per})
			var failed error
			for step, ids := range seq {
				layer := step % 3
				err := s.Ensure(context.Background(), layer, ids)
				if err != nil {
					failed = err
					var re *sniper.ReadError
					if !errors.As(err, &re) || re.Path != m.path || !strings.Contains(err.Error(), m.path) || !strings.Contains(err.Error(), "offset") {
						t.Fatalf("%s fault %d: error does not name file and offset: %v", kind, i, err)
					}
					if kind == "eio" && !errors.Is(err, faultfs.ErrInjected) {
						t.Fatalf("eio fault %d: %v does not wrap the injected error", i, err)
					}
					if kind == "short" && !errors.Is(err, io.ErrUnexpectedEOF) {
						t.Fatalf("short fault %d: %v is not ErrUnexpectedEOF", i, err)
					}
					// The fault was one-shot: retrying works and gives the right bytes.
					if err := s.Ensure(context.Background(), layer, ids); err != nil {
						t.Fatalf("%s fault %d: retry failed: %v", kind, i, err)
					}
				}
				for _, e := range ids {
					checkExpert(t, m, mem, layer, int(e), per)
				}
			}
			s.Close()
			if failed == nil {
				if i == 0 {
					t.Fatal("no read happened at all")
				}
				break
			}
		}
	}
}

func TestFileTruncatedOrReplacedWhileRunning(t *testing.T) {
	const per = 9000
	for _, how := range []string{"truncate", "replace"} {
		t.Run(how, func(t *testing.T) {
			m := newFakeModel(t, t.TempDir(), 2, 4, per, false)
			s, _ := boundSniper(t, m, sniper.ModeExperts, false, sniper.Options{})
			if err := s.Ensure(context.Background(), 0, []int32{0}); err != nil {
				t.Fatal(err)
			}
			switch how {
			case "truncate":
				if err := os.Truncate(m.path, 1000); err != nil {
					t.Fatal(err)
				}
			case "replace":
				tmp := m.path + ".new"
				if err := os.WriteFile(tmp, m.data, 0o644); err != nil {
					t.Fatal(err)
				}
				if err := os.Rename(tmp, m.path); err != nil {
					t.Fatal(err)
				}
			}
			err := s.Ensure(context.Background(), 1, []int32{3})
			if err == nil || !strings.Contains(err.Error(), m.path) || !strings.Contains(err.Error(), "offset") {
				t.Fatalf("err = %v, want one naming %s and an offset", err, m.path)
			}
			if s.Resident(1, 3) {
				t.Fatal("failed expert marked resident")
			}
		})
	}
}

// TestInjectedTruncationIsCaughtByRead covers a file that shrinks between the check and the read.
func TestInjectedTruncationIsCaughtByRead(t *testing.T) {
	const per = 9000
	m := newFakeModel(t, t.TempDir(), 2, 4, per, false)
	cut := m.tensors[0].FileOffset + 2*per
	s, _ := boundSniper(t, m, sniper.ModeExperts, false, sniper.Options{FS: faultfs.Wrap(sniper.DirectFS{}, faultfs.Truncate(cut, faultfs.Reads))})
	err := s.Ensure(context.Background(), 0, []int32{3})
	if !errors.Is(err, io.ErrUnexpectedEOF) || !strings.Contains(err.Error(), m.path) {
		t.Fatalf("err = %v", err)
	}
}

// barrierFile's reads each wait until n reads are in flight at once: a pool that reads serially
// never gets there, and its first read fails after timeout naming how many were in flight.
type barrierFile struct {
	sniper.File
	n       int
	timeout time.Duration

	mu       sync.Mutex
	inFlight int
	most     int           // the most reads ever in flight together
	reached  chan struct{} // closed once n reads were in flight together
}

func (f *barrierFile) ReadAt(ctx context.Context, p []byte, off int64) error {
	f.mu.Lock()
	f.inFlight++
	f.most = max(f.most, f.inFlight)
	if f.inFlight == f.n {
		close(f.reached)
	}
	f.mu.Unlock()
	defer func() { f.mu.Lock(); f.inFlight--; f.mu.Unlock() }()
	select {
	case <-f.reached:
	case <-time.After(f.timeout):
		f.mu.Lock()
		defer f.mu.Unlock()
		return fmt.Errorf("only %d of %d reads in flight after %v", f.inFlight, f.n, f.timeout)
	}
	return f.File.ReadAt(ctx, p, off)
}

func TestPoolReadsInParallelAndHonoursContext(t *testing.T) {
	m := newFakeModel(t, t.TempDir(), 1, 8, 4096, false)
	inner, err := sniper.DirectFS{}.Open(m.path)
	if err != nil {
		t.Fatal(err)
	}
	defer inner.Close()
	// Every read waits for all 8 to be in flight at once, which only a pool reading in parallel
	// reaches; the timeout is only a bound for a pool that never gets there (not a speed check).
	f := &barrierFile{File: inner, n: 8, timeout: 2 * time.Minute, reached: make(chan struct{})}
	p := sniper.NewPool(f, 8)
	reqs := make([]sniper.ReadRequest, 8)
	for i := range reqs {
		reqs[i] = sniper.ReadRequest{Offset: int64(i) * 4096, Dst: make([]byte, 4096)}
	}
	if err := p.Read(context.Background(), reqs); err != nil {
		t.Fatalf("8 reads with 8 readers: %v", err)
	}
	for i, r := range reqs {
		if !bytes.Equal(r.Dst, m.data[i*4096:(i+1)*4096]) {
			t.Fatalf("read %d wrong bytes", i)
		}
	}
	// With 4 readers the 8 never are in flight together: the pool honours its bound.
	serial := &barrierFile{File: inner, n: 5, timeout: 500 * time.Millisecond, reached: make(chan struct{})}
	if err := sniper.NewPool(serial, 4).Read(context.Background(), reqs); err == nil || !strings.Contains(err.Error(), "of 5 reads in flight") || serial.most > 4 {
		t.Fatalf("4 readers: %d reads were in flight together (%v)", serial.most, err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if err := p.Read(ctx, reqs); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled read: %v", err)
	}
}

func TestDirectFileReadsAnyRangeAndFallsBackOnTmpfs(t *testing.T) {
	dirs := []string{t.TempDir()}
	if st, err := os.Stat("/dev/shm"); err == nil && st.IsDir() {
		d, err := os.MkdirTemp("/dev/shm", "sniper-test")
		if err == nil {
			t.Cleanup(func() { os.RemoveAll(d) })
			dirs = append(dirs, d)
		}
	}
	for _, dir := range dirs {
		m := newFakeModel(t, dir, 1, 2, 5000, false)
		f, err := sniper.DirectFS{}.Open(m.path)
		if err != nil {
			t.Fatalf("%s: %v", dir, err)
		}
		for _, r := range [][2]int64{{0, 4096}, {4096, 8192}, {33, 1000}, {4000, 5000}, {int64(len(m.data)) - 77, 77}} {
			p := make([]byte, r[1])
			if err := f.ReadAt(context.Background(), p, r[0]); err != nil {
				t.Fatalf("%s: read [%d,+%d): %v", dir, r[0], r[1], err)
			}
			if !bytes.Equal(p, m.data[r[0]:r[0]+r[1]]) {
				t.Fatalf("%s: read [%d,+%d): wrong bytes", dir, r[0], r[1])
			}
		}
		p := make([]byte, 100)
		if err := f.ReadAt(context.Background(), p, int64(len(m.data))-50); !errors.Is(err, io.ErrUnexpectedEOF) || !strings.Contains(err.Error(), m.path) {
			t.Fatalf("%s: read past end: %v", dir, err)
		}
		// Gathered reads: aligned page buffers (one preadv where direct I/O works), a mix with an
		// unaligned buffer, and one running past the end.
		pages := func(n int) []byte { return alignedBytes(n * 4096) }
		for _, bufs := range [][][]byte{
			{pages(1), pages(2), pages(1)},
			{pages(1), make([]byte, 100), pages(1)[:4000]},
		} {
			if err := sniper.ReadVector(context.Background(), f, bufs, 4096); err != nil {
				t.Fatalf("%s: gathered read: %v", dir, err)
			}
			at := 4096
			for i, b := range bufs {
				if !bytes.Equal(b, m.data[at:at+len(b)]) {
					t.Fatalf("%s: gathered read: buffer %d has the wrong bytes", dir, i)
				}
				at += len(b)
			}
		}
		end := int64(len(m.data)) &^ 4095
		if err := sniper.ReadVector(context.Background(), f, [][]byte{pages(1), pages(1)}, end); !errors.Is(err, io.ErrUnexpectedEOF) || !strings.Contains(err.Error(), m.path) {
			t.Fatalf("%s: gathered read past end: %v", dir, err)
		}
		t.Logf("%s: direct=%v align=%d", dir, f.Direct(), f.Align())
		f.Close()
	}
}

func TestEvictionReleasesMemory(t *testing.T) {
	if sniper.CurrentRSS() == 0 {
		t.Skip("RSS not measurable on this platform")
	}
	const per = 4 << 20
	m := newFakeModel(t, t.TempDir(), 2, 4, per, false)
	s, _ := boundSniper(t, m, sniper.ModeExperts, false, sniper.Options{})
	before := sniper.CurrentRSS()
	if err := s.Ensure(context.Background(), 0, []int32{0, 1, 2, 3}); err != nil {
		t.Fatal(err)
	}
	loaded := sniper.CurrentRSS()
	if err := s.Ensure(context.Background(), 1, []int32{0}); err != nil {
		t.Fatal(err)
	}
	after := sniper.CurrentRSS()
	t.Logf("RSS: before %d MiB, 4 experts loaded %d MiB, after evicting them %d MiB", before>>20, loaded>>20, after>>20)
	if loaded-before < 40<<20 {
		t.Fatalf("loading 48 MiB of experts grew RSS by only %d MiB", (loaded-before)>>20)
	}
	if after > loaded-30<<20 {
		t.Fatalf("evicting 48 MiB (and loading 12) left RSS at %d MiB (was %d)", after>>20, loaded>>20)
	}
}

// TestPinsKeepEachContextsWorkingSet: two contexts decoding with the same model each hold their own
// layer's experts; one's Ensure never evicts what the other is computing with.
func TestPinsKeepEachContextsWorkingSet(t *testing.T) {
	const per = 4096
	m := newFakeModel(t, t.TempDir(), 2, 4, per, false)
	s, mem := boundSniper(t, m, sniper.ModeExperts, false, sniper.Options{})
	a, b := s.NewPin(), s.NewPin()
	ctx := context.Background()
	if err := a.Ensure(ctx, 0, []int32{0, 1}); err != nil {
		t.Fatal(err)
	}
	if err := b.Ensure(ctx, 1, []int32{2, 3}); err != nil {
		t.Fatal(err)
	}
	if err := b.Ensure(ctx, 0, []int32{3}); err != nil {
		t.Fatal(err)
	}
	for _, e := range []int{0, 1} {
		if !s.Resident(0, e) {
			t.Fatalf("context A's expert %d of layer 0 was evicted by context B", e)
		}
		checkExpert(t, m, mem, 0, e, per)
	}
	if s.Resident(1, 2) {
		t.Fatal("B's previous working set was not released (budget 0)")
	}
	a.Release()
	if err := b.Ensure(ctx, 1, []int32{0}); err != nil {
		t.Fatal(err)
	}
	if s.Resident(0, 0) || s.Resident(0, 1) {
		t.Fatal("released working set still held with budget 0")
	}
}

func TestWarmReadsEveryExpertOnceAndRefusesASmallCache(t *testing.T) {
	const per = 5000
	m := newFakeModel(t, t.TempDir(), 3, 4, per, false)
	s, mem := boundSniper(t, m, sniper.ModeExperts, true, sniper.Options{CacheBudget: sniper.Unlimited})
	if err := s.Warm(context.Background()); err != nil {
		t.Fatal(err)
	}
	if st := s.Stats(); st.BytesRead != 3*4*3*per || st.Misses != 12 {
		t.Fatalf("warming read %d bytes in %d misses, want %d in 12", st.BytesRead, st.Misses, 3*4*3*per)
	}
	s.ResetStats()
	// A cache that holds everything gives each layer exactly its own experts' slots (llama.cpp's
	// expert matmul works per slot), with no overflow; so does a finite budget of the whole size.
	exact, _ := boundSniper(t, m, sniper.ModeExperts, true, sniper.Options{CacheBudget: 3 * 4 * 3 * per})
	for l := 0; l < 3; l++ {
		if s.Slots(l) != 4 || exact.Slots(l) != 4 {
			t.Fatalf("layer %d: %d slots with an unlimited cache, %d with one of the model's size; want 4", l, s.Slots(l), exact.Slots(l))
		}
	}
	for l := 0; l < 3; l++ {
		for e := 0; e < 4; e++ {
			if !s.Resident(l, e) {
				t.Fatalf("layer %d expert %d not resident after Warm", l, e)
			}
			if err := s.Ensure(context.Background(), l, []int32{int32(e)}); err != nil {
				t.Fatal(err)
			}
			got := mem.expert("blk."+itoa(l)+".ffn_down_exps.weight", l, e, per)
			if !bytes.Equal(got, m.expert("blk."+itoa(l)+".ffn_down_exps.weight", e)) {
				t.Fatalf("layer %d expert %d differs after Warm", l, e)
			}
		}
	}
	if st := s.Stats(); st.Misses != 0 || st.Hits != 12 || st.BytesRead != 0 || st.Reads != 0 {
		t.Fatalf("after Warm and ResetStats: %d misses, %d hits, %d bytes in %d reads; want 0, 12, 0, 0", st.Misses, st.Hits, st.BytesRead, st.Reads)
	}

	small, _ := boundSniper(t, m, sniper.ModeExperts, true, sniper.Options{CacheBudget: 5 * 3 * per})
	if err := small.Warm(context.Background()); !errors.Is(err, sniper.ErrWarmTooSmall) {
		t.Fatalf("Warm with a cache of 5 of 12 experts: %v", err)
	}
	if small.Slots(0) <= 4 {
		t.Fatalf("a cache of 5 of 12 experts has %d slots per layer: no room for a working set beyond it", small.Slots(0))
	}
}

// TestManyContextsHoldWorkingSetsBeyondTheCache: with no cache at all, eight contexts each hold a whole
// layer's experts at once (a server's slots mid-prompt); each gets its own overflow slots with exact
// bytes, and once they are done the overflow is given back.
func TestManyContextsHoldWorkingSetsBeyondTheCache(t *testing.T) {
	const per = 5000
	m := newFakeModel(t, t.TempDir(), 8, 4, per, false)
	s, mem := boundSniper(t, m, sniper.ModeExperts, false, sniper.Options{Contexts: 6})
	ctx := context.Background()
	var pins []*sniper.Pin
	// Opened for 6 contexts: overflow for 7 working sets (one spare); an eighth fails clearly.
	for l := 0; l < 7; l++ {
		p := s.NewPin()
		pins = append(pins, p)
		if err := p.Ensure(ctx, l, []int32{0, 1, 2, 3}); err != nil {
			t.Fatalf("context %d: %v", l, err)
		}
	}
	eighth := s.NewPin()
	if err := eighth.Ensure(ctx, 7, []int32{0, 1, 2, 3}); err == nil || !strings.Contains(err.Error(), "more contexts decoding at once") {
		t.Fatalf("an eighth working set with no cache: %v, want the overflow error", err)
	}
	eighth.Release()
	for l := 0; l < 7; l++ {
		for e := 0; e < 4; e++ {
			checkExpert(t, m, mem, l, e, per)
		}
	}
	for _, p := range pins {
		p.Release()
	}
	if st := s.Stats(); st.CacheBytes != 0 {
		t.Fatalf("%d bytes still held after every context finished with no cache", st.CacheBytes)
	}
}
