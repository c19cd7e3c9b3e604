package binding

import (
	"runtime"
	"sync"
	"syscall"
	"testing"
)

// Every call runs on the context's one compute thread, whichever OS thread its caller is on:
// libgomp then keeps one team of workers for the context (computethread.go).
func TestComputeThreadUsesOneOSThread(t *testing.T) {
	ct := newComputeThread()
	defer ct.stop()
	var mu sync.Mutex // the callers take turns on the thread, as a Context's calls never overlap
	callers, computers := map[int]bool{}, map[int]bool{}
	var wg, locked sync.WaitGroup
	locked.Add(8)
	for range 8 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			runtime.LockOSThread() // each caller on an OS thread of its own, all at once
			defer runtime.UnlockOSThread()
			mu.Lock()
			callers[syscall.Gettid()] = true
			mu.Unlock()
			locked.Done()
			locked.Wait()
			for range 20 {
				mu.Lock()
				ct.run(func() { computers[syscall.Gettid()] = true })
				mu.Unlock()
			}
		}()
	}
	wg.Wait()
	if len(callers) != 8 {
		t.Fatalf("the test's callers ran on %d OS threads, want 8", len(callers))
	}
	if len(computers) != 1 {
		t.Fatalf("calls ran on %d OS threads, want 1: %v", len(computers), computers)
	}
	for tid := range computers {
		if callers[tid] {
			t.Fatalf("a call ran on its caller's thread %d, not the compute thread", tid)
		}
	}
}
