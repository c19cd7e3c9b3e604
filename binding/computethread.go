package binding

import "runtime"

// Each context runs its llama_decode calls on one OS thread of its own, its compute thread.
//
// ggml's CPU backend (Debian's build, and llama.cpp's default) threads a graph with OpenMP, and
// libgomp keeps a team of worker threads per thread that starts a parallel region. A goroutine
// calling llama_decode lands on whichever OS thread the Go scheduler gives it, so a server's
// decodes would start teams from many threads, each adding n_threads-1 workers. Once libgomp
// manages more threads than there are CPUs it stops spinning at barriers (its spin count drops to
// 1000) and sleeps in the kernel at nearly every one of the thousands of barriers in a step's
// graph; measured on a 2-core machine, that is about four times the futex calls per token of a
// stock llama-server, which always decodes on one thread. One thread per context keeps one team
// per context, as llama.cpp's own tools have; it is per context rather than per process so that
// one context waiting in its evaluation hook (a streamed read) never holds up another's decode.
type computeThread struct {
	calls chan func()
	done  chan struct{}
}

func newComputeThread() *computeThread {
	t := &computeThread{calls: make(chan func()), done: make(chan struct{})}
	go t.serve()
	return t
}

// run runs fn on the compute thread and returns when it has run. Calls must not overlap (a
// Context's calls never do) and fn must not call run itself.
func (t *computeThread) run(fn func()) {
	t.calls <- fn
	<-t.done
}

// stop ends the thread once no call is running; run must not be called after it.
func (t *computeThread) stop() { close(t.calls) }

func (t *computeThread) serve() {
	// Never unlocked: when the goroutine returns, the OS thread exits, and libgomp's team with it.
	runtime.LockOSThread()
	for fn := range t.calls {
		fn()
		t.done <- struct{}{}
	}
}
