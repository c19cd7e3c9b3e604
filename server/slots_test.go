package server

import (
	"context"
	"errors"
	"testing"
	"time"
)

func acquireAsync(p *slotPool, ctx context.Context, want int) chan *slot {
	ch := make(chan *slot, 1)
	go func() {
		s, err := p.acquire(ctx, "", want)
		if err != nil {
			close(ch)
			return
		}
		ch <- s
	}()
	return ch
}

func waitWaiters(t *testing.T, p *slotPool, n int) {
	t.Helper()
	waitFor(t, "waiters", func() bool { _, w := p.counts(); return w == n })
}

func TestSlotPoolQueuesInOrderAndHandsSlotsOver(t *testing.T) {
	p := newSlotPool(2)
	ctx := context.Background()
	a, _ := p.acquire(ctx, "", -1)
	b, _ := p.acquire(ctx, "", -1)
	first := acquireAsync(p, ctx, -1)
	waitWaiters(t, p, 1)
	second := acquireAsync(p, ctx, -1)
	waitWaiters(t, p, 2)
	p.release(b)
	if s := <-first; s != b {
		t.Fatalf("the first waiter got slot %v, want %d", s, b.id)
	}
	p.release(a)
	if s := <-second; s != a {
		t.Fatalf("the second waiter got slot %v, want %d", s, a.id)
	}
}

func TestSlotPoolFreeSlotIsNotHeldBackByAWaiterForAnother(t *testing.T) {
	p := newSlotPool(2)
	ctx := context.Background()
	s0, _ := p.acquire(ctx, "", 0)
	s1, _ := p.acquire(ctx, "", 1)
	wantsOne := acquireAsync(p, ctx, 1)
	waitWaiters(t, p, 1)
	p.release(s0) // nobody waits for slot 0
	got, err := p.acquire(ctx, "", -1)
	if err != nil || got != s0 {
		t.Fatalf("a new request did not get the free slot 0: %v %v", got, err)
	}
	p.release(s1)
	if s := <-wantsOne; s != s1 {
		t.Fatalf("the waiter for slot 1 got %v", s)
	}
}

func TestSlotPoolCancelledWaiterLeavesTheQueue(t *testing.T) {
	p := newSlotPool(1)
	s, _ := p.acquire(context.Background(), "", -1)
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Millisecond)
	defer cancel()
	if _, err := p.acquire(ctx, "", -1); !errors.Is(err, context.DeadlineExceeded) {
		t.Fatalf("err %v, want the context's", err)
	}
	if _, w := p.counts(); w != 0 {
		t.Fatalf("%d waiters left", w)
	}
	p.release(s)
	if busy, _ := p.counts(); busy != 0 {
		t.Fatalf("the slot was handed to a gone waiter")
	}
}

func TestSlotPoolPrefersTheLongestCachedPrefix(t *testing.T) {
	p := newSlotPool(3)
	p.slots[0].cached = "abc"
	p.slots[1].cached = "abcdef"
	p.slots[2].cached = "xyz"
	s, _ := p.acquire(context.Background(), "abcdefgh", -1)
	if s.id != 1 {
		t.Fatalf("got slot %d, want 1", s.id)
	}
}
