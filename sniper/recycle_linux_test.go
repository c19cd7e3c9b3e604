package sniper

import (
	"bytes"
	"runtime"
	"syscall"
	"testing"
)

func TestMovePagesMovesContentAndLeavesSourceEmpty(t *testing.T) {
	ps := int(sysPageSize)
	m, err := mapAnon(8 * ps)
	if err != nil {
		t.Fatal(err)
	}
	defer unmapAnon(m)
	src, dst := m[:3*ps], m[4*ps:7*ps]
	for i := range src {
		src[i] = byte(i*7 + 1)
	}
	want := bytes.Clone(src)
	dst[5] = 99 // dst's old contents are discarded
	if err := movePages(src, dst); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(dst, want) {
		t.Fatal("moved pages do not hold the source's bytes")
	}
	if bytes.Count(src, []byte{0}) != len(src) {
		t.Fatal("source still holds data after the move")
	}
	// Both ranges stay usable.
	src[0], dst[0] = 1, 2
	if err := movePages(src[:ps], dst[:2*ps]); err == nil {
		t.Fatal("moving ranges of different lengths succeeded")
	}
}

// TestRecycledLoadsFaultLessThanFreshOnes counts the page faults of a steady stream of evictions and
// loads (minor faults: the cost docs/design.md §5 measured at ≈10 µs per 4 KiB here) with and without
// recycling.
func TestRecycledLoadsFaultLessThanFreshOnes(t *testing.T) {
	runtime.LockOSThread() // the fault counters are per thread
	defer runtime.UnlockOSThread()
	faults := func(enabled bool) int64 {
		r := newRecycler(enabled)
		if enabled && !r.enabled {
			t.Skip("this kernel cannot move pages (MREMAP_DONTUNMAP needs Linux 5.7)")
		}
		const slot = 64 << 10
		m, err := mapAnon(16 * slot)
		if err != nil {
			t.Fatal(err)
		}
		defer unmapAnon(m)
		fill := func(i int) {
			b := m[i*slot : (i+1)*slot]
			for j := 0; j < len(b); j += 512 {
				b[j] = byte(i)
			}
		}
		fill(0)
		before := minorFaults()
		for i := 1; i < 16; i++ {
			if err := r.put(m[(i-1)*slot : i*slot]); err != nil {
				t.Fatal(err)
			}
			r.take(m[i*slot : (i+1)*slot])
			fill(i)
			if m[(i-1)*slot] != 0 && !enabled {
				t.Fatal("released range still holds data")
			}
		}
		return minorFaults() - before
	}
	with, without := faults(true), faults(false)
	t.Logf("minor faults for 15 × 64 KiB loads: %d recycled, %d fresh", with, without)
	// (Fresh loads may fault less than once per page where the kernel maps larger folios at once.)
	if without < 15*4 || with > without/4 {
		t.Fatalf("recycled loads faulted %d times, fresh ones %d; want far fewer", with, without)
	}
}

func minorFaults() int64 {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_THREAD, &ru)
	return ru.Minflt
}
