// Package loadgen drives an OpenAI-compatible server with concurrent chat clients and checks every
// response for completeness, sampling the server's memory and expert reads (GET /stats, when the
// server has it: a stock llama-server does not) as it goes. `agent serve-bench`
// prints its report; the server's tests run a short version.
package loadgen

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strings"
	"sync"
	"time"
)

// Config of one load run.
type Config struct {
	URL       string // base URL of the server, e.g. http://127.0.0.1:8080
	APIKey    string
	Clients   int // concurrent clients
	Requests  int // requests per client
	MaxTokens int // max_tokens of every request
	// Stream: "on", "off" or "mixed" (every other request streamed).
	Stream string
	// Prompt makes the user message of request i of client c; nil uses a short varied question.
	Prompt func(client, i int) string
	// SampleEvery is how often /stats is polled for RSS and queue length (default 100 ms).
	SampleEvery time.Duration
	HTTPClient  *http.Client
}

// Report is what one run measured.
type Report struct {
	Clients, RequestsPerClient int
	Requests, OK, Failed       int
	Errors                     []string // the first few failures
	Wall                       time.Duration
	CompletionTokens           int
	PromptTokens               int
	LatencyP50, LatencyP95     time.Duration
	LatencyMax                 time.Duration
	FirstTokenP50              time.Duration // streamed requests only
	MaxQueue                   int
	RSSStart, RSSEnd           int64
	RSSMin, RSSMax             int64
	// RSSWarm is the sample a quarter into the run: growth before it is warm-up (slots' caches and
	// buffers touched for the first time), growth after it would be a leak.
	RSSWarm    int64
	RSSSamples int
	// ServerStats: the server answered GET /stats (agent serve), so the RSS figures and
	// ExpertBytesRead are measured; a stock llama-server has no /stats.
	ServerStats bool
	// ExpertBytesRead is what the server read from disk during the run (streamed modes).
	ExpertBytesRead int64
}

// ExpertBytesPerToken is the bytes the server read per generated token (0 without /stats).
func (r Report) ExpertBytesPerToken() float64 {
	if r.CompletionTokens == 0 {
		return 0
	}
	return float64(r.ExpertBytesRead) / float64(r.CompletionTokens)
}

// RequestsPerSecond and TokensPerSecond summarise throughput.
func (r Report) RequestsPerSecond() float64 { return float64(r.OK) / r.Wall.Seconds() }
func (r Report) TokensPerSecond() float64   { return float64(r.CompletionTokens) / r.Wall.Seconds() }

// RSSGrowth is the growth from the first to the last sample (negative when it shrank).
func (r Report) RSSGrowth() int64 { return r.RSSEnd - r.RSSStart }

// RSSGrowthAfterWarmup is the growth over the last three quarters of the run.
func (r Report) RSSGrowthAfterWarmup() int64 { return r.RSSEnd - r.RSSWarm }

// Print writes the report as a small table.
func (r Report) Print(w io.Writer) {
	mib := func(b int64) string { return fmt.Sprintf("%.1f MiB", float64(b)/(1<<20)) }
	fmt.Fprintf(w, "clients × requests     %d × %d = %d\n", r.Clients, r.RequestsPerClient, r.Requests)
	fmt.Fprintf(w, "ok / failed            %d / %d\n", r.OK, r.Failed)
	fmt.Fprintf(w, "wall time              %.2f s\n", r.Wall.Seconds())
	fmt.Fprintf(w, "throughput             %.2f req/s, %.1f tok/s generated (%d tokens, %d prompt tokens)\n",
		r.RequestsPerSecond(), r.TokensPerSecond(), r.CompletionTokens, r.PromptTokens)
	fmt.Fprintf(w, "latency p50/p95/max    %v / %v / %v\n", r.LatencyP50.Round(time.Millisecond),
		r.LatencyP95.Round(time.Millisecond), r.LatencyMax.Round(time.Millisecond))
	if r.FirstTokenP50 > 0 {
		fmt.Fprintf(w, "first token p50        %v (streamed requests)\n", r.FirstTokenP50.Round(time.Millisecond))
	}
	if !r.ServerStats {
		fmt.Fprintf(w, "server statistics      none (the server has no GET /stats)\n")
		for _, e := range r.Errors {
			fmt.Fprintf(w, "error: %s\n", e)
		}
		return
	}
	fmt.Fprintf(w, "max queued             %d\n", r.MaxQueue)
	fmt.Fprintf(w, "expert bytes read      %s, %s per generated token\n", mib(r.ExpertBytesRead), mib(int64(r.ExpertBytesPerToken())))
	fmt.Fprintf(w, "server RSS             start %s, end %s, min %s, max %s (%d samples)\n",
		mib(r.RSSStart), mib(r.RSSEnd), mib(r.RSSMin), mib(r.RSSMax), r.RSSSamples)
	fmt.Fprintf(w, "RSS growth             %s in all, %s after the first quarter of the run\n",
		mib(r.RSSGrowth()), mib(r.RSSGrowthAfterWarmup()))
	for _, e := range r.Errors {
		fmt.Fprintf(w, "error: %s\n", e)
	}
}

type outcome struct {
	latency, firstToken time.Duration
	completion, prompt  int
	err                 error
}

// Run sends Clients × Requests chat requests and checks each answer. It returns an error only when
// the run itself could not happen; failed requests are counted in the report.
func Run(ctx context.Context, cfg Config) (Report, error) {
	if cfg.Clients < 1 || cfg.Requests < 1 {
		return Report{}, fmt.Errorf("load: clients and requests must be at least 1 (got %d × %d)", cfg.Clients, cfg.Requests)
	}
	if cfg.MaxTokens < 1 {
		cfg.MaxTokens = 16
	}
	if cfg.Stream == "" {
		cfg.Stream = "mixed"
	}
	if cfg.Stream != "on" && cfg.Stream != "off" && cfg.Stream != "mixed" {
		return Report{}, fmt.Errorf("load: stream must be on, off or mixed, got %q", cfg.Stream)
	}
	if cfg.Prompt == nil {
		cfg.Prompt = func(c, i int) string { return fmt.Sprintf("Client %d, question %d: name a colour.", c, i) }
	}
	if cfg.SampleEvery <= 0 {
		cfg.SampleEvery = 100 * time.Millisecond
	}
	if cfg.HTTPClient == nil {
		cfg.HTTPClient = &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: cfg.Clients + 2}}
	}
	cfg.URL = strings.TrimRight(cfg.URL, "/")
	if err := healthy(ctx, cfg); err != nil {
		return Report{}, fmt.Errorf("load: the server at %s is not ready: %w", cfg.URL, err)
	}
	first, err := sample(ctx, cfg)
	rep := Report{Clients: cfg.Clients, RequestsPerClient: cfg.Requests, Requests: cfg.Clients * cfg.Requests,
		ServerStats: err == nil}
	var samplesMu sync.Mutex
	var rss []int64
	sampleCtx, stopSampling := context.WithCancel(ctx)
	samplerDone := make(chan struct{})
	go func() {
		defer close(samplerDone)
		if !rep.ServerStats {
			return
		}
		t := time.NewTicker(cfg.SampleEvery)
		defer t.Stop()
		for {
			if st, err := sample(sampleCtx, cfg); err == nil {
				samplesMu.Lock()
				rss = append(rss, st.RSSBytes)
				rep.MaxQueue = max(rep.MaxQueue, st.Queue)
				samplesMu.Unlock()
			}
			select {
			case <-sampleCtx.Done():
				return
			case <-t.C:
			}
		}
	}()

	start := time.Now()
	results := make(chan outcome, rep.Requests)
	var wg sync.WaitGroup
	for c := 0; c < cfg.Clients; c++ {
		wg.Add(1)
		go func(c int) {
			defer wg.Done()
			for i := 0; i < cfg.Requests; i++ {
				if ctx.Err() != nil {
					results <- outcome{err: ctx.Err()}
					continue
				}
				stream := cfg.Stream == "on" || (cfg.Stream == "mixed" && (c+i)%2 == 1)
				results <- chat(ctx, cfg, cfg.Prompt(c, i), stream)
			}
		}(c)
	}
	wg.Wait()
	rep.Wall = time.Since(start)
	close(results)
	stopSampling()
	<-samplerDone
	// One last sample after the load, so RSSEnd is the state the load left behind.
	if rep.ServerStats {
		if st, err := sample(ctx, cfg); err == nil {
			rss = append(rss, st.RSSBytes)
			rep.ExpertBytesRead = st.BytesRead - first.BytesRead
		}
	}

	var lat, ttft []time.Duration
	for o := range results {
		if o.err != nil {
			rep.Failed++
			if len(rep.Errors) < 5 {
				rep.Errors = append(rep.Errors, o.err.Error())
			}
			continue
		}
		rep.OK++
		rep.CompletionTokens += o.completion
		rep.PromptTokens += o.prompt
		lat = append(lat, o.latency)
		if o.firstToken > 0 {
			ttft = append(ttft, o.firstToken)
		}
	}
	rep.LatencyP50, rep.LatencyP95, rep.LatencyMax = percentile(lat, 50), percentile(lat, 95), percentile(lat, 100)
	rep.FirstTokenP50 = percentile(ttft, 50)
	if len(rss) > 0 {
		rep.RSSSamples = len(rss)
		rep.RSSStart, rep.RSSEnd, rep.RSSWarm = rss[0], rss[len(rss)-1], rss[len(rss)/4]
		rep.RSSMin, rep.RSSMax = rss[0], rss[0]
		for _, v := range rss {
			rep.RSSMin, rep.RSSMax = min(rep.RSSMin, v), max(rep.RSSMax, v)
		}
	}
	return rep, nil
}

func percentile(d []time.Duration, p int) time.Duration {
	if len(d) == 0 {
		return 0
	}
	sort.Slice(d, func(i, j int) bool { return d[i] < d[j] })
	i := (len(d)*p + 99) / 100
	return d[min(max(i-1, 0), len(d)-1)]
}

type stats struct {
	RSSBytes  int64 `json:"rss_bytes"`
	Queue     int   `json:"queue"`
	BytesRead int64 `json:"bytes_read"`
}

func (cfg Config) newRequest(ctx context.Context, method, path string, body []byte) (*http.Request, error) {
	req, err := http.NewRequestWithContext(ctx, method, cfg.URL+path, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Content-Type", "application/json")
	if cfg.APIKey != "" {
		req.Header.Set("Authorization", "Bearer "+cfg.APIKey)
	}
	return req, nil
}

// healthy checks GET /health (both agent serve and llama-server answer 200 once the model is loaded).
func healthy(ctx context.Context, cfg Config) error {
	req, err := cfg.newRequest(ctx, "GET", "/health", nil)
	if err != nil {
		return err
	}
	resp, err := cfg.HTTPClient.Do(req)
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != 200 {
		return fmt.Errorf("GET /health: status %d", resp.StatusCode)
	}
	return nil
}

func sample(ctx context.Context, cfg Config) (stats, error) {
	var st stats
	req, err := cfg.newRequest(ctx, "GET", "/stats", nil)
	if err != nil {
		return st, err
	}
	resp, err := cfg.HTTPClient.Do(req)
	if err != nil {
		return st, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		return st, fmt.Errorf("GET /stats: status %d", resp.StatusCode)
	}
	return st, json.NewDecoder(resp.Body).Decode(&st)
}

type usage struct {
	CompletionTokens int `json:"completion_tokens"`
	PromptTokens     int `json:"prompt_tokens"`
}

type chatChunk struct {
	Choices []struct {
		Delta        struct{ Content *string } `json:"delta"`
		Message      struct{ Content *string } `json:"message"`
		FinishReason *string                   `json:"finish_reason"`
	} `json:"choices"`
	Usage *usage `json:"usage"`
	Error *struct {
		Message string `json:"message"`
	} `json:"error"`
}

// chat sends one request and checks that its answer is complete: status 200, a finish reason, usage
// that counts the tokens, and for a stream the final [DONE].
func chat(ctx context.Context, cfg Config, prompt string, stream bool) outcome {
	req := map[string]any{
		"messages":    []map[string]string{{"role": "user", "content": prompt}},
		"max_tokens":  cfg.MaxTokens,
		"temperature": 0,
		"stream":      stream,
	}
	if stream {
		// The OpenAI way to ask for usage in a stream: what a stock llama-server needs too.
		req["stream_options"] = map[string]any{"include_usage": true}
	}
	body, _ := json.Marshal(req)
	start := time.Now()
	hreq, err := cfg.newRequest(ctx, "POST", "/v1/chat/completions", body)
	if err != nil {
		return outcome{err: err}
	}
	resp, err := cfg.HTTPClient.Do(hreq)
	if err != nil {
		return outcome{err: fmt.Errorf("POST /v1/chat/completions: %w", err)}
	}
	defer resp.Body.Close()
	if resp.StatusCode != 200 {
		data, _ := io.ReadAll(io.LimitReader(resp.Body, 1024))
		return outcome{err: fmt.Errorf("status %d: %s", resp.StatusCode, bytes.TrimSpace(data))}
	}
	o := outcome{}
	var finish string
	var u *usage
	if !stream {
		var c chatChunk
		if err := json.NewDecoder(resp.Body).Decode(&c); err != nil {
			return outcome{err: fmt.Errorf("decode the answer: %w", err)}
		}
		if len(c.Choices) != 1 || c.Choices[0].Message.Content == nil || c.Choices[0].FinishReason == nil {
			return outcome{err: errors.New("incomplete answer: no message or finish_reason")}
		}
		finish, u = *c.Choices[0].FinishReason, c.Usage
	} else {
		sc := bufio.NewScanner(resp.Body)
		sc.Buffer(make([]byte, 64<<10), 1<<20)
		done := false
		for sc.Scan() {
			line := sc.Text()
			if line == "" {
				continue
			}
			data, ok := strings.CutPrefix(line, "data: ")
			if !ok {
				return outcome{err: fmt.Errorf("not an SSE data line: %q", line)}
			}
			if data == "[DONE]" {
				done = true
				break
			}
			var c chatChunk
			if err := json.Unmarshal([]byte(data), &c); err != nil {
				return outcome{err: fmt.Errorf("decode an event: %w", err)}
			}
			if c.Error != nil {
				return outcome{err: fmt.Errorf("error event: %s", c.Error.Message)}
			}
			if len(c.Choices) > 0 {
				if c.Choices[0].Delta.Content != nil && *c.Choices[0].Delta.Content != "" && o.firstToken == 0 {
					o.firstToken = time.Since(start)
				}
				if c.Choices[0].FinishReason != nil {
					finish = *c.Choices[0].FinishReason
				}
			}
			if c.Usage != nil {
				u = c.Usage
			}
		}
		if err := sc.Err(); err != nil {
			return outcome{err: fmt.Errorf("read the stream: %w", err)}
		}
		if !done {
			return outcome{err: errors.New("incomplete stream: no [DONE]")}
		}
	}
	if finish != "stop" && finish != "length" {
		return outcome{err: fmt.Errorf("incomplete answer: finish_reason %q", finish)}
	}
	if u == nil || u.CompletionTokens < 1 && finish == "length" || u.CompletionTokens > cfg.MaxTokens {
		return outcome{err: fmt.Errorf("usage %+v does not fit finish_reason %q and max_tokens %d", u, finish, cfg.MaxTokens)}
	}
	o.latency = time.Since(start)
	o.completion, o.prompt = u.CompletionTokens, u.PromptTokens
	return o
}
