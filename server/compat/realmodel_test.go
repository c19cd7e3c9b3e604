package compat

import (
	"bufio"
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"github.com/expertsniper/expertsniper/engine/local"
	"github.com/expertsniper/expertsniper/modelgen/testmodels"
	"github.com/expertsniper/expertsniper/server"
	"github.com/expertsniper/expertsniper/server/loadgen"
)

// Tests of agent serve on a generated model with the real engine.

type ourServer struct {
	url string
	srv *server.Server
}

func startOursWith(t *testing.T, model string, ctx, slots int, contextDir string) ourServer {
	return startOursConfig(t, model, ctx, slots, server.Config{Host: "127.0.0.1", ContextDir: contextDir})
}

func startOursConfig(t *testing.T, model string, ctx, slots int, cfg server.Config) ourServer {
	t.Helper()
	eng := openEngine(t, model, ctx, slots)
	srv, err := server.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.SetEngine(eng); err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(srv.Handler())
	t.Cleanup(ts.Close)
	return ourServer{url: ts.URL, srv: srv}
}

func postJSON(t *testing.T, url string, body any) (*http.Response, map[string]any) {
	t.Helper()
	data, _ := json.Marshal(body)
	resp, err := http.Post(url, "application/json", strings.NewReader(string(data)))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var v map[string]any
	if err := json.NewDecoder(resp.Body).Decode(&v); err != nil {
		t.Fatalf("POST %s: decode: %v", url, err)
	}
	return resp, v
}

func chatText(v map[string]any) string {
	return v["choices"].([]any)[0].(map[string]any)["message"].(map[string]any)["content"].(string)
}

func TestRealModelStreamedAndPlainChatAgree(t *testing.T) {
	model := testmodels.Path(t, compatModel)
	ours := startOursWith(t, model, 1024, 1, t.TempDir())
	req := map[string]any{"messages": []map[string]string{{"role": "user", "content": "Tell me a story"}}, "max_tokens": 12, "temperature": 0}
	resp, plain := postJSON(t, ours.url+"/v1/chat/completions", req)
	if resp.StatusCode != 200 {
		t.Fatalf("chat: %d %v", resp.StatusCode, plain)
	}
	req["stream"] = true
	a := call(t, ours.url, "POST", "/v1/chat/completions", mustMarshal(req))
	var text strings.Builder
	for _, ev := range a.events[:len(a.events)-1] {
		c := ev.(map[string]any)["choices"].([]any)
		if len(c) == 0 {
			continue
		}
		if s, ok := c[0].(map[string]any)["delta"].(map[string]any)["content"].(string); ok {
			text.WriteString(s)
		}
	}
	if text.String() != chatText(plain) {
		t.Fatalf("streamed %q, plain %q", text.String(), chatText(plain))
	}
	usage := plain["usage"].(map[string]any)
	if usage["completion_tokens"].(float64) < 1 || usage["completion_tokens"].(float64) > 12 {
		t.Fatalf("usage %v", usage)
	}
}

func TestRealModelGreedyTextMatchesLlamaServer(t *testing.T) {
	model := testmodels.Path(t, compatModel)
	theirs := startLlamaServer(t, model)
	ours := startOursWith(t, model, compatCtx, compatSlots, t.TempDir())
	body := map[string]any{"prompt": "The quick brown fox", "n_predict": 8, "temperature": 0}
	_, tv := postJSON(t, theirs+"/completion", body)
	_, ov := postJSON(t, ours.url+"/completion", body)
	if tv["content"] != ov["content"] {
		t.Errorf("greedy /completion: ours %q, llama-server %q", ov["content"], tv["content"])
	}
	if tv["tokens_evaluated"] != ov["tokens_evaluated"] {
		t.Errorf("tokens_evaluated: ours %v, llama-server %v", ov["tokens_evaluated"], tv["tokens_evaluated"])
	}
}

func TestRealModelSavedContextResumesWithTheSameAnswer(t *testing.T) {
	model := testmodels.Path(t, compatModel)
	doc := "<|im_start|>system\n" + strings.Repeat("The manual says the valve must stay closed. ", 12) + "<|im_end|>\n"
	question := "<|im_start|>user\nWhat must stay closed?<|im_end|>\n<|im_start|>assistant\n"
	req := map[string]any{"prompt": doc + question, "n_predict": 8, "temperature": 0}

	fresh := startOursWith(t, model, 2048, 1, t.TempDir())
	_, want := postJSON(t, fresh.url+"/completion", req)

	dir := t.TempDir()
	first := startOursWith(t, model, 2048, 1, dir)
	resp, saved := postJSON(t, first.url+"/v1/context/save", map[string]any{"name": "manual", "prompt": doc})
	if resp.StatusCode != 200 {
		t.Fatalf("save: %d %v", resp.StatusCode, saved)
	}
	// A restarted server on the same directory: the slot is empty, only the saved state can help.
	second := startOursWith(t, model, 2048, 1, dir)
	resp, got := postJSON(t, second.url+"/completion", req)
	if resp.StatusCode != 200 || resp.Header.Get("X-Context-Resumed") != "manual" {
		t.Fatalf("no resume: %d %q %v", resp.StatusCode, resp.Header.Get("X-Context-Resumed"), got)
	}
	savedTokens := saved["saved"].(map[string]any)["tokens"].(float64)
	if cached := got["tokens_cached"].(float64); cached < savedTokens-1 {
		t.Errorf("tokens_cached %v, want at least the saved %v - 1", cached, savedTokens)
	}
	if got["content"] != want["content"] {
		t.Errorf("resumed answer %q differs from a fresh evaluation's %q", got["content"], want["content"])
	}
}

func TestRealModelDisconnectFreesTheOnlySlot(t *testing.T) {
	model := testmodels.Path(t, compatModel)
	ours := startOursWith(t, model, 4096, 1, t.TempDir())
	ctx, cancel := context.WithCancel(context.Background())
	body := mustMarshal(map[string]any{"prompt": "Once upon a time", "n_predict": 3000, "stream": true, "temperature": 0})
	req, _ := http.NewRequestWithContext(ctx, "POST", ours.url+"/completion", strings.NewReader(body))
	req.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	br := bufio.NewReader(resp.Body)
	if _, err := br.ReadString('\n'); err != nil {
		t.Fatal(err)
	}
	cancel()
	resp.Body.Close()
	start := time.Now()
	r2, v := postJSON(t, ours.url+"/completion", map[string]any{"prompt": "Hello", "n_predict": 2})
	if r2.StatusCode != 200 || v["stop"] != true {
		t.Fatalf("after the disconnect: %d %v", r2.StatusCode, v)
	}
	if d := time.Since(start); d > 10*time.Second {
		t.Fatalf("the next request waited %v for the slot", d)
	}
}

func mustMarshal(v any) string {
	b, err := json.Marshal(v)
	if err != nil {
		panic(err)
	}
	return string(b)
}

// A short `agent serve-bench` on the generated model: 8 clients on 4 slots, every answer complete.
func TestRealModelLoadEightClientsFourSlots(t *testing.T) {
	model := testmodels.Path(t, compatModel)
	ours := startOursWith(t, model, 4*512, 4, t.TempDir())
	rep, err := loadgen.Run(context.Background(), loadgen.Config{URL: ours.url, Clients: 8, Requests: 10, MaxTokens: 8, Stream: "mixed"})
	if err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	rep.Print(&out)
	t.Logf("\n%s", out.String())
	if rep.Failed != 0 || rep.OK != 80 {
		t.Fatalf("%d failed: %v", rep.Failed, rep.Errors)
	}
	if rep.MaxQueue == 0 {
		t.Errorf("8 clients on 4 slots never queued")
	}
}

// A prompt longer than one micro-batch in sniper mode (the last layer of a micro-batch that needs no
// output routes no token) gives the same greedy answer as RAM mode, through the server, and can be
// saved as a context.
func TestRealModelSniperLongPromptMatchesRAM(t *testing.T) {
	model := testmodels.Path(t, compatModel)
	open := func(o local.Options) string {
		e, err := local.Open(context.Background(), model, o)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { e.Close() })
		srv, err := server.New(server.Config{Host: "127.0.0.1", ContextDir: t.TempDir()})
		if err != nil {
			t.Fatal(err)
		}
		srv.SetEngine(e)
		ts := httptest.NewServer(srv.Handler())
		t.Cleanup(ts.Close)
		return ts.URL
	}
	ram := open(local.Options{Context: 2048, Threads: 2, Mode: "ram"})
	sn := open(local.Options{Context: 2048, Threads: 2, Mode: "sniper", Cache: "1MiB"})
	prompt := strings.Repeat("The valve must stay closed. ", 80)
	req := map[string]any{"prompt": prompt, "n_predict": 8, "temperature": 0}
	_, want := postJSON(t, ram+"/completion", req)
	resp, got := postJSON(t, sn+"/completion", req)
	if resp.StatusCode != 200 || got["content"] != want["content"] {
		t.Fatalf("sniper %d %v; RAM %q", resp.StatusCode, got, want["content"])
	}
	if n := got["tokens_evaluated"].(float64); n <= 512 {
		t.Fatalf("the prompt has %v tokens; it must span more than one 512-token micro-batch", n)
	}
	resp, saved := postJSON(t, sn+"/v1/context/save", map[string]any{"name": "valve", "prompt": prompt})
	if resp.StatusCode != 200 {
		t.Fatalf("save in sniper mode: %d %v", resp.StatusCode, saved)
	}
}

// A conversation's next turn on a hybrid model (Qwen3.5's recurrent layers) with its real chat
// template: the template renders the previous answer differently from how it was generated, and a
// recurrent state cannot be cut back to a prefix. With context checkpoints the turn resumes from the
// one taken 8 tokens before the end of the previous prompt instead of evaluating it all again.
// (Stock llama-server b11669 with the same -c and -np reused nothing here: it reported cache_n 0.)
func TestRealModelHybridNextTurnResumes(t *testing.T) {
	model := testmodels.WithTemplate(t, "qwen35moe-q8_0", "qwen3.5")
	ours := startOursWith(t, model, compatCtx, compatSlots, t.TempDir())
	turn := func(messages []map[string]string) (string, float64, float64) {
		resp, v := postJSON(t, ours.url+"/v1/chat/completions", map[string]any{"messages": messages, "max_tokens": 4, "temperature": 0})
		if resp.StatusCode != 200 {
			t.Fatalf("chat: %d %v", resp.StatusCode, v)
		}
		timings, _ := v["timings"].(map[string]any)
		if timings == nil {
			t.Fatalf("no timings in %v", v)
		}
		return chatText(v), timings["prompt_n"].(float64), timings["cache_n"].(float64)
	}
	first := []map[string]string{{"role": "user", "content": strings.Repeat("Tell me about the sea and the ships that sail on it. ", 3)}}
	answer, firstPrompt, _ := turn(first)
	next := append(first, map[string]string{"role": "assistant", "content": answer}, map[string]string{"role": "user", "content": "And then?"})
	_, evaluated, cached := turn(next)
	if cached != firstPrompt-8 {
		t.Fatalf("the next turn reused %.0f tokens (and evaluated %.0f) of a %.0f-token first prompt: want all but its last 8, from its checkpoint", cached, evaluated, firstPrompt)
	}
}
