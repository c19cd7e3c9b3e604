package server

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/expertsniper/expertsniper/server/internal/fakeengine"
)

// The engine owns the slots and the queue; these tests check that the server shows what it reports
// and that requests get the engine's semantics end to end (FIFO, pinned slots, prefix reuse), with
// the fake engine following engine/local's contract.

// answer is one finished request: its status and the slot the server said it ran in.
type answer struct {
	status int
	slot   string
	body   string
}

// postAsync posts a /completion in the background.
func postAsync(ts *testServer, body map[string]any) chan answer {
	ch := make(chan answer, 1)
	go func() {
		data, _ := json.Marshal(body)
		resp, err := ts.Client().Post(ts.URL+"/completion", "application/json", bytes.NewReader(data))
		if err != nil {
			ch <- answer{status: -1, body: err.Error()}
			return
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		ch <- answer{status: resp.StatusCode, slot: resp.Header.Get("X-Slot-Id"), body: string(b)}
	}()
	return ch
}

func await(t *testing.T, what string, ch chan answer) answer {
	t.Helper()
	select {
	case a := <-ch:
		return a
	case <-time.After(20 * time.Second):
		t.Fatalf("timed out waiting for %s", what)
		return answer{}
	}
}

// startLong streams a long answer pinned to slot until cancel is called.
func startLong(t *testing.T, ts *testServer, slot int) (cancel func()) {
	ctx, stop := context.WithCancel(context.Background())
	resp := ts.stream(t, ctx, "/completion", map[string]any{"prompt": "long answer", "stream": true, "id_slot": slot})
	if resp.StatusCode != 200 || resp.Header.Get("X-Slot-Id") != string(rune('0'+slot)) {
		t.Fatalf("long request on slot %d: %d, X-Slot-Id %q", slot, resp.StatusCode, resp.Header.Get("X-Slot-Id"))
	}
	return func() { stop(); resp.Body.Close() }
}

// slowFake answers prompts starting with "long" with a long answer and others with short, one token
// every 2 ms; seen, when set, is told every prompt in the order the fake starts answering them.
func slowFake(slots int, short string, seen func(prompt string)) *fakeengine.Engine {
	fake := fakeengine.New(slots, 4096)
	fake.TokenDelay = 2 * time.Millisecond
	fake.Reply = func(p string) string {
		if seen != nil {
			seen(p)
		}
		if strings.HasPrefix(p, "long") {
			return longReply(p)
		}
		return short
	}
	return fake
}

func queued(fake *fakeengine.Engine) func() bool {
	return func() bool { return fake.Slots().Queued > 0 }
}

func TestSlotsMetricsAndStatsShowTheEnginesSlotsAndQueue(t *testing.T) {
	fake := slowFake(1, "short answer", nil)
	ts := newTestServer(t, fake)
	stopLong := startLong(t, ts, 0)
	defer stopLong()
	slotsNow := func() []map[string]any {
		_, body := ts.do(t, "GET", "/slots", nil)
		return decode[[]map[string]any](t, body)
	}
	waitFor(t, "slot 0 to generate", func() bool {
		s := slotsNow()[0]
		return s["is_processing"] == true && s["next_token"].([]any)[0].(map[string]any)["n_decoded"].(float64) > 0
	})
	if s := slotsNow()[0]; s["params"].(map[string]any)["stream"] != true {
		t.Fatalf("a streamed request's slot shows params.stream %v", s["params"].(map[string]any)["stream"])
	}
	next := postAsync(ts, map[string]any{"prompt": "next", "n_predict": 2})
	waitFor(t, "the second request to queue", queued(fake))
	_, metrics := ts.do(t, "GET", "/metrics", nil)
	if !strings.Contains(string(metrics), "llamacpp:requests_deferred 1\n") || !strings.Contains(string(metrics), "llamacpp:requests_processing 1\n") {
		t.Fatalf("metrics do not show one running and one deferred:\n%s", metrics)
	}
	_, body := ts.do(t, "GET", "/stats", nil)
	st := decode[map[string]any](t, body)
	if st["queue"].(float64) != 1 || st["slots_busy"].(float64) != 1 || len(st["running"].([]any)) != 1 {
		t.Fatalf("stats: %s", body)
	}
	stopLong()
	if a := await(t, "the queued request", next); a.status != 200 || a.slot != "0" {
		t.Fatalf("queued request: %+v", a)
	}
	s := slotsNow()[0]
	// n_prompt_tokens is what the cache holds (BOS, "next" and "short answer"); the second task's
	// prompt, "next", had nothing in common with "long answer".
	if s["is_processing"] != false || s["id_task"].(float64) != 2 || s["n_prompt_tokens"].(float64) != float64(1+len("nextshort answer")) ||
		s["n_prompt_tokens_processed"].(float64) != 4 || s["n_prompt_tokens_cache"].(float64) != 0 || s["params"].(map[string]any)["n_predict"].(float64) != 2 ||
		s["params"].(map[string]any)["stream"] != false {
		t.Fatalf("slot after the second request: %v", s)
	}
}

func TestQueuedRequestsRunInArrivalOrder(t *testing.T) {
	var mu sync.Mutex
	var order []string
	fake := slowFake(1, "ok", func(p string) {
		mu.Lock()
		order = append(order, p)
		mu.Unlock()
	})
	ts := newTestServer(t, fake)
	stopLong := startLong(t, ts, 0)
	defer stopLong()
	var answers []chan answer
	for i, p := range []string{"first", "second", "third"} {
		answers = append(answers, postAsync(ts, map[string]any{"prompt": p, "n_predict": 1}))
		waitFor(t, p+" to queue", func() bool { return fake.Slots().Queued == i+1 })
	}
	stopLong()
	for _, ch := range answers {
		if a := await(t, "a queued request", ch); a.status != 200 {
			t.Fatalf("queued request: %+v", a)
		}
	}
	mu.Lock()
	defer mu.Unlock()
	if strings.Join(order, ",") != "long answer,first,second,third" {
		t.Fatalf("requests ran in the order %q", order)
	}
}

// A request waiting for its pinned slot does not hold up a later one that can take another.
func TestAPinnedRequestWaitsWithoutHoldingUpOthers(t *testing.T) {
	fake := slowFake(2, "ok", nil)
	ts := newTestServer(t, fake)
	stop0 := startLong(t, ts, 0)
	defer stop0()
	stop1 := startLong(t, ts, 1)
	defer stop1()
	pinned := postAsync(ts, map[string]any{"prompt": "for slot 1", "n_predict": 1, "id_slot": 1})
	waitFor(t, "the pinned request to queue", func() bool { return fake.Slots().Queued == 1 })
	anyone := postAsync(ts, map[string]any{"prompt": "any slot", "n_predict": 1})
	waitFor(t, "the second request to queue", func() bool { return fake.Slots().Queued == 2 })
	stop0()
	if a := await(t, "the request for any slot", anyone); a.status != 200 || a.slot != "0" {
		t.Fatalf("the request for any slot: %+v", a)
	}
	if q := fake.Slots().Queued; q != 1 {
		t.Fatalf("%d queued, want the pinned request still waiting", q)
	}
	stop1()
	if a := await(t, "the pinned request", pinned); a.status != 200 || a.slot != "1" {
		t.Fatalf("the pinned request: %+v", a)
	}
}

func TestAClientThatGivesUpLeavesTheQueue(t *testing.T) {
	fake := slowFake(1, "", nil)
	fake.Reply = longReply
	ts := newTestServer(t, fake)
	stopLong := startLong(t, ts, 0)
	defer stopLong()
	ctx, cancel := context.WithCancel(context.Background())
	resp := make(chan error, 1)
	go func() {
		req, _ := http.NewRequestWithContext(ctx, "POST", ts.URL+"/completion", strings.NewReader(`{"prompt":"waits","n_predict":1}`))
		req.Header.Set("Content-Type", "application/json")
		r, err := ts.Client().Do(req)
		if err == nil {
			r.Body.Close()
		}
		resp <- err
	}()
	waitFor(t, "the request to queue", queued(fake))
	cancel()
	<-resp
	waitFor(t, "the queue to empty", func() bool { return fake.Slots().Queued == 0 })
	stopLong()
	waitFor(t, "the slot to be free", func() bool { return fake.Counters().BusySlots == 0 })
	if c := fake.Counters(); c.Completed != 0 || c.Cancelled != 1 {
		t.Fatalf("counters %+v: the gone request must never run", c)
	}
}

func TestSlotEraseEmptiesTheSlot(t *testing.T) {
	fake := fakeengine.New(2, 4096)
	ts := newTestServer(t, fake)
	ts.do(t, "POST", "/completion", map[string]any{"prompt": "remember this", "n_predict": 2, "id_slot": 1})
	held := len(fake.SlotKV(1))
	resp, body := ts.do(t, "POST", "/slots/1?action=erase", nil)
	if v := decode[map[string]any](t, body); resp.StatusCode != 200 || v["id_slot"].(float64) != 1 || v["n_erased"].(float64) != float64(held) || held == 0 {
		t.Fatalf("erase: %d %s (slot held %d)", resp.StatusCode, body, held)
	}
	if fake.SlotKV(1) != "" {
		t.Fatalf("slot 1 still holds %q", fake.SlotKV(1))
	}
	resp, body = ts.do(t, "POST", "/slots/1?action=save", map[string]any{"filename": "empty"})
	if e := expectError(t, resp, body, 400, "invalid_request_error"); !strings.Contains(e["message"].(string), "holds nothing") {
		t.Fatalf("saving an empty slot: %s", body)
	}
	resp, body = ts.do(t, "POST", "/slots/2?action=erase", nil)
	expectError(t, resp, body, 400, "invalid_request_error")
}

// A saved context is loaded only when no slot already holds more of the prompt.
func TestASavedContextIsNotLoadedOverASlotThatHoldsIt(t *testing.T) {
	fake := fakeengine.New(2, 1<<16)
	ts := newTestServer(t, fake)
	doc := strings.Repeat("A long manual. ", 50)
	if resp, body := ts.do(t, "POST", "/v1/context/save", map[string]any{"name": "manual", "prompt": doc}); resp.StatusCode != 200 {
		t.Fatalf("save: %d %s", resp.StatusCode, body)
	}
	// Saving evaluated the document in a slot: a question about it finds it there.
	resp, body := ts.do(t, "POST", "/completion", map[string]any{"prompt": doc + "Q1", "n_predict": 1})
	v := decode[map[string]any](t, body)
	if resp.StatusCode != 200 || resp.Header.Get("X-Context-Resumed") != "" || v["tokens_cached"].(float64) < float64(len(doc)) {
		t.Fatalf("with the document in a slot: %d, resumed %q: %s", resp.StatusCode, resp.Header.Get("X-Context-Resumed"), body)
	}
	// Once both slots hold other things, the saved context supplies it.
	ts.do(t, "POST", "/slots/0?action=erase", nil)
	ts.do(t, "POST", "/slots/1?action=erase", nil)
	resp, body = ts.do(t, "POST", "/completion", map[string]any{"prompt": doc + "Q2", "n_predict": 1})
	v = decode[map[string]any](t, body)
	if resp.StatusCode != 200 || resp.Header.Get("X-Context-Resumed") != "manual" || v["tokens_cached"].(float64) < float64(len(doc)) ||
		resp.Header.Get("X-Slot-Id") != fmt.Sprint(v["id_slot"]) {
		t.Fatalf("after erasing the slots: %d, resumed %q, slot %q: %s", resp.StatusCode, resp.Header.Get("X-Context-Resumed"), resp.Header.Get("X-Slot-Id"), body)
	}
}
