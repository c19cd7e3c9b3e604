package main

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/expertsniper/expertsniper/internal/nodetest"
	"github.com/expertsniper/expertsniper/modelgen/testmodels"
	"github.com/expertsniper/expertsniper/repl"
)

// startServeBinary runs `bin serve` with args on a free port and returns its base URL once the model
// is loaded.
func startServeBinary(t *testing.T, bin string, args ...string) string {
	t.Helper()
	cmd := exec.Command(bin, append([]string{"serve", "--port", "0", "--threads", "1"}, args...)...)
	stderr, err := cmd.StderrPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		_ = cmd.Process.Signal(os.Interrupt)
		done := make(chan struct{})
		go func() { _ = cmd.Wait(); close(done) }()
		select {
		case <-done:
		case <-time.After(30 * time.Second):
			_ = cmd.Process.Kill()
			<-done
		}
	})
	log := &syncBuffer{}
	lines := make(chan string, 64)
	go func() {
		sc := bufio.NewScanner(stderr)
		for sc.Scan() {
			log.Write([]byte(sc.Text() + "\n"))
			select {
			case lines <- sc.Text():
			default:
			}
		}
		close(lines)
	}()
	addrRE := regexp.MustCompile(`listening on (http://[0-9.:]+)`)
	base := ""
	timeout := time.After(3 * time.Minute)
	for {
		select {
		case l, ok := <-lines:
			if !ok {
				t.Fatalf("agent serve %v stopped:\n%s", args, log.String())
			}
			if m := addrRE.FindStringSubmatch(l); m != nil {
				base = m[1]
			}
			if strings.HasPrefix(l, "model loaded") {
				if base == "" {
					t.Fatalf("no address in serve's output:\n%s", log.String())
				}
				return base
			}
		case <-timeout:
			t.Fatalf("agent serve %v did not load the model in 3 minutes:\n%s", args, log.String())
		}
	}
}

// runNodeSDKCheck runs server/testdata/node/sdk_check.mjs (the official OpenAI SDK) against base.
func runNodeSDKCheck(t *testing.T, base, apiKey string) sdkCheckResult {
	t.Helper()
	node, dir := nodetest.Require(t)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, filepath.Join(dir, "sdk_check.mjs"))
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "OPENAI_BASE_URL="+base+"/v1", "OPENAI_API_KEY="+apiKey, "SDK_PROMPT=Tell me about experts.")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("the OpenAI SDK check failed: %v\n%s%s", err, stderr.String(), out)
	}
	var res sdkCheckResult
	if err := json.Unmarshal(out, &res); err != nil {
		t.Fatalf("decode the SDK check's output %q: %v", out, err)
	}
	return res
}

type sdkCheckResult struct {
	Chat struct {
		Content      string `json:"content"`
		FinishReason string `json:"finish_reason"`
	} `json:"chat"`
	ChatStream struct {
		Content string `json:"content"`
	} `json:"chat_stream"`
	Completion struct {
		Text string `json:"text"`
	} `json:"completion"`
	CompletionStream struct {
		Text string `json:"text"`
	} `json:"completion_stream"`
	BadRequest struct {
		Status int `json:"status"`
	} `json:"bad_request"`
}

// TestServeOverTwoRPCWorkers: `agent serve --rpc` answers the official OpenAI SDK with the same greedy
// text as the local server; a worker killed mid-request fails that request with an error naming it,
// the server keeps answering (503 naming the worker while it is down), and serves again once the
// worker is back.
func TestServeOverTwoRPCWorkers(t *testing.T) {
	bin := buildAgent(t)
	model := testmodels.Path(t, "qwen3moe-q8_0")
	w1, w2 := startRPCWorker(t, bin, ""), startRPCWorker(t, bin, "")

	local := runNodeSDKCheck(t, startServeBinary(t, bin, "-m", model, "--api-key", "k"), "k")
	base := startServeBinary(t, bin, "-m", model, "--api-key", "k", "--rpc", w1.endpoint+","+w2.endpoint)
	spread := runNodeSDKCheck(t, base, "k")
	if spread.Chat.Content == "" || spread.Chat.Content != local.Chat.Content || spread.ChatStream.Content != local.ChatStream.Content ||
		spread.Completion.Text != local.Completion.Text || spread.CompletionStream.Text != local.CompletionStream.Text {
		t.Fatalf("over RPC workers the SDK got %+v, locally %+v", spread, local)
	}
	if spread.BadRequest.Status != 400 {
		t.Fatalf("bad request over RPC: %+v", spread.BadRequest)
	}

	get := func(path string) string {
		req, _ := http.NewRequest("GET", base+path, nil)
		req.Header.Set("Authorization", "Bearer k")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return string(b)
	}
	var stats struct {
		RSS     int64 `json:"rss_bytes"`
		Devices []struct {
			Endpoint string `json:"endpoint"`
			Layers   int    `json:"layers"`
		} `json:"devices"`
	}
	if err := json.Unmarshal([]byte(get("/stats")), &stats); err != nil {
		t.Fatal(err)
	}
	layers := 0
	for _, d := range stats.Devices {
		layers += d.Layers
	}
	if len(stats.Devices) != 3 || stats.Devices[1].Endpoint != w1.endpoint || stats.Devices[2].Endpoint != w2.endpoint ||
		layers != mustPlan(t, model).Layers+1 || stats.RSS <= 0 {
		t.Fatalf("/stats devices: %+v", stats)
	}
	if m := get("/metrics"); !strings.Contains(m, `expertsniper_device_layers{device="`) || !strings.Contains(m, `endpoint="`+w2.endpoint+`"}`) {
		t.Fatalf("/metrics lacks the devices:\n%s", m)
	}

	post := func(body string) (*http.Response, error) {
		req, _ := http.NewRequest("POST", base+"/v1/completions", strings.NewReader(body))
		req.Header.Set("Authorization", "Bearer k")
		req.Header.Set("Content-Type", "application/json")
		return http.DefaultClient.Do(req)
	}
	// A long streamed completion; the worker dies after its first token.
	resp, err := post(`{"prompt":"Once upon a time","max_tokens":3000,"temperature":0,"stream":true}`)
	if err != nil {
		t.Fatal(err)
	}
	rd := bufio.NewReader(resp.Body)
	for {
		line, err := rd.ReadString('\n')
		if err != nil {
			t.Fatalf("stream ended before its first token: %v", err)
		}
		if strings.HasPrefix(line, "data: {") {
			break
		}
	}
	w2.kill()
	rest, _ := io.ReadAll(rd)
	resp.Body.Close()
	if !strings.Contains(string(rest), `"error"`) || !strings.Contains(string(rest), "rpc worker "+w2.endpoint+" lost mid-request") {
		t.Fatalf("the request whose worker died should fail naming it; the stream's end was:\n%s", tail(string(rest), 2000))
	}

	// The server still answers: a clear 503 naming the worker while it is down...
	resp, err = post(`{"prompt":"hi","max_tokens":4,"temperature":0}`)
	if err != nil {
		t.Fatalf("the server stopped answering after losing a worker: %v", err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(string(body), w2.endpoint) {
		t.Fatalf("with the worker down: %d %s", resp.StatusCode, body)
	}
	// ...and the same answer as before once the worker is back on its port.
	startRPCWorker(t, bin, w2.endpoint)
	resp, err = post(`{"prompt":"Once upon a time","max_tokens":5,"temperature":0}`)
	if err != nil {
		t.Fatal(err)
	}
	body, _ = io.ReadAll(resp.Body)
	resp.Body.Close()
	var cmpl struct {
		Choices []struct {
			Text string `json:"text"`
		} `json:"choices"`
	}
	if resp.StatusCode != 200 || json.Unmarshal(body, &cmpl) != nil || len(cmpl.Choices) != 1 || cmpl.Choices[0].Text != local.Completion.Text {
		t.Fatalf("after the worker came back: %d %s (want the text %q)", resp.StatusCode, body, local.Completion.Text)
	}
}

func tail(s string, n int) string {
	if len(s) > n {
		return s[len(s)-n:]
	}
	return s
}

// TestREPLOverRPCWorkersAnswersAsLocally: the REPL (and config.json's rpc) loads the model in an
// engine process spread over two workers and answers a raw question with the local answer's text.
func TestREPLOverRPCWorkersAnswersAsLocally(t *testing.T) {
	bin := buildAgent(t)
	engineHostBinary = bin
	t.Cleanup(func() { engineHostBinary = "" })
	w1, w2 := startRPCWorker(t, bin, ""), startRPCWorker(t, bin, "")
	cfg := repl.DefaultConfig()
	cfg.MaxTokens = 16
	input := "/raw\nHello there.\n/quit\n"
	m := tinyModel(t, 1024)
	m.Mode = ""
	localOut, _ := runREPL(t, m, cfg, nil, input)
	m.RPC = w1.endpoint + "," + w2.endpoint
	m.TensorSplit = "1,2,1"
	spreadOut, spreadErr := runREPL(t, m, cfg, nil, input)
	if !strings.Contains(spreadErr, "rpc: loading") || strings.Contains(spreadErr, "error:") {
		t.Fatalf("the REPL did not load over the workers:\n%s", spreadErr)
	}
	if localOut == "" || spreadOut != localOut {
		t.Fatalf("over RPC workers the REPL answered\n%q\nlocally\n%q", spreadOut, localOut)
	}
	bad := repl.DefaultConfig()
	bad.Models = map[string]repl.ModelConfig{"m": {Path: m.Path, RPC: "h:1", TensorSplit: "1"}}
	if err := bad.Validate(); err == nil || !strings.Contains(err.Error(), "tensor-split") {
		t.Fatalf("config.json with a split of the wrong length: %v", err)
	}
}
