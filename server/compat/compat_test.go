package compat

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/expertsniper/expertsniper/modelgen/testmodels"
	"github.com/expertsniper/expertsniper/server"
)

const (
	compatModel = "qwen3moe-q8_0"
	compatCtx   = 512 // shared by the slots, as llama-server's -c
	compatSlots = 2
)

// startLlamaServer runs the stock llama-server of the build root on model and returns its URL; extra
// arguments are appended to its command line.
func startLlamaServer(t *testing.T, model string, extra ...string) string {
	t.Helper()
	bin, err := exec.LookPath("llama-server")
	if err != nil {
		t.Fatal("llama-server (llama.cpp b11669, Debian's llama.cpp-tools) is needed for the side-by-side test and is not on PATH: " +
			"run the tests with ./build.sh test (it runs them in the build root, where it is installed)")
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := ln.Addr().(*net.TCPAddr).Port
	ln.Close()
	ctx, cancel := context.WithCancel(context.Background())
	var logs strings.Builder
	cmd := exec.CommandContext(ctx, bin, "-m", model, "--host", "127.0.0.1", "--port", fmt.Sprint(port),
		"-c", fmt.Sprint(compatCtx), "-np", fmt.Sprint(compatSlots), "--slot-save-path", t.TempDir()+"/", "--metrics",
		"-t", "2", "--no-webui")
	cmd.Args = append(cmd.Args, extra...)
	cmd.Stdout, cmd.Stderr = &logs, &logs
	if err := cmd.Start(); err != nil {
		t.Fatalf("start llama-server: %v", err)
	}
	t.Cleanup(func() { cancel(); cmd.Wait() })
	base := fmt.Sprintf("http://127.0.0.1:%d", port)
	deadline := time.Now().Add(60 * time.Second)
	for {
		resp, err := http.Get(base + "/health")
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == 200 {
				return base
			}
		}
		if time.Now().After(deadline) {
			t.Fatalf("llama-server did not become healthy in 60 s:\n%s", logs.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// startOurs runs agent serve's handler over the engine on model.
func startOurs(t *testing.T, model string) string {
	t.Helper()
	return startOursSized(t, model, compatCtx, compatSlots)
}

// startOursSized serves model with nCtx tokens shared by slots slots.
func startOursSized(t *testing.T, model string, nCtx, slots int) string {
	t.Helper()
	eng := openEngine(t, model, nCtx, slots)
	srv, err := server.New(server.Config{Host: "127.0.0.1", ContextDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.SetEngine(eng); err != nil {
		t.Fatal(err)
	}
	ts := httptest.NewServer(srv.Handler())
	t.Cleanup(ts.Close)
	return ts.URL
}

// answer is one response: status, and the decoded JSON body or SSE events.
type answer struct {
	status int
	body   any
	events []any // data payloads of an SSE stream, "[DONE]" as the string
	raw    string
}

func call(t *testing.T, base, method, path, body string) answer {
	t.Helper()
	req, err := http.NewRequest(method, base+path, strings.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	if body != "" {
		req.Header.Set("Content-Type", "application/json")
	}
	// One connection per request: llama-server may close an idle keep-alive connection just as a POST
	// is sent on it, which Go's client does not retry.
	req.Close = true
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		t.Fatalf("%s %s%s: %v", method, base, path, err)
	}
	defer resp.Body.Close()
	a := answer{status: resp.StatusCode}
	if strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream") {
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 1<<20), 1<<20)
		for sc.Scan() {
			data, ok := strings.CutPrefix(sc.Text(), "data: ")
			if !ok {
				continue
			}
			if data == "[DONE]" {
				a.events = append(a.events, "[DONE]")
				continue
			}
			var v any
			if err := json.Unmarshal([]byte(data), &v); err != nil {
				t.Fatalf("%s %s: event %q: %v", method, path, data, err)
			}
			a.events = append(a.events, v)
		}
		return a
	}
	data, _ := io.ReadAll(resp.Body)
	a.raw = string(data)
	if strings.HasPrefix(resp.Header.Get("Content-Type"), "application/json") {
		if err := json.Unmarshal(data, &a.body); err != nil {
			t.Fatalf("%s %s: body %q: %v", method, path, data, err)
		}
	}
	return a
}

// Differences accepted on purpose, each for a reason:
var (
	// We implement a subset of llama-server's sampler settings (no mirostat, DRY, XTC, grammars,
	// LoRA), and echo only those.
	settingsSubset = []string{"generation_settings.*", "[].params.*", "default_generation_settings.params.*"}
	// /props fields about features we do not have (media input, chat-template capabilities, the
	// CORS proxy, the bundled web UI's settings) or tokens we do not expose.
	propsMissing = []string{"media_marker", "chat_template_caps", "chat_template_caps.*", "bos_token", "eos_token",
		"cors_proxy_enabled", "ui_settings", "ui_settings.*"}
	// Our /props adds the streaming engine's facts.
	propsExtra = []string{"expertsniper", "expertsniper.*", "default_generation_settings.params.stop"}
	// We show each slot's stop strings too.
	slotsExtra = []string{"[].params.stop"}
	// The brief asks for usage in the last streamed chunk even without stream_options, and we send
	// timings with it.
	finishExtra = []string{"usage", "usage.*", "timings", "timings.*"}
)

type compatCase struct {
	name, method, path, body string
	allow                    Allowance
	// status of ours when it differs from llama-server's on purpose (0: must be equal).
	ourStatus int
}

func compatCases() []compatCase {
	long := strings.Repeat("word ", 700)
	chat := `{"messages":[{"role":"user","content":"hi"}],"max_tokens":5,"temperature":0}`
	return []compatCase{
		{name: "health", method: "GET", path: "/health"},
		{name: "models", method: "GET", path: "/v1/models"},
		{name: "chat", method: "POST", path: "/v1/chat/completions", body: chat},
		{name: "chat stream", method: "POST", path: "/v1/chat/completions",
			body:  `{"messages":[{"role":"user","content":"hi"}],"max_tokens":3,"temperature":0,"stream":true}`,
			allow: Allowance{Extra: finishExtra}},
		{name: "chat stream with usage", method: "POST", path: "/v1/chat/completions",
			body:  `{"messages":[{"role":"user","content":"hi"}],"max_tokens":3,"temperature":0,"stream":true,"stream_options":{"include_usage":true}}`,
			allow: Allowance{Extra: finishExtra}},
		{name: "completions", method: "POST", path: "/v1/completions", body: `{"prompt":"Once upon","max_tokens":3,"temperature":0}`},
		{name: "completions stream", method: "POST", path: "/v1/completions", body: `{"prompt":"Once upon","max_tokens":3,"temperature":0,"stream":true}`},
		{name: "native completion", method: "POST", path: "/completion", body: `{"prompt":"Once upon","n_predict":3,"temperature":0}`,
			allow: Allowance{Missing: settingsSubset}},
		{name: "native completion stream", method: "POST", path: "/completion", body: `{"prompt":"Once upon","n_predict":3,"temperature":0,"stream":true}`,
			allow: Allowance{Missing: settingsSubset}},
		{name: "tokenize", method: "POST", path: "/tokenize", body: `{"content":"hi there"}`},
		{name: "tokenize with pieces", method: "POST", path: "/tokenize", body: `{"content":"hi there","with_pieces":true}`},
		{name: "detokenize", method: "POST", path: "/detokenize", body: `{"tokens":[71,72]}`},
		{name: "apply-template", method: "POST", path: "/apply-template", body: `{"messages":[{"role":"user","content":"hi"}]}`},
		{name: "props", method: "GET", path: "/props", allow: Allowance{Missing: append(append([]string{}, settingsSubset...), propsMissing...), Extra: propsExtra}},
		{name: "slots", method: "GET", path: "/slots", allow: Allowance{Missing: settingsSubset, Extra: slotsExtra}},
		{name: "slot save", method: "POST", path: "/slots/0?action=save", body: `{"filename":"s0.bin"}`},
		{name: "slot restore", method: "POST", path: "/slots/1?action=restore", body: `{"filename":"s0.bin"}`},
		{name: "embeddings unsupported", method: "POST", path: "/v1/embeddings", body: `{"input":"hi"}`},
		{name: "bad JSON", method: "POST", path: "/v1/chat/completions", body: `{"messages":`},
		{name: "messages not an array", method: "POST", path: "/v1/chat/completions", body: `{"messages":"x"}`},
		{name: "temperature a string", method: "POST", path: "/v1/chat/completions", body: `{"messages":[{"role":"user","content":"x"}],"temperature":"hot"}`},
		{name: "context overflow", method: "POST", path: "/v1/completions", body: `{"prompt":"` + long + `"}`},
		{name: "unknown path", method: "GET", path: "/nothing"},
		// llama-server answers a known path with the wrong method with 404; we say 405 and Allow.
		{name: "wrong method", method: "GET", path: "/v1/chat/completions", ourStatus: 405},
	}
}

func TestSameFieldsAndTypesAsLlamaServer(t *testing.T) {
	model := testmodels.Path(t, compatModel)
	theirsURL := startLlamaServer(t, model)
	oursURL := startOurs(t, model)

	for _, c := range compatCases() {
		t.Run(c.name, func(t *testing.T) {
			theirs := call(t, theirsURL, c.method, c.path, c.body)
			ours := call(t, oursURL, c.method, c.path, c.body)
			wantStatus := theirs.status
			if c.ourStatus != 0 {
				wantStatus = c.ourStatus
			}
			if ours.status != wantStatus {
				t.Errorf("status %d, llama-server %d (want %d)\nours: %s%v\ntheirs: %s%v", ours.status, theirs.status, wantStatus,
					ours.raw, ours.events, theirs.raw, theirs.events)
			}
			if (theirs.events == nil) != (ours.events == nil) {
				t.Fatalf("one answered with a stream and the other not:\nours %s %v\ntheirs %s %v", ours.raw, ours.events, theirs.raw, theirs.events)
			}
			if theirs.events == nil {
				for _, d := range CompareShapes(theirs.body, ours.body, c.allow) {
					t.Errorf("%s", d)
				}
				return
			}
			compareStreams(t, theirs.events, ours.events, c.allow)
		})
	}

	// Prometheus metrics: every llamacpp: metric we export exists in llama-server's (with --metrics).
	theirs := call(t, theirsURL, "GET", "/metrics", "")
	ours := call(t, oursURL, "GET", "/metrics", "")
	for _, line := range strings.Split(ours.raw, "\n") {
		if name, ok := strings.CutPrefix(line, "# TYPE "); ok && strings.HasPrefix(name, "llamacpp:") {
			if !strings.Contains(theirs.raw, "# TYPE "+name) {
				t.Errorf("metric %q is not llama-server's", name)
			}
		}
	}
}

// compareStreams checks that both streams have the same structure: a first event, content events, the
// last events, and [DONE] exactly when llama-server sends it.
func compareStreams(t *testing.T, theirs, ours []any, allow Allowance) {
	t.Helper()
	tDone, oDone := theirs[len(theirs)-1] == "[DONE]", ours[len(ours)-1] == "[DONE]"
	if tDone != oDone {
		t.Fatalf("[DONE] at the end: llama-server %v, ours %v", tDone, oDone)
	}
	if tDone {
		theirs, ours = theirs[:len(theirs)-1], ours[:len(ours)-1]
	}
	if len(theirs) < 2 || len(ours) < 2 {
		t.Fatalf("streams too short to compare: %d and %d events", len(theirs), len(ours))
	}
	pairs := []struct {
		what      string
		tv, ov    any
		allowance Allowance
	}{
		{"first event", theirs[0], ours[0], Allowance{}},
		{"second event", theirs[1], ours[1], Allowance{}},
		{"last event", theirs[len(theirs)-1], ours[len(ours)-1], allow},
	}
	if len(theirs) > 2 && len(ours) > 2 {
		pairs = append(pairs, struct {
			what      string
			tv, ov    any
			allowance Allowance
		}{"second to last event", theirs[len(theirs)-2], ours[len(ours)-2], allow})
	}
	for _, p := range pairs {
		for _, d := range CompareShapes(p.tv, p.ov, p.allowance) {
			t.Errorf("%s: %s", p.what, d)
		}
	}
	if os.Getenv("COMPAT_VERBOSE") != "" {
		t.Logf("theirs %v\nours %v", theirs, ours)
	}
}
