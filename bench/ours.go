package bench

import (
	"encoding/json"
	"fmt"
	"strconv"
)

// RunStats is the part of `agent run --stats-json FILE` the bench uses (field names as run.go writes
// them; they are stable).
type RunStats struct {
	Mode            string  `json:"mode"`
	PromptTokens    int     `json:"prompt_tokens"`
	GeneratedTokens int     `json:"generated_tokens"`
	PromptPerSec    float64 `json:"prompt_tok_per_sec"`
	DecodePerSec    float64 `json:"decode_tok_per_sec"`
	PeakRSSBytes    int64   `json:"peak_rss_bytes"`
	// Streaming modes: counters over the whole run, and the bytes read split at the end of prefill.
	BytesRead       int64   `json:"bytes_read"`
	Hits            int64   `json:"hits"`
	Misses          int64   `json:"misses"`
	HitRate         float64 `json:"hit_rate"`
	PromptBytesRead int64   `json:"prompt_bytes_read"`
	DecodeBytesRead int64   `json:"decode_bytes_read"`
	// DecodeEvals counts the generated tokens that were evaluated (the last one is only sampled).
	DecodeEvals      int     `json:"decode_evals"`
	DecodeBytesPerTk float64 `json:"decode_bytes_per_token"`
	// Prefill's cache lookups, so that decode's hit rate can be told apart (absent in older runs).
	PromptHits   *int64 `json:"prompt_hits"`
	PromptMisses *int64 `json:"prompt_misses"`
	// --rpc: bytes on the wire per generated token, and the weights sent while loading.
	RPCDecodeBytesPerToken float64 `json:"rpc_decode_bytes_per_token"`
	RPCLoadBytes           int64   `json:"rpc_load_bytes"`
	RPCLoadSeconds         float64 `json:"rpc_load_seconds"`
}

// ParseRunStats reads `agent run --stats-json` output and checks it has the timings the bench needs.
func ParseRunStats(data []byte) (RunStats, error) {
	var s RunStats
	if err := json.Unmarshal(data, &s); err != nil {
		return RunStats{}, fmt.Errorf("parse agent run statistics: %w (begins %q)", err, head(data, 120))
	}
	if s.PromptTokens <= 0 || s.PromptPerSec <= 0 {
		return RunStats{}, fmt.Errorf("parse agent run statistics: no prompt timing (prompt_tokens %d, prompt_tok_per_sec %g)", s.PromptTokens, s.PromptPerSec)
	}
	if s.GeneratedTokens <= 0 || s.DecodePerSec <= 0 {
		return RunStats{}, fmt.Errorf("parse agent run statistics: no generation timing (generated_tokens %d, decode_tok_per_sec %g)", s.GeneratedTokens, s.DecodePerSec)
	}
	return s, nil
}

// OursArgs are the `agent` arguments for one of our configurations (after the program name). Every
// mode runs with llama.cpp's default weight repacking (streaming reproduces the in-RAM run's numerics
// bit-exactly); rpc without it (the workers compute on plain buffers).
func OursArgs(w Workload, c Config, prompt, statsPath string) []string {
	mode := string(c.Kind)
	if c.Kind == KindRPC {
		mode = "ram"
	}
	args := []string{"run", "-m", w.Model, "-p", prompt, "-n", strconv.Itoa(w.GenTokens), "--temp", "0",
		"--threads", strconv.Itoa(w.Threads), "--mode", mode, "--stats-json", statsPath}
	switch c.Kind {
	case KindRPC:
		args = append(args, "--no-repack", "--rpc", w.RPC)
		if w.TensorSplit != "" {
			args = append(args, "--tensor-split", w.TensorSplit)
		}
	case KindSniper, KindStream:
		budget := "unlimited"
		if c.Budget >= 0 {
			budget = strconv.FormatInt(c.Budget, 10)
		}
		args = append(args, "--cache", budget)
		args = append(args, c.Flags...)
	}
	return args
}

// measurementFromRun turns our run's statistics into a measurement. Reads per token, disk throughput
// and the hit rate are decode's own (prefill's are split off; the hit rate covers the whole run only
// when the statistics lack prefill's lookups).
func measurementFromRun(c Config, s RunStats) Measurement {
	m := Measurement{Config: c, PromptTokens: s.PromptTokens, GenTokens: s.GeneratedTokens,
		PrefillTPS: s.PromptPerSec, DecodeTPS: s.DecodePerSec}
	m.clearOptional()
	if c.Kind == KindRPC {
		m.WirePerToken = Num(s.RPCDecodeBytesPerToken)
		if s.RPCLoadSeconds > 0 {
			m.WireLoadGBps = Num(float64(s.RPCLoadBytes) / s.RPCLoadSeconds / 1e9)
		}
		return m
	}
	if c.Kind != KindSniper && c.Kind != KindStream {
		return m
	}
	if s.DecodeEvals > 0 {
		m.ReadPerToken = Num(float64(s.DecodeBytesRead) / float64(s.DecodeEvals))
	}
	decodeSeconds := float64(s.GeneratedTokens) / s.DecodePerSec
	m.DiskGBps = Num(float64(s.DecodeBytesRead) / decodeSeconds / 1e9)
	hits, misses := s.Hits, s.Misses
	if s.PromptHits != nil && s.PromptMisses != nil {
		hits, misses = hits-*s.PromptHits, misses-*s.PromptMisses
	}
	if hits+misses > 0 {
		m.HitRate = Num(float64(hits) / float64(hits+misses))
	}
	return m
}
