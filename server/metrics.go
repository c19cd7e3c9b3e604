package server

import (
	"fmt"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/expertsniper/expertsniper/engine"
)

// metrics are the server's own counters; the engine's live in engine.Stats.
type metrics struct {
	requests       atomic.Int64
	clientErrors   atomic.Int64
	serverErrors   atomic.Int64
	panics         atomic.Int64
	cancelled      atomic.Int64
	contextResumes atomic.Int64
	completions    atomic.Int64
	promptTokens   atomic.Int64
	predicted      atomic.Int64
	// tokensLive counts generated tokens as they are streamed out of the engine (predicted only
	// counts finished requests), so that rates move while a long answer runs.
	tokensLive atomic.Int64

	mu          sync.Mutex
	promptMS    float64
	predictedMS float64
}

func newMetrics() *metrics { return &metrics{} }

func (m *metrics) countRequest(status int) {
	m.requests.Add(1)
	switch {
	case status >= 500:
		m.serverErrors.Add(1)
	case status >= 400:
		m.clientErrors.Add(1)
	}
}

func (m *metrics) record(t engine.Timings) {
	m.completions.Add(1)
	m.promptTokens.Add(int64(t.PromptTokens))
	m.predicted.Add(int64(t.PredictedTokens))
	m.mu.Lock()
	m.promptMS += t.PromptMS
	m.predictedMS += t.PredictedMS
	m.mu.Unlock()
}

// handleMetrics is GET /metrics in Prometheus' text format: llama-server's names for what both
// servers measure, expertsniper_* for the streaming engine.
func (s *Server) handleMetrics(w http.ResponseWriter, r *http.Request) {
	l := s.engineOr503(w)
	if l == nil {
		return
	}
	m := s.metrics
	m.mu.Lock()
	promptMS, predictedMS := m.promptMS, m.predictedMS
	m.mu.Unlock()
	slots := l.eng.Slots()
	st := l.eng.Stats()

	var b strings.Builder
	metric := func(name, typ, help string, v any) {
		fmt.Fprintf(&b, "# HELP %s %s\n# TYPE %s %s\n%s %v\n", name, help, name, typ, name, v)
	}
	rate := func(tokens int64, ms float64) float64 {
		if ms <= 0 {
			return 0
		}
		return float64(tokens) / ms * 1000
	}
	metric("llamacpp:prompt_tokens_total", "counter", "Number of prompt tokens processed.", m.promptTokens.Load())
	metric("llamacpp:prompt_seconds_total", "counter", "Prompt process time.", promptMS/1000)
	metric("llamacpp:tokens_predicted_total", "counter", "Number of generation tokens processed.", m.predicted.Load())
	metric("llamacpp:tokens_predicted_seconds_total", "counter", "Predict process time.", predictedMS/1000)
	metric("llamacpp:prompt_tokens_seconds", "gauge", "Average prompt throughput in tokens/s.", rate(m.promptTokens.Load(), promptMS))
	metric("llamacpp:predicted_tokens_seconds", "gauge", "Average generation throughput in tokens/s.", rate(m.predicted.Load(), predictedMS))
	metric("llamacpp:requests_processing", "gauge", "Number of requests processing.", busySlots(slots))
	metric("llamacpp:requests_deferred", "gauge", "Number of requests deferred.", slots.Queued)
	metric("expertsniper_http_requests_total", "counter", "HTTP requests answered.", m.requests.Load())
	metric("expertsniper_http_client_errors_total", "counter", "HTTP answers with a 4xx status.", m.clientErrors.Load())
	metric("expertsniper_http_server_errors_total", "counter", "HTTP answers with a 5xx status.", m.serverErrors.Load())
	metric("expertsniper_handler_panics_total", "counter", "Handler panics recovered.", m.panics.Load())
	metric("expertsniper_generations_cancelled_total", "counter", "Generations stopped because the client went away.", m.cancelled.Load())
	metric("expertsniper_context_resumes_total", "counter", "Requests resumed from a saved context.", m.contextResumes.Load())
	metric("expertsniper_process_rss_bytes", "gauge", "Resident memory of the process.", processRSS(st))
	metric("expertsniper_disk_read_bytes_total", "counter", "Bytes of weights read from disk.", st.BytesRead)
	metric("expertsniper_disk_reads_total", "counter", "Weight reads issued.", st.Reads)
	if l.info.Mode == "stream" {
		// Dense streaming caches whole layers' FFNs, not experts.
		metric("expertsniper_layer_cache_hits_total", "counter", "Layers whose FFN was in the cache.", st.CacheHits)
		metric("expertsniper_layer_cache_misses_total", "counter", "Layers whose FFN was read from disk.", st.CacheMisses)
		metric("expertsniper_layer_read_ahead_total", "counter", "Layers read from disk ahead of their use, while the layer before computed.", st.ReadAheadHits)
		metric("expertsniper_layer_cache_bytes", "gauge", "Bytes of layers' FFNs resident.", st.CacheBytes)
		metric("expertsniper_layer_cache_budget_bytes", "gauge", "Byte budget of the layer cache.", st.CacheBudget)
	} else {
		metric("expertsniper_expert_cache_hits_total", "counter", "Expert cache hits.", st.CacheHits)
		metric("expertsniper_expert_cache_misses_total", "counter", "Expert cache misses.", st.CacheMisses)
		metric("expertsniper_expert_cache_bytes", "gauge", "Bytes of experts resident in the cache.", st.CacheBytes)
		metric("expertsniper_expert_cache_budget_bytes", "gauge", "Byte budget of the expert cache.", st.CacheBudget)
	}
	metric("expertsniper_read_latency_p50_seconds", "gauge", "Median weight read latency.", float64(st.ReadP50Micros)/1e6)
	metric("expertsniper_read_latency_p99_seconds", "gauge", "99th percentile weight read latency.", float64(st.ReadP99Micros)/1e6)
	if len(st.Devices) > 0 {
		devices := func(name, help string, v func(engine.Device) any) {
			fmt.Fprintf(&b, "# HELP %s %s\n# TYPE %s gauge\n", name, help, name)
			for _, d := range st.Devices {
				fmt.Fprintf(&b, "%s{device=%q,endpoint=%q} %v\n", name, d.Name, d.Endpoint, v(d))
			}
		}
		devices("expertsniper_device_layers", "Layers of the model on each device (the output layer counts as one).", func(d engine.Device) any { return d.Layers })
		devices("expertsniper_device_free_bytes", "Free memory each device reported when the model loaded.", func(d engine.Device) any { return d.FreeBytes })
		devices("expertsniper_device_total_bytes", "Total memory of each device.", func(d engine.Device) any { return d.TotalBytes })
	}
	w.Header().Set("Content-Type", "text/plain; version=0.0.4; charset=utf-8")
	w.Write([]byte(b.String()))
}

// statsView is GET /stats, polled by the dashboard: everything it draws, from one snapshot.
type statsView struct {
	TimeMS       int64   `json:"time_ms"`
	UptimeS      float64 `json:"uptime_s"`
	Model        string  `json:"model"`
	Mode         string  `json:"mode"`
	Slots        int     `json:"slots"`
	SlotsBusy    int     `json:"slots_busy"`
	Queue        int     `json:"queue"`
	Requests     int64   `json:"requests"`
	Completions  int64   `json:"completions"`
	RSSBytes     int64   `json:"rss_bytes"`
	PromptTokens int64   `json:"prompt_tokens"`
	Generated    int64   `json:"generated_tokens"`
	BytesRead    int64   `json:"bytes_read"`
	Reads        int64   `json:"reads"`
	CacheHits    int64   `json:"cache_hits"`
	CacheMisses  int64   `json:"cache_misses"`
	// ReadAhead counts, in stream mode, the cache misses (layers) read while the layer before
	// computed.
	ReadAhead   int64         `json:"read_ahead"`
	CacheBytes  int64         `json:"cache_bytes"`
	CacheBudget int64         `json:"cache_budget"`
	ReadP50US   int64         `json:"read_p50_us"`
	ReadP99US   int64         `json:"read_p99_us"`
	Activations [][]int64     `json:"layer_expert_activations"`
	Running     []slotRunning `json:"running"`
	// Devices are where a model spread over RPC workers lives (empty when all is local).
	Devices []engine.Device `json:"devices"`
}

type slotRunning struct {
	ID      int `json:"id"`
	Decoded int `json:"decoded"`
}

func (s *Server) handleStats(w http.ResponseWriter, r *http.Request) {
	l := s.engineOr503(w)
	if l == nil {
		return
	}
	st := l.eng.Stats()
	slots := l.eng.Slots()
	v := statsView{
		TimeMS: time.Now().UnixMilli(), UptimeS: time.Since(s.started).Seconds(),
		Model: s.modelName(l), Mode: l.info.Mode, Slots: len(slots.Slots), SlotsBusy: busySlots(slots), Queue: slots.Queued,
		Requests: s.metrics.requests.Load(), Completions: s.metrics.completions.Load(),
		RSSBytes: processRSS(st), PromptTokens: st.PromptTokens, Generated: max(st.GeneratedTokens, s.metrics.tokensLive.Load()),
		BytesRead: st.BytesRead, Reads: st.Reads, CacheHits: st.CacheHits, CacheMisses: st.CacheMisses, ReadAhead: st.ReadAheadHits,
		CacheBytes: st.CacheBytes, CacheBudget: st.CacheBudget, ReadP50US: st.ReadP50Micros, ReadP99US: st.ReadP99Micros,
		Activations: st.LayerExpertActivations, Running: []slotRunning{}, Devices: st.Devices,
	}
	if v.Devices == nil {
		v.Devices = []engine.Device{}
	}
	if v.Activations == nil {
		v.Activations = [][]int64{}
	}
	for _, sl := range slots.Slots {
		if sl.Busy {
			v.Running = append(v.Running, slotRunning{ID: sl.ID, Decoded: sl.Decoded})
		}
	}
	w.Header().Set("Cache-Control", "no-store")
	writeJSON(w, http.StatusOK, v)
}

// processRSS prefers the kernel's figure for this process and falls back to the engine's; a model
// held by a separate engine process (--rpc) adds that process's.
func processRSS(st engine.Stats) int64 {
	if rss := selfRSS(); rss > 0 {
		return rss + st.EngineProcessRSSBytes
	}
	return st.RSSBytes
}
