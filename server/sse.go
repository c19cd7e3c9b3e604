package server

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"time"
)

// eventWriteTimeout bounds how long one event may wait for a client to read.
const eventWriteTimeout = 60 * time.Second

// sseWriter writes server-sent events. Every event is flushed at once: a client shows tokens as they
// come, and nothing between us and it (ResponseController follows Unwrap chains) may buffer.
type sseWriter struct {
	w       http.ResponseWriter
	rc      *http.ResponseController
	started bool
	buf     bytes.Buffer
}

func newSSE(w http.ResponseWriter) *sseWriter {
	return &sseWriter{w: w, rc: http.NewResponseController(w)}
}

// start sends the headers; it is called before the first event, so that errors found before any
// token can still be answered with a proper status.
func (s *sseWriter) start() {
	if s.started {
		return
	}
	s.started = true
	h := s.w.Header()
	h.Set("Content-Type", "text/event-stream")
	h.Set("Cache-Control", "no-cache")
	h.Set("Connection", "keep-alive")
	h.Set("X-Accel-Buffering", "no")
	s.w.WriteHeader(http.StatusOK)
}

// data writes one "data: JSON" event.
func (s *sseWriter) data(v any) error {
	payload, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode an event: %w", err)
	}
	return s.raw(payload)
}

// event writes one "event: NAME" + "data: JSON" event (the Responses API's typed events).
func (s *sseWriter) event(name string, v any) error {
	payload, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encode an event: %w", err)
	}
	return s.write(name, payload)
}

func (s *sseWriter) raw(payload []byte) error { return s.write("", payload) }

func (s *sseWriter) write(name string, payload []byte) error {
	s.start()
	s.buf.Reset()
	s.buf.Grow(len(payload) + len(name) + 16)
	if name != "" {
		s.buf.WriteString("event: ")
		s.buf.WriteString(name)
		s.buf.WriteString("\n")
	}
	s.buf.WriteString("data: ")
	s.buf.Write(payload)
	s.buf.WriteString("\n\n")
	// A client that stops reading must not hold its slot for ever: a write that cannot proceed for
	// eventWriteTimeout fails, and the generation stops with it.
	_ = s.rc.SetWriteDeadline(time.Now().Add(eventWriteTimeout))
	if _, err := s.w.Write(s.buf.Bytes()); err != nil {
		return fmt.Errorf("write an event: %w", err)
	}
	// Flushing is best effort: a writer that cannot flush still delivers at the end.
	_ = s.rc.Flush()
	return nil
}

// done ends an OpenAI stream.
func (s *sseWriter) done() error { return s.raw([]byte("[DONE]")) }

// fail reports an error: as a normal JSON response if nothing was streamed yet, else as an error
// event, which OpenAI's SDKs raise as an APIError.
func (s *sseWriter) fail(e *apiError) {
	if !s.started {
		writeAPIError(s.w, e)
		return
	}
	_ = s.data(e.body())
}
