package plan

import (
	"fmt"
	"math"
	"strings"

	"github.com/expertsniper/expertsniper/bytesize"
	"github.com/expertsniper/expertsniper/sniper"
)

// KV cache element sizes in bytes (ggml block size ÷ elements per block).
var kvTypeBytes = map[string]float64{"f32": 4, "f16": 2, "bf16": 2, "q8_0": 34.0 / 32, "q4_0": 18.0 / 32, "q4_1": 20.0 / 32, "q5_0": 22.0 / 32, "q5_1": 24.0 / 32}

// DefaultDiskBytesPerSec is assumed when the disk cannot be probed (no direct I/O, e.g. tmpfs): a
// conservative figure for the NVMe SSDs of current laptops and cloud volumes (measured 2.3–2.9 GB/s
// for expert-sized direct reads on this project's CI machines; Apple Silicon SSDs read faster).
const DefaultDiskBytesPerSec = 2.0e9

// DefaultContext is the context size planned for when none is given (capped by the trained context).
const DefaultContext = 4096

// microBatch is llama.cpp's default n_ubatch: the tokens of one graph evaluation.
const microBatch = 512

// RuntimeOverhead covers what is not weights, KV or compute buffers: the program and its libraries,
// the tokenizer, the Go runtime and its garbage, llama.cpp's bookkeeping, thread stacks, and the
// edges of huge pages next to streamed tensors. Measured on a 48-layer test model under a 512 MiB
// memory cgroup: 18 MiB before the load, and the peak RSS 8 MiB above a budget planned with 64 MiB
// (cmd/agent/run_memcap_test.go), hence 96.
const RuntimeOverhead = 96 << 20

// Options are the inputs of a memory plan.
type Options struct {
	RAM       int64  // the memory budget for the model, bytes
	RAMSource string // where RAM came from, for the report ("--ram", "MemAvailable - 10%", ...)
	Context   int    // tokens of context; 0 = min(DefaultContext, trained)
	KVType    string // KV cache type of K: f16 (default), q8_0, q4_0
	KVTypeV   string // KV cache type of V; "" = same as KVType
	// DiskBytesPerSec is the sustained direct-read speed; DiskSource says how it was obtained.
	DiskBytesPerSec float64
	DiskSource      string
	// Repack plans for streamed reads converted into llama.cpp's repacked layout (--repack, or a cache
	// that holds every streamed weight: engine/local.Decision.Repack): they are staged in bounce
	// buffers, which count. Otherwise streamed reads land in place.
	Repack bool
	// Sequences is how many sequences the context holds (slots; 0 counts as 1): each has a
	// recurrent state of its own. Checkpoints is how many context checkpoints each keeps, a
	// recurrent state each (engine/local's Options.Checkpoints).
	Sequences, Checkpoints int
}

// Plan is the memory plan of one model for one budget. Field names are stable (--json).
type Plan struct {
	RAMBudget int64  `json:"ram_budget"`
	RAMSource string `json:"ram_source"`
	Context   int    `json:"context"`
	KVType    string `json:"kv_type"`
	KVTypeV   string `json:"kv_type_v"`

	KVCacheBytes        int64 `json:"kv_cache_bytes"`
	RecurrentStateBytes int64 `json:"recurrent_state_bytes"` // every sequence's
	CheckpointBytes     int64 `json:"checkpoint_bytes"`      // context checkpoints: recurrent states kept
	ComputeBytes        int64 `json:"compute_bytes"`         // estimate: llama.cpp's compute buffers and runtime overhead
	PinnedBytes         int64 `json:"pinned_bytes"`          // weights that stay in RAM in sniper/stream mode
	StreamedBytes       int64 `json:"streamed_bytes"`
	// InRAMBytes is what running fully in RAM needs; StreamingMinBytes the least sniper/stream mode
	// needs (pinned + KV + compute + one layer's streamed working set, no cache).
	InRAMBytes        int64 `json:"in_ram_bytes"`
	StreamingMinBytes int64 `json:"streaming_min_bytes"`
	LayerWorkingSet   int64 `json:"layer_working_set_bytes"`
	// StagingBytes are the bounce buffers streamed reads are converted from into llama.cpp's
	// repacked layout (sniper.StagingBytes; 0 when nothing streamed is repacked), part of
	// StreamingMinBytes.
	StagingBytes int64 `json:"staging_bytes"`

	Mode  string `json:"mode"`  // "ram", "sniper", "stream" or "none" (does not fit at all)
	Flags string `json:"flags"` // the flags to pass to agent run/serve
	// CacheBytes is the expert (or FFN) cache the budget leaves; CacheFraction the share of the
	// streamed bytes it holds.
	CacheBytes    int64   `json:"cache_bytes"`
	CacheExperts  int64   `json:"cache_experts"` // how many experts of mean size fit (MoE)
	CacheFraction float64 `json:"cache_fraction"`

	TokenReadBytes    int64   `json:"token_read_bytes"`    // at 0% cache hits
	ExpectedReadBytes int64   `json:"expected_read_bytes"` // at the hit rate of uniform routing
	DiskBytesPerSec   float64 `json:"disk_bytes_per_sec"`
	DiskSource        string  `json:"disk_source"`
	// Disk-bound decode speed: at 0% hits (low) and at the uniform-routing hit rate (high; real routing
	// is skewed, so hits are usually better). 0 when nothing is read per token (in RAM, or all cached).
	TokPerSecLow  float64 `json:"tok_per_sec_low"`
	TokPerSecHigh float64 `json:"tok_per_sec_high"`

	Notes []string `json:"notes"`
}

// KVCacheBytes is the K and V cache of n tokens for the model's attention layers.
func KVCacheBytes(m *Model, n int, kType, vType string) (int64, error) {
	kb, ok := kvTypeBytes[strings.ToLower(kType)]
	if !ok {
		return 0, fmt.Errorf("KV cache type %q: want one of f16, q8_0, q4_0, f32, bf16, q4_1, q5_0, q5_1", kType)
	}
	vb, ok := kvTypeBytes[strings.ToLower(vType)]
	if !ok {
		return 0, fmt.Errorf("KV cache type %q: want one of f16, q8_0, q4_0, f32, bf16, q4_1, q5_0, q5_1", vType)
	}
	perToken := float64(m.AttentionLayers*m.KVHeads) * (float64(m.KeyLength)*kb + float64(m.ValueLength)*vb)
	return int64(math.Ceil(perToken * float64(n))), nil
}

// computeBytes estimates llama.cpp's CPU compute buffers (n_ubatch 512, flash attention on, as
// llama.cpp picks on CPU) plus a runtime allowance. The graph allocator reuses memory, so the size is
// the peak of one micro-batch: the larger of the logits (n_vocab floats per token) and Gated
// DeltaNet's chunked state (about 23 floats per ssm.inner_size per token), plus the attention mask
// (n_ctx f16 per token) and a few hidden-state-wide tensors. Calibrated against llama.cpp b11669's
// "compute buffer size" on generated models: Qwen3-30B-A3B shape 320.8 MiB (estimate 341 with a
// 64 MiB allowance) at 4096 context and 348.8 (369) at 32768; Qwen3.5-35B-A3B shape 509.0 (529); tiny
// test models 9.5 (9.9–14.8). The allowance is now RuntimeOverhead (32 MiB more).
func computeBytes(m *Model, n int) int64 {
	widest := max(4*int64(m.Vocab), 4*23*int64(m.SSMInner))
	perToken := widest + 2*int64(n) + 4*10*int64(m.Embedding)
	return microBatch*perToken + RuntimeOverhead
}

// StateBytes is what the sequences' state takes: the KV cache, the recurrent states and the context
// checkpoints.
func (p *Plan) StateBytes() int64 { return p.KVCacheBytes + p.RecurrentStateBytes + p.CheckpointBytes }

// Make plans m for the options.
func Make(m *Model, o Options) (*Plan, error) {
	if o.RAM <= 0 {
		return nil, fmt.Errorf("plan: the RAM budget must be positive, got %d", o.RAM)
	}
	n := o.Context
	if n <= 0 {
		n = DefaultContext
		if m.ContextLength > 0 && m.ContextLength < n {
			n = m.ContextLength
		}
	}
	kvType := strings.ToLower(o.KVType)
	if kvType == "" {
		kvType = "f16"
	}
	kvTypeV := strings.ToLower(o.KVTypeV)
	if kvTypeV == "" {
		kvTypeV = kvType
	}
	seqs := max(o.Sequences, 1)
	kv, err := KVCacheBytes(m, n, kvType, kvTypeV)
	if err != nil {
		return nil, err
	}
	p := &Plan{
		RAMBudget: o.RAM, RAMSource: o.RAMSource, Context: n, KVType: kvType, KVTypeV: kvTypeV,
		KVCacheBytes: kv, RecurrentStateBytes: m.RecurrentStateBytes * int64(seqs),
		CheckpointBytes: m.RecurrentStateBytes * int64(seqs) * int64(max(o.Checkpoints, 0)), ComputeBytes: computeBytes(m, n),
		PinnedBytes: m.PinnedBytes, StreamedBytes: m.StreamedBytes, LayerWorkingSet: m.MaxLayerBytes(),
		TokenReadBytes: m.TokenReadBytes(), DiskBytesPerSec: o.DiskBytesPerSec, DiskSource: o.DiskSource,
		Notes: []string{},
	}
	if p.DiskBytesPerSec <= 0 {
		p.DiskBytesPerSec, p.DiskSource = DefaultDiskBytesPerSec, "default (not measured)"
	}
	if m.ContextLength > 0 && n > m.ContextLength {
		p.Notes = append(p.Notes, fmt.Sprintf("context %d is longer than the %d tokens the model was trained on", n, m.ContextLength))
	}
	base := p.StateBytes() + p.ComputeBytes
	p.InRAMBytes = m.TensorBytes + base
	if m.RepackStreamed && o.Repack {
		// The pool's bound, or for a small model what it can hold at most: a layer's whole
		// streamed bytes being read, and as many again in free buffers.
		p.StagingBytes = min(sniper.StagingBytes(sniper.DefaultReaders), 2*m.MaxLayerBytes())
	}
	p.StreamingMinBytes = m.PinnedBytes + base + p.LayerWorkingSet + p.StagingBytes
	streamMode := "sniper"
	if !m.MoE {
		streamMode = "stream"
	}
	switch {
	case p.InRAMBytes <= o.RAM:
		p.Mode = "ram"
		p.Flags = "--mode ram"
		if m.StreamedBytes > 0 {
			p.CacheBytes, p.CacheFraction = m.StreamedBytes, 1
		}
		p.Notes = append(p.Notes, fmt.Sprintf("the whole model (%s) fits: nothing is read from disk per token", bytesize.Format(p.InRAMBytes)))
	case m.StreamedBytes == 0:
		p.Mode = "none"
		p.Notes = append(p.Notes, fmt.Sprintf("nothing of this model can be streamed, and it needs %s", bytesize.Format(p.InRAMBytes)))
	case p.StreamingMinBytes > o.RAM:
		p.Mode = "none"
		p.Notes = append(p.Notes, fmt.Sprintf("even %s mode needs at least %s (pinned weights, KV cache, compute buffers and one layer's working set); try a smaller context or a q8_0/q4_0 KV cache",
			streamMode, bytesize.Format(p.StreamingMinBytes)))
	default:
		p.Mode = streamMode
		p.CacheBytes = o.RAM - p.StreamingMinBytes
		p.CacheFraction = math.Min(1, float64(p.CacheBytes)/float64(m.StreamedBytes))
		// --ram alone: run, serve and the REPL derive the same cache from it (engine/local.Decide);
		// a --cache rounded apart from it could ask for more than the budget holds.
		p.Flags = fmt.Sprintf("--mode %s --ram %s", streamMode, FlagSize(o.RAM))
	}
	if m.MoE && m.MeanExpertBytes() > 0 {
		p.CacheExperts = min(p.CacheBytes/m.MeanExpertBytes(), int64(m.Experts*m.Layers))
	}
	p.ExpectedReadBytes = int64(float64(p.TokenReadBytes) * (1 - p.CacheFraction))
	if p.Mode == "sniper" || p.Mode == "stream" || p.Mode == "none" {
		if p.TokenReadBytes > 0 {
			p.TokPerSecLow = p.DiskBytesPerSec / float64(p.TokenReadBytes)
		}
		if p.ExpectedReadBytes > 0 {
			p.TokPerSecHigh = p.DiskBytesPerSec / float64(p.ExpectedReadBytes)
		}
		if !m.MoE && p.Mode == "stream" && p.CacheFraction < 1 {
			p.Notes = append(p.Notes, "a dense model reads every layer every token: the cache keeps the first layers that fit for good, and each other layer is read while the one before computes")
		}
	}
	if m.MoE && p.Mode == "sniper" {
		p.Notes = append(p.Notes, fmt.Sprintf("decode reads %d of %d experts per layer; prefill may touch all of a layer's experts (%s), budgeted above",
			m.ExpertsUsed, m.Experts, bytesize.Format(p.LayerWorkingSet)))
	}
	if m.FusedGateUp {
		p.Notes = append(p.Notes, "qwen35moe: llama.cpp computes gate and up as one fused slice; each expert is read as gate+up+down")
	}
	return p, nil
}

// FlagSize formats n for a --ram/--cache flag, rounded down to whole MiB so that the flag never
// promises more than the plan has: "12GiB" when exact, else "12544MiB".
func FlagSize(n int64) string {
	mib := n >> 20
	if mib > 0 && mib%1024 == 0 {
		return fmt.Sprintf("%dGiB", mib/1024)
	}
	return fmt.Sprintf("%dMiB", mib)
}

// ParseSize parses sizes like "8GiB", "512MiB", "16G", "1.5GB", "4096" (bytes). K/M/G/T and
// KiB/MiB/GiB/TiB are powers of 1024; KB/MB/GB/TB are powers of 1000.
func ParseSize(s string) (int64, error) {
	t := strings.TrimSpace(s)
	i := 0
	for i < len(t) && (t[i] >= '0' && t[i] <= '9' || t[i] == '.') {
		i++
	}
	num, unit := t[:i], strings.ToUpper(strings.TrimSpace(t[i:]))
	var v float64
	if _, err := fmt.Sscanf(num, "%g", &v); err != nil || num == "" {
		return 0, fmt.Errorf("size %q: want a number with an optional unit, e.g. 8GiB or 512MiB", s)
	}
	mult := map[string]float64{"": 1, "B": 1,
		"K": 1 << 10, "KIB": 1 << 10, "KB": 1e3, "M": 1 << 20, "MIB": 1 << 20, "MB": 1e6,
		"G": 1 << 30, "GIB": 1 << 30, "GB": 1e9, "T": 1 << 40, "TIB": 1 << 40, "TB": 1e12}
	f, ok := mult[unit]
	if !ok {
		return 0, fmt.Errorf("size %q: unknown unit %q (use B, KiB, MiB, GiB, TiB, KB, MB, GB, TB)", s, t[i:])
	}
	b := v * f
	if b > math.MaxInt64/2 {
		return 0, fmt.Errorf("size %q is too large", s)
	}
	return int64(b), nil
}
