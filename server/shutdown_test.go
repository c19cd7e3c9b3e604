package server

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/expertsniper/expertsniper/server/internal/fakeengine"
)

// SIGTERM (Serve's context ending) in the middle of requests: a running non-streamed request and a
// queued one are answered 503 with a JSON error, and a stream ends with an error event, never
// [DONE]: before, they got 200 with an empty body, which clients took for an empty answer.
func TestShutdownAnswers503AndEndsStreamsWithAnError(t *testing.T) {
	fake := fakeengine.New(2, 1<<20)
	fake.Reply = longReply
	fake.TokenDelay = 10 * time.Millisecond
	srv, base, stop := serveOnLoopback(t, fake)

	type answer struct {
		status int
		body   []byte
		err    error
	}
	post := func(body string) chan answer {
		ch := make(chan answer, 1)
		go func() {
			resp, err := http.Post(base+"/v1/chat/completions", "application/json", strings.NewReader(body))
			if err != nil {
				ch <- answer{err: err}
				return
			}
			defer resp.Body.Close()
			data, err := io.ReadAll(resp.Body)
			ch <- answer{resp.StatusCode, data, err}
		}()
		return ch
	}
	stream := post(`{"messages":[{"role":"user","content":"streamed"}],"stream":true}`)
	waitFor(t, "the stream to run", func() bool { return fake.Counters().Running == 1 })
	running := post(`{"messages":[{"role":"user","content":"plain"}]}`)
	waitFor(t, "the plain request to run", func() bool { return fake.Counters().Running == 2 })
	queued := post(`{"messages":[{"role":"user","content":"queued"}]}`) // both slots are busy
	waitFor(t, "a request to queue", func() bool { return srv.eng.Load().eng.Slots().Queued == 1 })
	stop()

	for name, ch := range map[string]chan answer{"running": running, "queued": queued} {
		a := <-ch
		if a.err != nil {
			t.Fatalf("%s: %v", name, a.err)
		}
		var e struct {
			Error struct {
				Code          int
				Type, Message string
			}
		}
		if a.status != 503 || json.Unmarshal(a.body, &e) != nil || e.Error.Type != "unavailable_error" || !strings.Contains(e.Error.Message, "shutting down") {
			t.Errorf("%s request on shutdown: %d %s", name, a.status, a.body)
		}
	}
	a := <-stream
	if a.err != nil || a.status != 200 {
		t.Fatalf("stream: %d %v", a.status, a.err)
	}
	events := sseEvents(t, bytes.NewReader(a.body))
	last := events[len(events)-1]
	if last == "[DONE]" || !strings.Contains(last, `"error"`) || !strings.Contains(last, "shutting down") {
		t.Fatalf("the stream ended with %q, want an error event", last)
	}
}

// serveOnLoopback runs a server over fake with Serve, as agent serve does, on a loopback port. stop
// ends Serve's context (what SIGTERM does) and waits for Serve to return.
func serveOnLoopback(t *testing.T, fake *fakeengine.Engine) (srv *Server, base string, stop func()) {
	t.Helper()
	srv, err := New(Config{Host: "127.0.0.1", ContextDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.SetEngine(fake); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx, ln) }()
	t.Cleanup(cancel)
	stop = func() {
		t.Helper()
		cancel()
		select {
		case err := <-done:
			if err != nil {
				t.Fatalf("Serve: %v", err)
			}
		case <-time.After(15 * time.Second):
			t.Fatal("Serve did not return after its context was cancelled")
		}
	}
	return srv, "http://" + ln.Addr().String(), stop
}
