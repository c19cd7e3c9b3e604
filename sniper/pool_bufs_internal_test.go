package sniper

import (
	"testing"
	"unsafe"
)

// TestBounceBuffersAreReused: a freed bounce buffer serves the next read it can hold (the smallest
// that fits), so that steady streaming faults no fresh pages; what the pool keeps stays within half
// the staging bound, and Close lets go of it.
func TestBounceBuffersAreReused(t *testing.T) {
	p := NewPool(nil, 2)
	a := p.getBuf(600 << 10)
	b := p.getBuf(2 << 20)
	p.putBuf(a)
	p.putBuf(b)
	a2, b2 := p.getBuf(580<<10), p.getBuf(1<<20)
	if unsafe.SliceData(a2) != unsafe.SliceData(a) || len(a2) != 580<<10 {
		t.Fatal("a 580 KiB read did not reuse the free 600 KiB buffer (the smallest that fits)")
	}
	if unsafe.SliceData(b2) != unsafe.SliceData(b) {
		t.Fatal("a 1 MiB read did not reuse the free 2 MiB buffer")
	}
	p.putBuf(a2)
	p.putBuf(b2)
	limit := StagingBytes(2) / 2
	var held [][]byte
	for i := 0; i < 8; i++ {
		held = append(held, p.getBuf(4<<20))
	}
	for _, h := range held {
		p.putBuf(h)
	}
	if int64(p.freeBytes) > limit || p.freeBytes == 0 {
		t.Fatalf("the pool keeps %d bytes of bounce buffers, bound %d", p.freeBytes, limit)
	}
	p.Close()
	if len(p.free) != 0 || p.freeBytes != 0 || len(p.mapped) != 0 {
		t.Fatalf("after Close: %d free buffers (%d bytes), %d mappings", len(p.free), p.freeBytes, len(p.mapped))
	}
}
