package binding

import (
	"runtime"
	"sync"
)

// Every llama_decode in the process runs on one OS thread, the compute thread.
//
// ggml's CPU backend (Debian's build, and llama.cpp's default) threads a graph with OpenMP, and
// libgomp keeps a team of worker threads per thread that starts a parallel region. A goroutine
// calling llama_decode lands on whichever OS thread the Go scheduler gives it, so a server's
// decodes would start teams from many threads, each adding n_threads-1 workers. Once libgomp
// manages more threads than there are CPUs it stops spinning at barriers (its spin count drops to
// 1000) and sleeps in the kernel at nearly every one of the thousands of barriers in a step's
// graph; measured on a 2-core machine, that is about four times the futex calls per token of a
// stock llama-server, which always decodes on one thread. One compute thread keeps one team, as
// llama.cpp's own tools have. Two graphs computed at once would only share the same cores anyway.

type computeCall struct {
	fn   func()
	done chan struct{}
}

var (
	computeOnce  sync.Once
	computeCalls chan computeCall
	computeDone  = sync.Pool{New: func() any { return make(chan struct{}, 1) }}
)

// onComputeThread runs fn on the compute thread and returns when it has run. fn must not call
// onComputeThread itself (it would wait for itself), and must not block on a goroutine that does.
func onComputeThread(fn func()) {
	computeOnce.Do(func() {
		computeCalls = make(chan computeCall)
		go computeThread()
	})
	done := computeDone.Get().(chan struct{})
	computeCalls <- computeCall{fn: fn, done: done}
	<-done
	computeDone.Put(done)
}

// computeThread serves onComputeThread for the life of the process, locked to its OS thread.
func computeThread() {
	runtime.LockOSThread()
	for c := range computeCalls {
		c.fn()
		c.done <- struct{}{}
	}
}
