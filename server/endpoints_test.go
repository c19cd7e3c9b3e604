package server

import (
	"context"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/expertsniper/expertsniper/server/internal/fakeengine"
)

func greedy() map[string]any { return map[string]any{"temperature": 0} }

func chatBody(content string, extra map[string]any) map[string]any {
	b := map[string]any{"model": "m", "messages": []map[string]any{{"role": "user", "content": content}}, "temperature": 0}
	for k, v := range extra {
		b[k] = v
	}
	return b
}

func TestHealthIs503WhileLoadingAndOKAfter(t *testing.T) {
	ts := newTestServer(t, nil)
	resp, body := ts.do(t, "GET", "/health", nil)
	e := expectError(t, resp, body, 503, "unavailable_error")
	if e["message"] != "Loading model" {
		t.Fatalf("message %q, want llama-server's \"Loading model\"", e["message"])
	}
	resp, body = ts.do(t, "POST", "/v1/chat/completions", chatBody("hi", nil))
	expectError(t, resp, body, 503, "unavailable_error")

	if err := ts.srv.SetEngine(fakeengine.New(1, 512)); err != nil {
		t.Fatal(err)
	}
	resp, body = ts.do(t, "GET", "/health", nil)
	if resp.StatusCode != 200 || strings.TrimSpace(string(body)) != `{"status":"ok"}` {
		t.Fatalf("health after load: %d %s", resp.StatusCode, body)
	}
}

func TestModelsListsTheLoadedModel(t *testing.T) {
	ts := newTestServer(t, fakeengine.New(1, 512))
	resp, body := ts.do(t, "GET", "/v1/models", nil)
	if resp.StatusCode != 200 {
		t.Fatalf("status %d: %s", resp.StatusCode, body)
	}
	v := decode[map[string]any](t, body)
	data := v["data"].([]any)
	if v["object"] != "list" || len(data) != 1 || data[0].(map[string]any)["id"] != "fake-moe.gguf" ||
		data[0].(map[string]any)["object"] != "model" {
		t.Fatalf("unexpected models %s", body)
	}
}

func TestChatNonStreamingReturnsTheWholeAnswerAndUsage(t *testing.T) {
	ts := newTestServer(t, fakeengine.New(1, 4096))
	resp, body := ts.do(t, "POST", "/v1/chat/completions", chatBody("ping", nil))
	if resp.StatusCode != 200 {
		t.Fatalf("status %d: %s", resp.StatusCode, body)
	}
	v := decode[map[string]any](t, body)
	choice := v["choices"].([]any)[0].(map[string]any)
	msg := choice["message"].(map[string]any)
	want := fakeengine.DefaultReply("<|im_start|>user\nping<|im_end|>\n<|im_start|>assistant\n")
	if msg["role"] != "assistant" || msg["content"] != want {
		t.Fatalf("message %v, want %q", msg, want)
	}
	if choice["finish_reason"] != "stop" || v["object"] != "chat.completion" || !strings.HasPrefix(v["id"].(string), "chatcmpl-") {
		t.Fatalf("unexpected response %s", body)
	}
	usage := v["usage"].(map[string]any)
	prompt := len("<|im_start|>user\nping<|im_end|>\n<|im_start|>assistant\n")
	if int(usage["prompt_tokens"].(float64)) != prompt || usage["completion_tokens"].(float64) < 5 ||
		usage["total_tokens"].(float64) != usage["prompt_tokens"].(float64)+usage["completion_tokens"].(float64) {
		t.Fatalf("usage %v, want prompt_tokens %d", usage, prompt)
	}
	if _, ok := v["timings"].(map[string]any)["predicted_per_second"]; !ok {
		t.Fatalf("no timings in %s", body)
	}
}

func TestChatStreamingSendsRoleDeltasFinishUsageAndDone(t *testing.T) {
	ts := newTestServer(t, fakeengine.New(1, 4096))
	resp := ts.stream(t, context.Background(), "/v1/chat/completions", chatBody("stream me", map[string]any{"stream": true}))
	defer resp.Body.Close()
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "text/event-stream" {
		t.Fatalf("status %d, Content-Type %q", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	events := sseEvents(t, resp.Body)
	if len(events) < 4 || events[len(events)-1] != "[DONE]" {
		t.Fatalf("events %q: want role, deltas, finish, [DONE]", events)
	}
	if !strings.Contains(events[0], `"delta":{"role":"assistant","content":null}`) {
		t.Fatalf("first event %s, want the role delta", events[0])
	}
	var text strings.Builder
	var id string
	for i, ev := range events[:len(events)-1] {
		var c struct {
			ID      string `json:"id"`
			Object  string `json:"object"`
			Choices []struct {
				Delta        map[string]any `json:"delta"`
				FinishReason *string        `json:"finish_reason"`
			} `json:"choices"`
			Usage *struct {
				CompletionTokens int `json:"completion_tokens"`
			} `json:"usage"`
		}
		if err := json.Unmarshal([]byte(ev), &c); err != nil {
			t.Fatalf("event %d %q: %v", i, ev, err)
		}
		if c.Object != "chat.completion.chunk" || (id != "" && c.ID != id) {
			t.Fatalf("event %d: object %q id %q (first id %q)", i, c.Object, c.ID, id)
		}
		id = c.ID
		last := i == len(events)-2
		if last {
			if c.Choices[0].FinishReason == nil || *c.Choices[0].FinishReason != "stop" || c.Usage == nil || c.Usage.CompletionTokens == 0 {
				t.Fatalf("last chunk %s: want finish_reason stop and usage", ev)
			}
			if len(c.Choices[0].Delta) != 0 {
				t.Fatalf("last chunk's delta %v, want {}", c.Choices[0].Delta)
			}
			continue
		}
		if c.Choices[0].FinishReason != nil {
			t.Fatalf("event %d has a finish_reason before the end: %s", i, ev)
		}
		if s, ok := c.Choices[0].Delta["content"].(string); ok {
			text.WriteString(s)
		}
	}
	want := fakeengine.DefaultReply("<|im_start|>user\nstream me<|im_end|>\n")
	if text.String() != want {
		t.Fatalf("streamed text %q, want %q", text.String(), want)
	}
}

func TestChatStreamIncludeUsageAddsAUsageOnlyChunk(t *testing.T) {
	ts := newTestServer(t, fakeengine.New(1, 4096))
	resp := ts.stream(t, context.Background(), "/v1/chat/completions",
		chatBody("x", map[string]any{"stream": true, "stream_options": map[string]any{"include_usage": true}}))
	defer resp.Body.Close()
	events := sseEvents(t, resp.Body)
	usageOnly := events[len(events)-2]
	v := decode[map[string]any](t, []byte(usageOnly))
	if len(v["choices"].([]any)) != 0 || v["usage"] == nil {
		t.Fatalf("second to last event %s, want choices [] and usage", usageOnly)
	}
	// Usage comes once: clients that add up the chunks' usage must not count it twice.
	withUsage := 0
	for _, ev := range events[:len(events)-1] {
		if decode[map[string]any](t, []byte(ev))["usage"] != nil {
			withUsage++
		}
	}
	if withUsage != 1 {
		t.Fatalf("%d chunks carry usage, want 1", withUsage)
	}
	// The legacy completions stream too.
	resp = ts.stream(t, context.Background(), "/v1/completions",
		map[string]any{"prompt": "x", "stream": true, "stream_options": map[string]any{"include_usage": true}})
	defer resp.Body.Close()
	events = sseEvents(t, resp.Body)
	withUsage = 0
	for _, ev := range events[:len(events)-1] {
		if decode[map[string]any](t, []byte(ev))["usage"] != nil {
			withUsage++
		}
	}
	if withUsage != 1 || decode[map[string]any](t, []byte(events[len(events)-2]))["usage"] == nil {
		t.Fatalf("completions stream: %d chunks carry usage, want the last one only", withUsage)
	}
}

func TestStopStringsAndMaxTokensEndGeneration(t *testing.T) {
	ts := newTestServer(t, fakeengine.New(1, 4096))
	resp, body := ts.do(t, "POST", "/v1/chat/completions", chatBody("x", map[string]any{"stop": "fake"}))
	v := decode[map[string]any](t, body)
	choice := v["choices"].([]any)[0].(map[string]any)
	content := choice["message"].(map[string]any)["content"].(string)
	if resp.StatusCode != 200 || choice["finish_reason"] != "stop" || strings.Contains(content, "fake") || !strings.HasSuffix(content, "**") {
		t.Fatalf("stop string: %d %s", resp.StatusCode, body)
	}
	_, body = ts.do(t, "POST", "/v1/chat/completions", chatBody("x", map[string]any{"max_tokens": 3}))
	v = decode[map[string]any](t, body)
	choice = v["choices"].([]any)[0].(map[string]any)
	if choice["finish_reason"] != "length" || v["usage"].(map[string]any)["completion_tokens"].(float64) != 3 {
		t.Fatalf("max_tokens 3: %s", body)
	}
}

func TestTextCompletionsPlainStreamedAndEcho(t *testing.T) {
	ts := newTestServer(t, fakeengine.New(1, 4096))
	resp, body := ts.do(t, "POST", "/v1/completions", map[string]any{"prompt": "Once upon", "max_tokens": 4, "temperature": 0})
	v := decode[map[string]any](t, body)
	choice := v["choices"].([]any)[0].(map[string]any)
	if resp.StatusCode != 200 || v["object"] != "text_completion" || choice["text"] != "Hello! You said: Once" ||
		choice["finish_reason"] != "length" {
		t.Fatalf("completion: %d %s", resp.StatusCode, body)
	}
	_, body = ts.do(t, "POST", "/v1/completions", map[string]any{"prompt": []string{"Once upon"}, "max_tokens": 2, "echo": true})
	choice = decode[map[string]any](t, body)["choices"].([]any)[0].(map[string]any)
	if choice["text"] != "Once uponHello! You" {
		t.Fatalf("echo: %s", body)
	}
	sresp := ts.stream(t, context.Background(), "/v1/completions", map[string]any{"prompt": "Once upon", "max_tokens": 4, "stream": true})
	defer sresp.Body.Close()
	events := sseEvents(t, sresp.Body)
	var text strings.Builder
	for _, ev := range events[:len(events)-1] {
		c := decode[map[string]any](t, []byte(ev))
		text.WriteString(c["choices"].([]any)[0].(map[string]any)["text"].(string))
	}
	last := decode[map[string]any](t, []byte(events[len(events)-2]))
	if events[len(events)-1] != "[DONE]" || text.String() != "Hello! You said: Once" ||
		last["choices"].([]any)[0].(map[string]any)["finish_reason"] != "length" || last["usage"] == nil {
		t.Fatalf("streamed completion %q: %q", text.String(), events)
	}
}

func TestNativeCompletionPlainStreamedAndTokenPrompt(t *testing.T) {
	ts := newTestServer(t, fakeengine.New(2, 4096))
	resp, body := ts.do(t, "POST", "/completion", map[string]any{"prompt": "abc", "n_predict": 2, "temperature": 0})
	v := decode[map[string]any](t, body)
	if resp.StatusCode != 200 || v["content"] != "Hello! You" || v["stop"] != true || v["stop_type"] != "limit" ||
		v["tokens_predicted"].(float64) != 2 || v["tokens_evaluated"].(float64) != 3 || v["generation_settings"] == nil {
		t.Fatalf("native completion: %d %s", resp.StatusCode, body)
	}
	// A token-id prompt is detokenized: "abc" as bytes.
	_, body2 := ts.do(t, "POST", "/completion", map[string]any{"prompt": []int{97, 98, 99}, "n_predict": 2})
	if decode[map[string]any](t, body2)["content"] != "Hello! You" {
		t.Fatalf("token prompt: %s", body2)
	}
	resp, body = ts.do(t, "POST", "/completion", map[string]any{"prompt": []int{99999}})
	expectError(t, resp, body, 400, "invalid_request_error")

	sresp := ts.stream(t, context.Background(), "/completion", map[string]any{"prompt": "abc", "n_predict": 3, "stream": true})
	defer sresp.Body.Close()
	events := sseEvents(t, sresp.Body)
	if len(events) != 4 {
		t.Fatalf("want 3 token events and the final object, got %q", events)
	}
	var text strings.Builder
	for i, ev := range events {
		c := decode[map[string]any](t, []byte(ev))
		text.WriteString(c["content"].(string))
		if (i == len(events)-1) != (c["stop"] == true) {
			t.Fatalf("event %d %s: stop must be true exactly on the last", i, ev)
		}
	}
	if text.String() != "Hello! You said:" {
		t.Fatalf("streamed %q", text.String())
	}
}

func TestTokenizeDetokenizeAndApplyTemplate(t *testing.T) {
	ts := newTestServer(t, fakeengine.New(1, 512))
	_, body := ts.do(t, "POST", "/tokenize", map[string]any{"content": "hi", "add_special": true})
	if strings.TrimSpace(string(body)) != `{"tokens":[256,104,105]}` {
		t.Fatalf("tokenize: %s", body)
	}
	_, body = ts.do(t, "POST", "/tokenize", map[string]any{"content": "hi", "with_pieces": true})
	if strings.TrimSpace(string(body)) != `{"tokens":[{"id":104,"piece":"h"},{"id":105,"piece":"i"}]}` {
		t.Fatalf("tokenize with pieces: %s", body)
	}
	_, body = ts.do(t, "POST", "/detokenize", map[string]any{"tokens": []int{104, 105}})
	if strings.TrimSpace(string(body)) != `{"content":"hi"}` {
		t.Fatalf("detokenize: %s", body)
	}
	_, body = ts.do(t, "POST", "/apply-template", map[string]any{"messages": []map[string]string{{"role": "user", "content": "hi"}}})
	if decode[map[string]string](t, body)["prompt"] != "<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n" {
		t.Fatalf("apply-template: %s", body)
	}
	resp, body := ts.do(t, "POST", "/tokenize", map[string]any{})
	expectError(t, resp, body, 400, "invalid_request_error")
}

func TestPropsAndSlots(t *testing.T) {
	ts := newTestServer(t, fakeengine.New(3, 1024))
	_, body := ts.do(t, "GET", "/props", nil)
	props := decode[map[string]any](t, body)
	if props["total_slots"].(float64) != 3 || props["default_generation_settings"].(map[string]any)["n_ctx"].(float64) != 1024 {
		t.Fatalf("props: %s", body)
	}
	ts.do(t, "POST", "/completion", map[string]any{"prompt": "abc", "n_predict": 2})
	_, body = ts.do(t, "GET", "/slots", nil)
	slots := decode[[]map[string]any](t, body)
	if len(slots) != 3 || slots[0]["n_ctx"].(float64) != 1024 || slots[0]["is_processing"] != false {
		t.Fatalf("slots: %s", body)
	}
}

func TestSlotSaveAndRestore(t *testing.T) {
	fake := fakeengine.New(2, 4096)
	ts := newTestServer(t, fake)
	ts.do(t, "POST", "/completion", map[string]any{"prompt": "a long shared prefix", "n_predict": 2, "id_slot": 0})
	resp, body := ts.do(t, "POST", "/slots/0?action=save", map[string]any{"filename": "s0.bin"})
	if resp.StatusCode != 200 || decode[map[string]any](t, body)["n_saved"].(float64) == 0 {
		t.Fatalf("save: %d %s", resp.StatusCode, body)
	}
	resp, body = ts.do(t, "POST", "/slots/1?action=restore", map[string]any{"filename": "s0.bin"})
	if resp.StatusCode != 200 || fake.SlotKV(1) != fake.SlotKV(0) {
		t.Fatalf("restore: %d %s; slot 1 holds %q", resp.StatusCode, body, fake.SlotKV(1))
	}
	resp, body = ts.do(t, "POST", "/slots/1?action=restore", map[string]any{"filename": "../etc/passwd"})
	expectError(t, resp, body, 400, "invalid_request_error")
	resp, body = ts.do(t, "POST", "/slots/1?action=restore", map[string]any{"filename": "missing.bin"})
	expectError(t, resp, body, 404, "not_found_error")
	resp, body = ts.do(t, "POST", "/slots/7?action=save", map[string]any{"filename": "x"})
	expectError(t, resp, body, 400, "invalid_request_error")
	resp, body = ts.do(t, "POST", "/slots/0?action=frobnicate", map[string]any{"filename": "x"})
	expectError(t, resp, body, 400, "invalid_request_error")
}

func TestEmbeddings501WhenUnsupportedAndVectorsWhenSupported(t *testing.T) {
	fake := fakeengine.New(1, 512)
	fake.Embeddings = true
	ts := newTestServer(t, fake)
	resp, body := ts.do(t, "POST", "/v1/embeddings", map[string]any{"input": "hello"})
	expectError(t, resp, body, 501, "not_supported_error") // not enabled with --embeddings

	ts1 := newTestServer(t, fakeengine.New(1, 512), func(c *Config) { c.Embeddings = true })
	resp, body = ts1.do(t, "POST", "/v1/embeddings", map[string]any{"input": "hello"})
	expectError(t, resp, body, 501, "not_supported_error") // the model has none

	fake2 := fakeengine.New(1, 512)
	fake2.Embeddings = true
	ts2 := newTestServer(t, fake2, func(c *Config) { c.Embeddings = true })
	resp, body = ts2.do(t, "POST", "/v1/embeddings", map[string]any{"input": []string{"a", "b"}})
	v := decode[map[string]any](t, body)
	if resp.StatusCode != 200 || len(v["data"].([]any)) != 2 ||
		len(v["data"].([]any)[1].(map[string]any)["embedding"].([]any)) != 64 {
		t.Fatalf("embeddings: %d %s", resp.StatusCode, body)
	}
}

// TestMetricsAndStatsInStreamMode: a dense model streamed layer by layer reports layers, not experts.
func TestMetricsAndStatsInStreamMode(t *testing.T) {
	fe := fakeengine.New(1, 4096)
	fe.SetMode("stream")
	ts := newTestServer(t, fe)
	ts.do(t, "POST", "/v1/chat/completions", chatBody("count me", map[string]any{"max_tokens": 5}))
	_, body := ts.do(t, "GET", "/metrics", nil)
	text := string(body)
	for _, want := range []string{"expertsniper_layer_cache_hits_total", "expertsniper_layer_cache_misses_total", "expertsniper_layer_read_ahead_total", "expertsniper_layer_cache_budget_bytes"} {
		if !strings.Contains(text, want) {
			t.Fatalf("metrics lack %q:\n%s", want, text)
		}
	}
	if strings.Contains(text, "expertsniper_expert_cache") {
		t.Fatalf("stream mode reports an expert cache:\n%s", text)
	}
	_, body = ts.do(t, "GET", "/stats", nil)
	st := decode[map[string]any](t, body)
	if st["mode"] != "stream" || st["read_ahead"].(float64) <= 0 || st["read_ahead"].(float64) != st["cache_misses"].(float64) {
		t.Fatalf("stats: %s", body)
	}
}

func TestMetricsAndStats(t *testing.T) {
	ts := newTestServer(t, fakeengine.New(1, 4096))
	ts.do(t, "POST", "/v1/chat/completions", chatBody("count me", map[string]any{"max_tokens": 5}))
	resp, body := ts.do(t, "GET", "/metrics", nil)
	text := string(body)
	if resp.StatusCode != 200 || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/plain") {
		t.Fatalf("metrics: %d %s", resp.StatusCode, resp.Header.Get("Content-Type"))
	}
	for _, want := range []string{"llamacpp:tokens_predicted_total 5\n", "# TYPE llamacpp:prompt_tokens_total counter",
		"llamacpp:requests_processing 0\n", "expertsniper_expert_cache_hits_total", "expertsniper_process_rss_bytes"} {
		if !strings.Contains(text, want) {
			t.Fatalf("metrics lack %q:\n%s", want, text)
		}
	}
	_, body = ts.do(t, "GET", "/stats", nil)
	st := decode[map[string]any](t, body)
	if st["generated_tokens"].(float64) != 5 || len(st["layer_expert_activations"].([]any)) != 4 || st["rss_bytes"].(float64) <= 0 {
		t.Fatalf("stats: %s", body)
	}
}

func TestWebPagesAreServedWithTheirAssets(t *testing.T) {
	ts := newTestServer(t, fakeengine.New(1, 512), func(c *Config) { c.APIKey = "k" })
	for _, path := range []string{"/", "/dashboard"} {
		resp, body := ts.do(t, "GET", path, nil)
		if resp.StatusCode != 200 || !strings.Contains(string(body), "<script src=\"/static/") ||
			resp.Header.Get("Content-Security-Policy") == "" {
			t.Fatalf("%s: %d %.200s", path, resp.StatusCode, body)
		}
	}
	for _, asset := range []string{"/static/chat.js", "/static/markdown.js", "/static/dashboard.js", "/static/style.css"} {
		resp, body := ts.do(t, "GET", asset, nil)
		if resp.StatusCode != 200 || len(body) < 100 {
			t.Fatalf("%s: %d (%d bytes)", asset, resp.StatusCode, len(body))
		}
	}
}

func TestRequestsRejectedWithOpenAIErrors(t *testing.T) {
	ts := newTestServer(t, fakeengine.New(1, 64), func(c *Config) { c.MaxBodyBytes = 1024 })
	cases := []struct {
		name, method, path string
		body               any
		status             int
		typ                string
	}{
		{"bad JSON", "POST", "/v1/chat/completions", `{"messages": [`, 400, "invalid_request_error"},
		{"not JSON", "POST", "/v1/chat/completions", `hello`, 400, "invalid_request_error"},
		{"messages not an array", "POST", "/v1/chat/completions", `{"messages":"hi"}`, 400, "invalid_request_error"},
		{"temperature a string", "POST", "/v1/chat/completions", `{"messages":[{"role":"user","content":"x"}],"temperature":"hot"}`, 400, "invalid_request_error"},
		{"stop a number", "POST", "/v1/chat/completions", `{"messages":[{"role":"user","content":"x"}],"stop":5}`, 400, "invalid_request_error"},
		{"content a number", "POST", "/v1/chat/completions", `{"messages":[{"role":"user","content":5}]}`, 400, "invalid_request_error"},
		{"image part", "POST", "/v1/chat/completions", `{"messages":[{"role":"user","content":[{"type":"image_url"}]}]}`, 400, "invalid_request_error"},
		{"no messages", "POST", "/v1/chat/completions", `{"messages":[]}`, 400, "invalid_request_error"},
		{"unknown role", "POST", "/v1/chat/completions", `{"messages":[{"role":"wizard","content":"x"}]}`, 400, "invalid_request_error"},
		{"n=2", "POST", "/v1/chat/completions", `{"messages":[{"role":"user","content":"x"}],"n":2}`, 400, "invalid_request_error"},
		{"max_tokens 0", "POST", "/v1/chat/completions", `{"messages":[{"role":"user","content":"x"}],"max_tokens":0}`, 400, "invalid_request_error"},
		{"top_p 3", "POST", "/v1/chat/completions", `{"messages":[{"role":"user","content":"x"}],"top_p":3}`, 400, "invalid_request_error"},
		{"two prompts", "POST", "/v1/completions", `{"prompt":["a","b"]}`, 400, "invalid_request_error"},
		{"no prompt", "POST", "/completion", `{}`, 400, "invalid_request_error"},
		{"too large", "POST", "/v1/chat/completions", `{"messages":[{"role":"user","content":"` + strings.Repeat("x", 2000) + `"}]}`, 413, "request_too_large"},
		{"context overflow", "POST", "/v1/completions", `{"prompt":"` + strings.Repeat("y", 100) + `"}`, 400, "exceed_context_size_error"},
		{"unknown slot", "POST", "/completion", `{"prompt":"x","id_slot":5}`, 400, "invalid_request_error"},
		{"unknown path", "GET", "/v2/nothing", nil, 404, "not_found_error"},
		{"wrong method", "GET", "/v1/chat/completions", nil, 405, "invalid_request_error"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			resp, body := ts.do(t, c.method, c.path, c.body)
			e := expectError(t, resp, body, c.status, c.typ)
			t.Logf("%d %v", c.status, e["message"])
		})
	}
	// A chunked body without Content-Length hits MaxBytesReader while decoding.
	req, _ := http.NewRequest("POST", ts.URL+"/v1/completions", strings.NewReader(`{"prompt":"`+strings.Repeat("z", 4000)+`"}`))
	req.ContentLength = -1
	req.Header.Set("Content-Type", "application/json")
	resp, err := ts.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	if resp.StatusCode != 413 {
		t.Fatalf("chunked oversize body: status %d, want 413", resp.StatusCode)
	}
}

func TestAPIKeyIsRequiredExceptOnHealth(t *testing.T) {
	ts := newTestServer(t, fakeengine.New(1, 512), func(c *Config) { c.APIKey = "sekret" })
	resp, body := ts.do(t, "GET", "/v1/models", nil)
	expectError(t, resp, body, 401, "authentication_error")
	resp, body = ts.do(t, "GET", "/v1/models", nil, "Authorization", "Bearer wrong")
	expectError(t, resp, body, 401, "authentication_error")
	resp, body = ts.do(t, "GET", "/v1/models", nil, "Authorization", "Bearer sekret")
	if resp.StatusCode != 200 {
		t.Fatalf("with the key: %d %s", resp.StatusCode, body)
	}
	resp, _ = ts.do(t, "GET", "/metrics", nil, "X-Api-Key", "sekret")
	if resp.StatusCode != 200 {
		t.Fatalf("X-Api-Key: %d", resp.StatusCode)
	}
	resp, _ = ts.do(t, "GET", "/health", nil)
	if resp.StatusCode != 200 {
		t.Fatalf("/health must stay open: %d", resp.StatusCode)
	}
}

func TestLoopbackBindRefusesForeignHostHeaders(t *testing.T) {
	ts := newTestServer(t, fakeengine.New(1, 512))
	resp, body := ts.do(t, "GET", "/v1/models", nil, "Host", "attacker.example:8080")
	expectError(t, resp, body, 403, "permission_error")
	for _, host := range []string{"localhost:8080", "127.0.0.1", "[::1]:9"} {
		resp, _ = ts.do(t, "GET", "/health", nil, "Host", host)
		if resp.StatusCode != 200 {
			t.Fatalf("Host %s: %d", host, resp.StatusCode)
		}
	}
	open := newTestServer(t, fakeengine.New(1, 512), func(c *Config) { c.Host = "0.0.0.0" })
	resp, _ = open.do(t, "GET", "/health", nil, "Host", "my-box.lan")
	if resp.StatusCode != 200 {
		t.Fatalf("a 0.0.0.0 bind accepts any Host: %d", resp.StatusCode)
	}
}

func TestStatsMoveWhileALongAnswerRuns(t *testing.T) {
	fake := fakeengine.New(1, 1<<20)
	fake.StatsAtEnd = true // like engine/local: the engine counts a request's tokens when it ends
	fake.TokenDelay = 5 * time.Millisecond
	fake.Reply = func(string) string { return strings.Repeat("more ", 400) }
	ts := newTestServer(t, fake)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	resp := ts.stream(t, ctx, "/v1/chat/completions", chatBody("go", map[string]any{"stream": true}))
	defer resp.Body.Close()
	go io.Copy(io.Discard, resp.Body)
	generated := func() float64 {
		_, body := ts.do(t, "GET", "/stats", nil)
		return decode[map[string]any](t, body)["generated_tokens"].(float64)
	}
	time.Sleep(100 * time.Millisecond)
	a := generated()
	time.Sleep(100 * time.Millisecond)
	b := generated()
	if !(b > a && a > 0) {
		t.Fatalf("generated_tokens %v then %v while streaming: want a live count", a, b)
	}
}
