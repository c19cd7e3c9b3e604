package local

import (
	"context"
	"errors"
	"sync/atomic"
	"testing"
	"time"

	"github.com/expertsniper/expertsniper/engine"
	"github.com/expertsniper/expertsniper/modelgen/testmodels"
	"github.com/expertsniper/expertsniper/sniper"
	"github.com/expertsniper/expertsniper/sniper/faultfs"
)

// TestCancelStopsAStepMidDecode: a request whose caller gives up while its step's decode waits on a
// read (a long prompt on a streamed model takes minutes) ends at once: the step's decode is
// cancelled when every request in it has given up. A step that still serves another request runs
// on, and that request's answer is unchanged.
func TestCancelStopsAStepMidDecode(t *testing.T) {
	path := testmodels.Path(t, "qwen3moe-q8_0")
	const stall = 3 * time.Minute
	var armed atomic.Bool
	stalled := make(chan struct{}, 16)
	var delay atomic.Int64 // of each read while armed
	delay.Store(int64(stall))
	inj := faultfs.InjectorFunc(func(op faultfs.Op) faultfs.Fault {
		if op.Kind != faultfs.OpRead || !armed.Load() {
			return faultfs.Fault{}
		}
		select {
		case stalled <- struct{}{}:
		default:
		}
		return faultfs.Fault{Delay: time.Duration(delay.Load())}
	})
	e, err := Open(context.Background(), path, Options{Mode: ModeSniper, Cache: "0", Slots: 2, Context: 256, Threads: 2,
		NoRepack: true, NoPrefetch: true, StreamFS: faultfs.Wrap(sniper.DirectFS{}, inj)})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	req := engine.Request{Prompt: prompt, MaxTokens: 4, Slot: 0}
	want, err := e.Complete(context.Background(), req, nil)
	if err != nil {
		t.Fatal(err)
	}

	// One request alone in its step: cancelling it stops the decode stalled on a read.
	armed.Store(true)
	ctx, cancel := context.WithCancel(context.Background())
	go func() {
		<-stalled
		cancel()
	}()
	start := time.Now()
	_, err = e.Complete(ctx, engine.Request{Prompt: "something else entirely, so that experts are read", MaxTokens: 4, Slot: 1}, nil)
	if took := time.Since(start); !errors.Is(err, context.Canceled) || took > stall/2 {
		t.Fatalf("cancelled request: %v after %v (a stalled read lasts %v)", err, took, stall)
	}

	// Two requests in a step, one cancelled: the step runs on for the other (short stalls now).
	delay.Store(int64(50 * time.Millisecond))
	for len(stalled) > 0 {
		<-stalled
	}
	ctx, cancel = context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		_, err := e.Complete(ctx, engine.Request{Prompt: "a third prompt, cancelled while it runs", MaxTokens: 64, Slot: 1}, nil)
		done <- err
	}()
	var got engine.Result
	var gotErr error
	kept := make(chan struct{})
	go func() {
		got, gotErr = e.Complete(context.Background(), engine.Request{Prompt: prompt + " and more", MaxTokens: 4, Slot: 0}, nil)
		close(kept)
	}()
	<-stalled
	cancel()
	if err := <-done; !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled request: %v", err)
	}
	<-kept
	armed.Store(false)
	if gotErr != nil {
		t.Fatalf("the request that shared the step: %v", gotErr)
	}
	ref, err := e.Complete(context.Background(), engine.Request{Prompt: prompt + " and more", MaxTokens: 4, Slot: 1}, nil)
	if err != nil {
		t.Fatal(err)
	}
	if got.Text != ref.Text || want.Text == "" {
		t.Fatalf("the request that shared the step wrote %q, alone %q", got.Text, ref.Text)
	}
}
