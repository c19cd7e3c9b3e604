package main

import (
	"context"
	"os"
	"os/signal"
	"sync/atomic"
	"syscall"
)

// One signal path for every command: SIGINT (Ctrl-C) and SIGTERM cancel the command's context, the
// command stops and removes what it was writing (outputFile; pull keeps its resumable FILE.partial),
// and run prints "cancelled" and exits 130. The one exception is Ctrl-C in the REPL, which stops the
// current answer rather than the program (takeInterrupts); SIGTERM still ends the REPL.

// signalCause is the cause of a context cancelled by a signal.
type signalCause struct{ sig os.Signal }

func (s signalCause) Error() string { return "interrupted by " + s.sig.String() }

// signalState is carried in the context so that a command can take Ctrl-C for itself.
type signalState struct {
	interactive atomic.Int32 // > 0 while a command handles SIGINT itself
}

type signalStateKey struct{}

// withSignals returns a context that SIGINT and SIGTERM cancel with a signalCause. After the first
// signal the default action is restored, so a second Ctrl-C ends a command that does not stop.
func withSignals(parent context.Context) (context.Context, func()) {
	st := &signalState{}
	ctx, cancel := context.WithCancelCause(context.WithValue(parent, signalStateKey{}, st))
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, os.Interrupt, syscall.SIGTERM)
	done := make(chan struct{})
	go func() {
		for {
			select {
			case <-done:
				return
			case sig := <-sigs:
				if sig == os.Interrupt && st.interactive.Load() > 0 {
					continue // the command's own handler has it too
				}
				cancel(signalCause{sig})
				signal.Stop(sigs)
				if st.interactive.Load() == 0 {
					signal.Reset(os.Interrupt, syscall.SIGTERM)
				}
				return
			}
		}
	}()
	return ctx, func() {
		signal.Stop(sigs)
		close(done)
		cancel(nil)
	}
}

// takeInterrupts makes Ctrl-C the caller's (it must have its own signal.Notify for os.Interrupt)
// instead of cancelling ctx, until the returned function is called. SIGTERM still cancels ctx.
func takeInterrupts(ctx context.Context) (release func()) {
	st, ok := ctx.Value(signalStateKey{}).(*signalState)
	if !ok {
		return func() {}
	}
	st.interactive.Add(1)
	return func() { st.interactive.Add(-1) }
}

// interruptedBySignal reports whether ctx was cancelled by SIGINT or SIGTERM.
func interruptedBySignal(ctx context.Context) bool {
	_, ok := context.Cause(ctx).(signalCause)
	return ok
}
