package server

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/expertsniper/expertsniper/server/internal/fakeengine"
)

// 100,000 chat messages (under the default body limit) took minutes of llama.cpp's tokenizer before
// a 400; now they are refused before anything is rendered or tokenized.
func TestTooManyMessagesRefusedBeforeTokenizing(t *testing.T) {
	fake := fakeengine.New(1, 1<<16)
	ts := newTestServer(t, fake)
	msgs := make([]map[string]string, 100_000)
	for i := range msgs {
		msgs[i] = map[string]string{"role": "user", "content": "hi"}
	}
	for _, path := range []string{"/v1/chat/completions", "/apply-template", "/v1/context/save"} {
		start := time.Now()
		body := map[string]any{"messages": msgs, "name": "many"}
		resp, data := ts.do(t, "POST", path, body)
		e := expectError(t, resp, data, 400, "invalid_request_error")
		if !strings.Contains(e["message"].(string), "messages has 100000 entries; at most 4096") {
			t.Errorf("%s: message %q", path, e["message"])
		}
		t.Logf("%s refused in %v", path, time.Since(start))
	}
	if c := fake.Counters(); c.TokenizedBytes != 0 {
		t.Fatalf("%d bytes were tokenized", c.TokenizedBytes)
	}
}

// A prompt longer than any that could fit is refused unread; a long one that does not fit is
// tokenized only until the count is surely past the context; one that fits is counted exactly.
func TestLongPromptsAreBoundedBeforeAndWhileTokenizing(t *testing.T) {
	fake := fakeengine.New(1, 1<<14) // 16384 tokens: at most 1 MiB of prompt
	ts := newTestServer(t, fake)
	huge := strings.Repeat("x", 1<<14*maxBytesPerToken+1)
	resp, body := ts.do(t, "POST", "/completion", map[string]any{"prompt": huge})
	e := expectError(t, resp, body, 400, "exceed_context_size_error")
	if !strings.Contains(e["message"].(string), "bytes of prompt") || fake.Counters().TokenizedBytes != 0 {
		t.Fatalf("huge prompt: %v; tokenized %d bytes", e, fake.Counters().TokenizedBytes)
	}

	long := strings.Repeat("line of text\n", 60_000) // 780 KB: fewer bytes than the cap, far more tokens than fit
	resp, body = ts.do(t, "POST", "/completion", map[string]any{"prompt": long})
	e = expectError(t, resp, body, 400, "exceed_context_size_error")
	if got := fake.Counters().TokenizedBytes; got > 3*tokenizeChunkBytes || got == 0 {
		t.Fatalf("tokenized %d bytes of a %d-byte prompt that cannot fit: want a few pieces", got, len(long))
	}
	if n := e["n_prompt_tokens"].(float64); n < 1<<14 || !strings.Contains(e["message"].(string), "at least") {
		t.Fatalf("error %v should report at least the context's tokens", e)
	}

	// Just under the limit, made of many pieces: the whole text is counted exactly and runs.
	fits := strings.Repeat("x", 1<<14-1-200) // BOS + text + room for an answer
	resp, body = ts.do(t, "POST", "/completion", map[string]any{"prompt": fits, "n_predict": 1})
	if resp.StatusCode != 200 {
		t.Fatalf("a prompt that fits: %d %s", resp.StatusCode, body)
	}
	exactly := strings.Repeat("y\n", (1<<14)/2) // 16384 bytes + BOS = 16385 tokens: one too many
	resp, body = ts.do(t, "POST", "/completion", map[string]any{"prompt": exactly, "n_predict": 1})
	e = expectError(t, resp, body, 400, "exceed_context_size_error")
	if e["n_prompt_tokens"].(float64) != 1<<14+1 {
		t.Fatalf("exact count %v, want %d", e["n_prompt_tokens"], 1<<14+1)
	}
}

// Counting a long prompt stops between pieces when the client leaves.
func TestTokenizingStopsWhenTheClientLeaves(t *testing.T) {
	fake := fakeengine.New(1, 1<<16)
	fake.TokenizeDelay = 100 * time.Millisecond
	ts := newTestServer(t, fake)
	long := strings.Repeat("a few words\n", 300_000) // 3.6 MB: 55 pieces, 5.5 s of tokenizing
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan struct{})
	go func() {
		defer close(done)
		resp, err := sendWithContext(ctx, ts, "/completion", map[string]any{"prompt": long})
		if err == nil {
			resp.Body.Close()
		}
	}()
	waitFor(t, "tokenizing to start", func() bool { return fake.Counters().TokenizeCalls > 0 })
	cancel()
	<-done
	// The server notices the client leaving at its next check: the calls stop well before the 55
	// pieces (generous bounds for a loaded machine).
	calls := fake.Counters().TokenizeCalls
	for deadline := time.Now().Add(20 * time.Second); ; {
		time.Sleep(time.Second)
		later := fake.Counters().TokenizeCalls
		if later == calls {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("tokenizing went on after the client left: %d calls", later)
		}
		calls = later
	}
	if calls > 40 {
		t.Fatalf("%d of 55 pieces were tokenized after the client left early", calls)
	}
}

// /tokenize with_pieces is bounded: each piece costs a call and its share of a large answer.
func TestTokenizePiecesBounded(t *testing.T) {
	ts := newTestServer(t, fakeengine.New(1, 4096))
	content := strings.Repeat("z", maxTokenPieces+10)
	resp, body := ts.do(t, "POST", "/tokenize", map[string]any{"content": content, "with_pieces": true})
	e := expectError(t, resp, body, 400, "invalid_request_error")
	if !strings.Contains(e["message"].(string), "with_pieces") {
		t.Fatalf("message %q should name with_pieces", e["message"])
	}
	resp, body = ts.do(t, "POST", "/tokenize", map[string]any{"content": content})
	if resp.StatusCode != 200 || len(decode[struct{ Tokens []int }](t, body).Tokens) != len(content) {
		t.Fatalf("without pieces: %d %.100s", resp.StatusCode, body)
	}
	resp, body = ts.do(t, "POST", "/tokenize", map[string]any{"content": strings.Repeat("z", 1<<20+1)})
	expectError(t, resp, body, 400, "invalid_request_error")
}

// A body sent one byte a second is cut off with 408; once a body is in, a generation may run for
// longer than the body timeout.
func TestSlowBodyIsCutOff(t *testing.T) {
	fake := fakeengine.New(1, 1<<16)
	fake.Reply = func(string) string { return strings.Repeat("w ", 30) }
	fake.TokenDelay = 100 * time.Millisecond // 3 s of generation
	ts := newTestServer(t, fake, func(c *Config) { c.BodyReadTimeout = time.Second })

	conn, err := net.Dial("tcp", strings.TrimPrefix(ts.URL, "http://"))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	body := `{"prompt":"hello","n_predict":1}`
	fmt.Fprintf(conn, "POST /completion HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: application/json\r\nContent-Length: %d\r\n\r\n", len(body))
	start := time.Now()
	go func() {
		for i := 0; i < len(body); i++ {
			if _, err := conn.Write([]byte{body[i]}); err != nil {
				return
			}
			time.Sleep(time.Second)
		}
	}()
	conn.SetReadDeadline(time.Now().Add(30 * time.Second))
	resp, err := http.ReadResponse(bufio.NewReader(conn), nil)
	if err != nil {
		t.Fatalf("no answer to a trickling body after %v: %v", time.Since(start), err)
	}
	data, _ := io.ReadAll(resp.Body)
	expectError(t, resp, data, 408, "invalid_request_error")
	if d := time.Since(start); d > 15*time.Second {
		t.Fatalf("cut off after %v, want about 1 s", d)
	}

	// A stream that outlasts the body timeout completes.
	sresp := ts.stream(t, context.Background(), "/v1/chat/completions",
		map[string]any{"messages": []map[string]string{{"role": "user", "content": "x"}}, "stream": true})
	defer sresp.Body.Close()
	events := sseEvents(t, sresp.Body)
	if len(events) < 30 || events[len(events)-1] != "[DONE]" {
		t.Fatalf("a long stream after a quick body: %d events, last %q", len(events), events[len(events)-1])
	}
	var last map[string]any
	json.Unmarshal([]byte(events[len(events)-2]), &last)
	if last["error"] != nil {
		t.Fatalf("stream failed: %v", last)
	}
}
