package sniper_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/expertsniper/expertsniper/sniper"
)

// batchFile opens a file of n random bytes with DirectFS and returns it as a BatchReader. The test
// directory must allow O_DIRECT (ext4 here and on CI); on one that does not, DirectFS reads through
// the page cache and there is no batch to test, which is a failure of the test's premise.
func batchFile(t *testing.T, n int) (sniper.BatchReader, []byte, string) {
	t.Helper()
	data := make([]byte, n)
	rng := rand.New(rand.NewPCG(7, 11))
	for i := range data {
		data[i] = byte(rng.Uint32())
	}
	path := filepath.Join(t.TempDir(), "batch.bin")
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := sniper.DirectFS{}.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { f.Close() })
	br, ok := f.(sniper.BatchReader)
	if !ok || !f.Direct() {
		t.Fatalf("%s: DirectFS gave a %T (direct=%v); this test needs a directory with O_DIRECT", path, f, f.Direct())
	}
	return br, data, path
}

// TestBatchReadsEveryRange: aligned gathered reads go through AIO, a few at a time; unaligned ones
// and one ending in the file's last partial page are still read whole; each read is reported once.
func TestBatchReadsEveryRange(t *testing.T) {
	const size = 4<<20 + 100
	br, data, _ := batchFile(t, size)
	var reads []sniper.VectorRead
	rng := rand.New(rand.NewPCG(1, 2))
	for range 40 {
		off := int64(rng.IntN(size/4096-8)) * 4096
		var bufs [][]byte
		for range 1 + rng.IntN(3) {
			bufs = append(bufs, alignedBytes(4096*(1+rng.IntN(2))))
		}
		reads = append(reads, sniper.VectorRead{Bufs: bufs, Off: off})
	}
	// Unaligned offset and buffer: read without AIO. The last partial page: a short AIO count.
	reads = append(reads, sniper.VectorRead{Bufs: [][]byte{make([]byte, 1000)}, Off: 33})
	reads = append(reads, sniper.VectorRead{Bufs: [][]byte{make([]byte, 100)}, Off: size - 100})
	last := int64(size) &^ 4095
	reads = append(reads, sniper.VectorRead{Bufs: [][]byte{alignedBytes(4096)[:size-int(last)]}, Off: last})
	seen := make([]int, len(reads))
	err := br.ReadBatch(context.Background(), reads, 3, func(i int, took time.Duration) {
		seen[i]++
		if took < 0 {
			t.Errorf("read %d took %v", i, took)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	for i, r := range reads {
		if seen[i] != 1 {
			t.Fatalf("read %d reported %d times", i, seen[i])
		}
		at := r.Off
		for j, b := range r.Bufs {
			if !bytes.Equal(b, data[at:at+int64(len(b))]) {
				t.Fatalf("read %d at %d: buffer %d has the wrong bytes", i, r.Off, j)
			}
			at += int64(len(b))
		}
	}
}

// TestBatchErrors: a read past the end names the file and range, a cancelled batch returns the
// context's error, and nothing is reported for reads that did not happen.
func TestBatchErrors(t *testing.T) {
	const size = 64 << 10
	br, _, path := batchFile(t, size)
	past := []sniper.VectorRead{
		{Bufs: [][]byte{alignedBytes(4096)}, Off: 0},
		{Bufs: [][]byte{alignedBytes(4096), alignedBytes(4096)}, Off: size - 4096},
	}
	n := 0
	err := br.ReadBatch(context.Background(), past, 8, func(int, time.Duration) { n++ })
	var re *sniper.ReadError
	if !errors.Is(err, io.ErrUnexpectedEOF) || !errors.As(err, &re) || !strings.Contains(err.Error(), path) {
		t.Fatalf("read past the end: %v", err)
	}
	if n > 1 {
		t.Fatalf("%d reads reported done, but one of two failed", n)
	}

	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	n = 0
	err = br.ReadBatch(ctx, past[:1], 8, func(int, time.Duration) { n++ })
	if !errors.Is(err, context.Canceled) || n != 0 {
		t.Fatalf("cancelled batch: %v, %d reads reported", err, n)
	}
}

// TestPoolReadsThroughBatches: the pool's requests (plain, bounced, gathered with bounce segments) come
// through a batch with the right bytes, and a range past the end is refused before anything is read.
func TestPoolReadsThroughBatches(t *testing.T) {
	const size = 1 << 20
	br, data, _ := batchFile(t, size)
	f := br.(sniper.File)
	p := sniper.NewPool(f, 4)
	var got [3][]byte
	reqs := []sniper.ReadRequest{
		{Offset: 8192, Dst: alignedBytes(8192)},
		{Offset: 4096, Len: 4096, Then: func(b []byte) { got[0] = bytes.Clone(b) }},
		{Offset: 65536, Segs: []sniper.Segment{
			{Dst: alignedBytes(4096)},
			{Len: 8192, Then: func(b []byte) { got[1] = bytes.Clone(b) }},
			{Dst: alignedBytes(4096)},
		}},
	}
	if err := p.Read(context.Background(), reqs); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(reqs[0].Dst, data[8192:16384]) || !bytes.Equal(got[0], data[4096:8192]) {
		t.Fatal("plain or bounced read: wrong bytes")
	}
	s := reqs[2].Segs
	if !bytes.Equal(s[0].Dst, data[65536:69632]) || !bytes.Equal(got[1], data[69632:77824]) || !bytes.Equal(s[2].Dst, data[77824:81920]) {
		t.Fatal("gathered read: wrong bytes")
	}
	bad := []sniper.ReadRequest{{Offset: size - 4096, Dst: alignedBytes(8192)}}
	if err := p.Read(context.Background(), bad); err == nil || !strings.Contains(err.Error(), "past the end") {
		t.Fatalf("read past the end through the pool: %v", err)
	}
}
