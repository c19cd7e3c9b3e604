package plan

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/expertsniper/expertsniper/bytesize"
)

// Report is what `agent inspect --json` prints. Field names are stable for scripts.
type Report struct {
	Model *Model `json:"model"`
	Plan  *Plan  `json:"plan"`
}

// formatCount prints parameter counts the way model names do: 30.5B, 3.3B, 620M.
func formatCount(n int64) string {
	switch {
	case n >= 1e9:
		return fmt.Sprintf("%.2fB", float64(n)/1e9)
	case n >= 1e6:
		return fmt.Sprintf("%.1fM", float64(n)/1e6)
	case n >= 1e3:
		return fmt.Sprintf("%.1fK", float64(n)/1e3)
	}
	return fmt.Sprint(n)
}

// WriteText prints the report for people.
func (r Report) WriteText(w io.Writer) error {
	m, p := r.Model, r.Plan
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	line := func(k, format string, args ...any) { fmt.Fprintf(tw, "  %s\t%s\n", k, fmt.Sprintf(format, args...)) }

	fmt.Fprintf(tw, "%s\n", m.Path)
	line("name", "%s", m.Name)
	line("architecture", "%s", m.Architecture)
	parts := ""
	if m.Parts > 1 {
		parts = fmt.Sprintf(" in %d parts (merge them for sniper/stream mode: agent pull merges by default)", m.Parts)
	}
	line("file size", "%s (%d bytes)%s", bytesize.Format(m.FileSize), m.FileSize, parts)
	active := ""
	if m.MoE {
		active = fmt.Sprintf(", %s active per token (%.1f%%)", formatCount(m.ActiveParameters),
			100*float64(m.ActiveParameters)/float64(max(m.Parameters, 1)))
	}
	line("parameters", "%s%s", formatCount(m.Parameters), active)
	line("layers", "%d (%d with attention)", m.Layers, m.AttentionLayers)
	line("embedding", "%d, %d heads / %d KV heads, head dim %d/%d", m.Embedding, m.Heads, m.KVHeads, m.KeyLength, m.ValueLength)
	line("context length", "%d (trained)", m.ContextLength)
	line("vocabulary", "%d tokens", m.Vocab)
	line("chat template", "%s", map[bool]string{true: "yes", false: "no (a plain fallback is used)"}[m.ChatTemplate])
	if m.MoE {
		shared := ""
		if m.SharedExperts {
			shared = " + shared expert"
		}
		line("experts", "%d per layer, %d used per token%s, expert FFN %d", m.Experts, m.ExpertsUsed, shared, m.ExpertFF)
		line("bytes per expert", "%s", describeExpertBytes(m.ExpertBytes))
		if m.FusedGateUp {
			line("", "(qwen35moe: gate+up are read as one fused slice, then down)")
		}
	} else {
		line("experts", "none (dense); stream mode reads each layer's FFN (%s per layer)", bytesize.Format(maxOf(m.LayerStreamBytes)))
	}
	var types []string
	for _, t := range m.Types {
		types = append(types, fmt.Sprintf("%s ×%d (%s)", t.Type, t.Tensors, bytesize.Format(t.Bytes)))
	}
	line("tensor types", "%s", strings.Join(types, ", "))
	streamed := "experts"
	if !m.MoE {
		streamed = "dense FFNs"
	}
	line("weights", "%s pinned + %s streamable (%s)", bytesize.Format(m.PinnedBytes), bytesize.Format(m.StreamedBytes), streamed)

	kvType := p.KVType
	if p.KVTypeV != p.KVType {
		kvType = "K " + p.KVType + ", V " + p.KVTypeV
	}
	fmt.Fprintf(tw, "\nmemory plan for %s (%s), context %d, KV cache %s\n", bytesize.Format(p.RAMBudget), p.RAMSource, p.Context, kvType)
	line("pinned weights", "%s", bytesize.Format(p.PinnedBytes))
	line("KV cache", "%s", bytesize.Format(p.KVCacheBytes))
	if p.RecurrentStateBytes > 0 {
		line("recurrent state", "%s", bytesize.Format(p.RecurrentStateBytes))
	}
	if p.CheckpointBytes > 0 {
		line("context checkpoints", "%s", bytesize.Format(p.CheckpointBytes))
	}
	line("compute buffers", "%s (estimate)", bytesize.Format(p.ComputeBytes))
	line("layer working set", "%s", bytesize.Format(p.LayerWorkingSet))
	if p.StagingBytes > 0 {
		line("read staging", "%s (reads converted to llama.cpp's repacked layout)", bytesize.Format(p.StagingBytes))
	}
	line("in RAM needs", "%s", bytesize.Format(p.InRAMBytes))
	line("streaming needs", "at least %s", bytesize.Format(p.StreamingMinBytes))
	switch p.Mode {
	case "ram":
		line("cache for "+streamed, "not needed: the whole model fits")
	case "none":
		line("cache for "+streamed, "none: the budget is too small")
	default:
		extra := ""
		if m.MoE {
			extra = fmt.Sprintf(", ~%d experts", p.CacheExperts)
		}
		line("cache for "+streamed, "%s (%.1f%% of the streamable bytes%s)", bytesize.Format(p.CacheBytes), 100*p.CacheFraction, extra)
	}
	if p.Mode == "ram" {
		line("read per token", "nothing in RAM mode (%s at 0%% cache hits if streamed)", bytesize.Format(p.TokenReadBytes))
	} else if m.MoE {
		line("read per token", "%s at 0%% cache hits; ~%s at the hit rate of uniform routing", bytesize.Format(p.TokenReadBytes), bytesize.Format(p.ExpectedReadBytes))
	} else {
		line("read per token", "%s at 0%% cache hits; ~%s with the first layers that fit kept in the cache", bytesize.Format(p.TokenReadBytes), bytesize.Format(p.ExpectedReadBytes))
	}
	line("disk", "%.2f GB/s (%s)", p.DiskBytesPerSec/1e9, p.DiskSource)
	switch {
	case p.Mode == "ram":
		line("expected speed", "compute-bound (no disk reads per token)")
	case p.TokPerSecHigh == 0 && p.TokPerSecLow > 0:
		line("expected speed", "≥ %.2f tok/s disk-bound; not disk-bound once the cache is warm", p.TokPerSecLow)
	case p.TokPerSecLow > 0 && p.TokPerSecHigh-p.TokPerSecLow < 0.005*p.TokPerSecLow:
		line("expected speed", "%.2f tok/s (disk-bound; compute may limit further)", p.TokPerSecLow)
	case p.TokPerSecLow > 0:
		line("expected speed", "%.2f–%.2f tok/s (disk-bound; compute may limit further)", p.TokPerSecLow, p.TokPerSecHigh)
	}
	if p.Mode == "none" {
		line("recommended", "does not fit; give at least --ram %s", FlagSize(p.StreamingMinBytes+(1<<20)))
	} else {
		line("recommended", "%s", p.Flags)
	}
	for _, n := range p.Notes {
		line("note", "%s", n)
	}
	return tw.Flush()
}

func maxOf(xs []int64) int64 {
	var m int64
	for _, x := range xs {
		m = max(m, x)
	}
	return m
}

// describeExpertBytes prints one value when all layers agree, else the range.
func describeExpertBytes(b []int64) string {
	if len(b) == 0 {
		return "-"
	}
	lo, hi := b[0], b[0]
	for _, x := range b {
		lo, hi = min(lo, x), max(hi, x)
	}
	if lo == hi {
		return fmt.Sprintf("%s (%d bytes) per layer", bytesize.Format(lo), lo)
	}
	return fmt.Sprintf("%s–%s per layer (%d–%d bytes; K-quant mixes vary by layer)", bytesize.Format(lo), bytesize.Format(hi), lo, hi)
}
