package server

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/expertsniper/expertsniper/server/internal/fakeengine"
)

// waitFor polls cond for up to 30 s (generous: a loaded machine under -race is slow).
func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(30 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func longReply(string) string { return strings.Repeat("word ", 2000) }

func TestClientDisconnectStopsGenerationAndFreesTheSlot(t *testing.T) {
	for _, stream := range []bool{true, false} {
		t.Run(fmt.Sprintf("stream=%v", stream), func(t *testing.T) {
			fake := fakeengine.New(1, 1<<20)
			fake.Reply = longReply
			fake.TokenDelay = 10 * time.Millisecond // 2000 tokens: 20 s if it never stopped
			ts := newTestServer(t, fake)

			ctx, cancel := context.WithCancel(context.Background())
			if stream {
				resp := ts.stream(t, ctx, "/v1/chat/completions", chatBody("go on", map[string]any{"stream": true}))
				defer resp.Body.Close()
				// Read the role chunk and one token, then hang up.
				br := bufio.NewReader(resp.Body)
				for i := 0; i < 4; i++ {
					if _, err := br.ReadString('\n'); err != nil {
						t.Fatal(err)
					}
				}
			} else {
				// The response only comes at the end, so the request runs on its own goroutine.
				go func() {
					resp, err := sendWithContext(ctx, ts, "/v1/chat/completions", chatBody("go on", nil))
					if err == nil {
						resp.Body.Close()
					}
				}()
				waitFor(t, "generation to start", func() bool { return fake.Counters().Running == 1 })
				time.Sleep(30 * time.Millisecond)
			}
			cancel()
			hungUp := time.Now()
			waitFor(t, "the engine to stop", func() bool { c := fake.Counters(); return c.Running == 0 && c.BusySlots == 0 })
			if d := time.Since(hungUp); d > time.Second {
				t.Fatalf("generation stopped %v after the client left; want within a token", d)
			}
			if c := fake.Counters(); c.Cancelled != 1 || c.Completed != 0 {
				t.Fatalf("counters %+v: want one cancelled generation", c)
			}
			// The only slot is free again: the next request runs at once.
			fake.Reply = nil
			fake.TokenDelay = 0
			r2, body := ts.do(t, "POST", "/v1/chat/completions", chatBody("next", nil))
			if r2.StatusCode != 200 {
				t.Fatalf("next request: %d %s", r2.StatusCode, body)
			}
			_, metrics := ts.do(t, "GET", "/metrics", nil)
			if !strings.Contains(string(metrics), "expertsniper_generations_cancelled_total 1\n") {
				t.Fatalf("cancellation not counted:\n%s", metrics)
			}
		})
	}
}

func TestHandlerPanicIsRecoveredAndTheServerGoesOn(t *testing.T) {
	fake := fakeengine.New(1, 4096)
	fake.Reply = func(prompt string) string {
		if strings.Contains(prompt, "boom") {
			panic("scripted failure")
		}
		return "fine"
	}
	ts := newTestServer(t, fake)
	resp, body := ts.do(t, "POST", "/v1/chat/completions", chatBody("boom", nil))
	e := expectError(t, resp, body, 500, "server_error")
	if !strings.Contains(e["message"].(string), "scripted failure") {
		t.Fatalf("message %q", e["message"])
	}
	waitFor(t, "the slot to be freed", func() bool { return fake.Counters().BusySlots == 0 })
	resp, body = ts.do(t, "POST", "/v1/chat/completions", chatBody("ok", nil))
	if resp.StatusCode != 200 || !strings.Contains(string(body), `"content":"fine"`) {
		t.Fatalf("after the panic: %d %s", resp.StatusCode, body)
	}
	_, metrics := ts.do(t, "GET", "/metrics", nil)
	if !strings.Contains(string(metrics), "expertsniper_handler_panics_total 1\n") {
		t.Fatalf("panic not counted:\n%s", metrics)
	}
}

func TestRequestsBeyondTheSlotsWaitInTheQueue(t *testing.T) {
	fake := fakeengine.New(2, 4096)
	fake.TokenDelay = 3 * time.Millisecond
	ts := newTestServer(t, fake)
	const clients = 6
	var wg sync.WaitGroup
	errs := make(chan error, clients)
	sawDeferred := make(chan bool, 1)
	stop := make(chan struct{})
	go func() {
		for {
			select {
			case <-stop:
				return
			default:
			}
			resp, err := ts.Client().Get(ts.URL + "/metrics")
			if err == nil {
				body, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if strings.Contains(string(body), "llamacpp:requests_deferred 4\n") {
					select {
					case sawDeferred <- true:
					default:
					}
				}
			}
			time.Sleep(2 * time.Millisecond)
		}
	}()
	for i := 0; i < clients; i++ {
		wg.Add(1)
		go func(i int) {
			defer wg.Done()
			resp, body := ts.do(t, "POST", "/v1/chat/completions", chatBody(fmt.Sprintf("client %d", i), nil))
			if resp.StatusCode != 200 || !strings.Contains(string(body), fmt.Sprintf("You said: client %d.", i)) {
				errs <- fmt.Errorf("client %d: %d %s", i, resp.StatusCode, body)
			}
		}(i)
	}
	wg.Wait()
	close(stop)
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	if c := fake.Counters(); c.MaxRunning != 2 || c.Completed != clients {
		t.Fatalf("counters %+v: want at most 2 at once (-np 2) and all %d done", c, clients)
	}
	select {
	case <-sawDeferred:
	default:
		t.Fatalf("never saw 4 requests deferred in /metrics")
	}
}

func TestSlotChoicePrefersTheCachedPrefix(t *testing.T) {
	fake := fakeengine.New(2, 4096)
	ts := newTestServer(t, fake)
	long := strings.Repeat("shared document text. ", 20)
	ts.do(t, "POST", "/completion", map[string]any{"prompt": long + "Q1", "n_predict": 2, "id_slot": 1})
	ts.do(t, "POST", "/completion", map[string]any{"prompt": "unrelated", "n_predict": 2, "id_slot": 0})
	resp, body := ts.do(t, "POST", "/completion", map[string]any{"prompt": long + "Q2", "n_predict": 2})
	v := decode[map[string]any](t, body)
	if resp.Header.Get("X-Slot-Id") != "1" || v["id_slot"].(float64) != 1 || v["tokens_cached"].(float64) < float64(len(long)) {
		t.Fatalf("want slot 1 with the prefix cached; got slot %s: %s", resp.Header.Get("X-Slot-Id"), body)
	}
}

func TestSavedContextsSaveListResumeLoadDelete(t *testing.T) {
	fake := fakeengine.New(2, 1<<16)
	dir := t.TempDir()
	ts := newTestServer(t, fake, func(c *Config) { c.ContextDir = dir })
	doc := "<|im_start|>system\n" + strings.Repeat("A long manual. ", 100) + "<|im_end|>\n"

	resp, body := ts.do(t, "POST", "/v1/context/save", map[string]any{"name": "manual", "prompt": doc})
	if resp.StatusCode != 200 || decode[map[string]any](t, body)["saved"].(map[string]any)["tokens"].(float64) != float64(len(doc)) {
		t.Fatalf("save: %d %s", resp.StatusCode, body)
	}
	_, body = ts.do(t, "GET", "/v1/context/list", nil)
	list := decode[struct{ Data []map[string]any }](t, body).Data
	if len(list) != 1 || list[0]["name"] != "manual" || list[0]["model"] != "fake-moe.gguf" {
		t.Fatalf("list: %s", body)
	}

	// Both slots now hold other things, so only the saved context can supply the prefix.
	ts.do(t, "POST", "/completion", map[string]any{"prompt": "other 0", "n_predict": 1, "id_slot": 0})
	ts.do(t, "POST", "/completion", map[string]any{"prompt": "other 1", "n_predict": 1, "id_slot": 1})
	chat := map[string]any{"messages": []map[string]string{
		{"role": "system", "content": strings.Repeat("A long manual. ", 100)},
		{"role": "user", "content": "what does it say?"}}, "max_tokens": 3}
	resp, body = ts.do(t, "POST", "/v1/chat/completions", chat)
	v := decode[map[string]any](t, body)
	cached := v["timings"].(map[string]any)["cache_n"].(float64)
	if resp.StatusCode != 200 || resp.Header.Get("X-Context-Resumed") != "manual" || cached != float64(len(doc)) {
		t.Fatalf("resume: %d header %q cache_n %v: %s", resp.StatusCode, resp.Header.Get("X-Context-Resumed"), cached, body)
	}

	// A new server on the same directory (a restart) still has it.
	ts2 := newTestServer(t, fakeengine.New(1, 1<<16), func(c *Config) { c.ContextDir = dir })
	resp, body = ts2.do(t, "POST", "/v1/context/load", map[string]any{"name": "manual"})
	if resp.StatusCode != 200 || decode[map[string]any](t, body)["tokens"].(float64) != float64(len(doc)) {
		t.Fatalf("load after restart: %d %s", resp.StatusCode, body)
	}

	for _, bad := range []string{"../escape", ".hidden", "a/b", "", strings.Repeat("x", 65), "sp ace"} {
		resp, body = ts.do(t, "POST", "/v1/context/save", map[string]any{"name": bad, "prompt": "x"})
		expectError(t, resp, body, 400, "invalid_request_error")
	}
	resp, body = ts.do(t, "POST", "/v1/context/load", map[string]any{"name": "nope"})
	expectError(t, resp, body, 404, "not_found_error")
	resp, body = ts.do(t, "POST", "/v1/context/save", map[string]any{"name": "big", "prompt": strings.Repeat("x", 1<<16+1)})
	expectError(t, resp, body, 400, "exceed_context_size_error")

	resp, body = ts.do(t, "POST", "/v1/context/delete", map[string]any{"name": "manual"})
	if resp.StatusCode != 200 {
		t.Fatalf("delete: %d %s", resp.StatusCode, body)
	}
	resp, body = ts.do(t, "POST", "/v1/context/delete", map[string]any{"name": "manual"})
	expectError(t, resp, body, 404, "not_found_error")
	_, body = ts.do(t, "GET", "/v1/context/list", nil)
	if len(decode[struct{ Data []any }](t, body).Data) != 0 {
		t.Fatalf("list after delete: %s", body)
	}
}

func TestShutdownStopsRunningGenerations(t *testing.T) {
	fake := fakeengine.New(1, 1<<20)
	fake.Reply = longReply
	fake.TokenDelay = 10 * time.Millisecond
	_, base, stop := serveOnLoopback(t, fake)
	body := strings.NewReader(`{"messages":[{"role":"user","content":"x"}],"stream":true}`)
	resp, err := http.Post(base+"/v1/chat/completions", "application/json", body)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	waitFor(t, "generation to start", func() bool { return fake.Counters().Running == 1 })
	stop()
	if c := fake.Counters(); c.Running != 0 || c.Cancelled != 1 {
		t.Fatalf("counters after shutdown %+v", c)
	}
}

func sendWithContext(ctx context.Context, ts *testServer, path string, body any) (*http.Response, error) {
	data, _ := json.Marshal(body)
	req, err := http.NewRequestWithContext(ctx, "POST", ts.URL+path, bytes.NewReader(data))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	return ts.Client().Do(req)
}

func TestSavedContextFromMessagesResumesChats(t *testing.T) {
	fake := fakeengine.New(1, 1<<16)
	ts := newTestServer(t, fake)
	system := []map[string]string{{"role": "system", "content": strings.Repeat("Policy text. ", 50)}}
	resp, body := ts.do(t, "POST", "/v1/context/save", map[string]any{"name": "policy", "messages": system})
	if resp.StatusCode != 200 {
		t.Fatalf("save: %d %s", resp.StatusCode, body)
	}
	ts.do(t, "POST", "/completion", map[string]any{"prompt": "unrelated", "n_predict": 1})
	chat := map[string]any{"messages": append(system, map[string]string{"role": "user", "content": "summarise"}), "max_tokens": 2}
	resp, body = ts.do(t, "POST", "/v1/chat/completions", chat)
	if resp.StatusCode != 200 || resp.Header.Get("X-Context-Resumed") != "policy" {
		t.Fatalf("chat did not resume from the saved messages: %d %q %s", resp.StatusCode, resp.Header.Get("X-Context-Resumed"), body)
	}
	resp, body = ts.do(t, "POST", "/v1/context/save", map[string]any{"name": "both", "prompt": "x", "messages": system})
	expectError(t, resp, body, 400, "invalid_request_error")
}

func TestAnEngineErrorMidStreamEndsTheStreamWithAnErrorEvent(t *testing.T) {
	fake := fakeengine.New(1, 4096)
	fake.FailAfter = 3
	fake.FailErr = errors.New("read expert 7 of layer 2 at offset 123456: input/output error")
	ts := newTestServer(t, fake)
	resp := ts.stream(t, context.Background(), "/v1/chat/completions", chatBody("x", map[string]any{"stream": true}))
	defer resp.Body.Close()
	events := sseEvents(t, resp.Body)
	last := events[len(events)-1]
	if len(events) != 5 || !strings.Contains(last, `"error"`) || !strings.Contains(last, "offset 123456") {
		t.Fatalf("events %q: want the role, 3 tokens and an error event naming the failure, and no [DONE]", events)
	}
	r, body := ts.do(t, "POST", "/v1/chat/completions", chatBody("x", nil))
	e := expectError(t, r, body, 500, "server_error")
	if !strings.Contains(e["message"].(string), "input/output error") {
		t.Fatalf("message %q", e["message"])
	}
	if c := fake.Counters(); c.BusySlots != 0 {
		t.Fatalf("the slot was not freed: %+v", c)
	}
}
