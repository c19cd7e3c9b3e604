package repl

import (
	"fmt"
	"strings"
	"time"

	"github.com/expertsniper/expertsniper/agentmode"
	"github.com/expertsniper/expertsniper/bytesize"
	"github.com/expertsniper/expertsniper/engine"
)

// statusLine summarises one answer: speed, tokens and time, and in the streaming modes what the
// sniper did meanwhile (RSS, bytes read from disk, expert cache hit rate; in stream mode the layers
// cached and read ahead).
func statusLine(reply agentmode.Reply, elapsed time.Duration, before, after engine.Stats, mode string, stopped bool) string {
	var parts []string
	if reply.Route != "" {
		parts = append(parts, string(reply.Route))
	}
	t := reply.Answer
	parts = append(parts, plural(t.PredictedTokens, "token"))
	if t.PredictedMS > 0 && t.PredictedTokens > 0 {
		parts = append(parts, fmt.Sprintf("%.1f tok/s", float64(t.PredictedTokens)/(t.PredictedMS/1000)))
	}
	if t.PromptTokens > 0 || t.CachedTokens > 0 {
		p := fmt.Sprintf("prompt %d", t.PromptTokens)
		if t.CachedTokens > 0 {
			p += fmt.Sprintf(" (+%d cached)", t.CachedTokens)
		}
		if t.PromptMS > 0 && t.PromptTokens > 0 {
			p += fmt.Sprintf(" at %.0f tok/s", float64(t.PromptTokens)/(t.PromptMS/1000))
		}
		parts = append(parts, p)
	}
	if reply.Usage.Calls > 1 {
		parts = append(parts, plural(reply.Usage.Calls, "call"))
	}
	parts = append(parts, fmt.Sprintf("%.1fs", elapsed.Seconds()))
	parts = append(parts, streamingParts(before, after, mode)...)
	line := strings.Join(parts, " · ")
	if stopped {
		line = "stopped · " + line
	}
	return dim(line)
}

func streamingParts(before, after engine.Stats, mode string) []string {
	var parts []string
	if after.RSSBytes > 0 {
		parts = append(parts, "RSS "+bytesize.FormatTenths(after.RSSBytes))
	}
	if mode == "sniper" || mode == "stream" {
		parts = append(parts, "read "+bytesize.FormatTenths(after.BytesRead-before.BytesRead))
		hits, misses := after.CacheHits-before.CacheHits, after.CacheMisses-before.CacheMisses
		switch {
		case hits+misses == 0:
		case mode == "stream":
			// Layers, not experts: what the cache held, and how many of the rest were read ahead.
			ahead := after.ReadAheadHits - before.ReadAheadHits
			parts = append(parts, fmt.Sprintf("layers cached %.0f%%, read ahead %.0f%%", 100*float64(hits)/float64(hits+misses), 100*float64(ahead)/float64(hits+misses)))
		default:
			parts = append(parts, fmt.Sprintf("hit %.0f%%", 100*float64(hits)/float64(hits+misses)))
		}
	}
	return parts
}

// statsReport is the text of /stats.
func statsReport(info engine.ModelInfo, s engine.Stats, totals Totals, kv string) string {
	var b strings.Builder
	fmt.Fprintf(&b, "model      %s (%s), %s mode, %s, context %d (trained %d)\n", info.Name, info.Architecture,
		info.Mode, plural(info.Slots, "slot"), info.Context, info.ContextTrain)
	if info.SizeBytes > 0 {
		fmt.Fprintf(&b, "size       %s, %d parameters\n", bytesize.FormatTenths(int64(info.SizeBytes)), info.Parameters)
	}
	if kv != "" {
		fmt.Fprintf(&b, "kv         %s\n", kv)
	}
	if s.RSSBytes > 0 {
		fmt.Fprintf(&b, "memory     RSS %s\n", bytesize.FormatTenths(s.RSSBytes))
	}
	fmt.Fprintf(&b, "engine     %s, %d generated since load\n", plural(s.PromptTokens, "prompt token"), s.GeneratedTokens)
	if info.Mode == "sniper" || info.Mode == "stream" || s.Reads > 0 {
		fmt.Fprintf(&b, "disk       %s in %s", bytesize.FormatTenths(s.BytesRead), plural(s.Reads, "read"))
		// The bytes were read for the prompts and the generated tokens alike: per token evaluated,
		// not per generated token (which would count every prompt's reads against the answers).
		if n := s.PromptTokens + s.GeneratedTokens; n > 0 {
			fmt.Fprintf(&b, " (%s per token, prompt and generated)", bytesize.FormatTenths(s.BytesRead/n))
		}
		fmt.Fprintf(&b, ", latency p50 %d µs, p99 %d µs\n", s.ReadP50Micros, s.ReadP99Micros)
		hit := 0.0
		if s.CacheHits+s.CacheMisses > 0 {
			hit = 100 * float64(s.CacheHits) / float64(s.CacheHits+s.CacheMisses)
		}
		if info.Mode == "stream" {
			fmt.Fprintf(&b, "cache      %s of %s of layers' FFNs: %s from the cache, %s read (%d of them ahead, while the layer before computed); %.1f%% from the cache\n",
				bytesize.FormatTenths(s.CacheBytes), bytesize.FormatTenths(s.CacheBudget), plural(s.CacheHits, "layer"), plural(s.CacheMisses, "layer"), s.ReadAheadHits, hit)
		} else {
			fmt.Fprintf(&b, "cache      %s of %s, %s, %s (%.1f%% hit rate)\n", bytesize.FormatTenths(s.CacheBytes),
				bytesize.FormatTenths(s.CacheBudget), plural(s.CacheHits, "hit"), pluralOf(s.CacheMisses, "miss", "misses"), hit)
		}
	}
	fmt.Fprintf(&b, "session    %s, %s, %s (%d cached), %s", plural(totals.Turns, "turn"),
		plural(totals.Calls, "call"), plural(totals.PromptTokens, "input token"), totals.CachedTokens, plural(totals.GeneratedTokens, "output token"))
	if totals.GeneratedMS > 0 {
		fmt.Fprintf(&b, ", %.1f tok/s average", float64(totals.GeneratedTokens)/(totals.GeneratedMS/1000))
	}
	return b.String()
}
