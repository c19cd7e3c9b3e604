package repl

import (
	"strings"
	"testing"

	"github.com/expertsniper/expertsniper/engine"
)

// TestStreamModeSpeaksOfLayers: the status line and /stats of a dense model streamed layer by layer
// report the layers cached and read ahead, not an expert hit rate.
func TestStreamModeSpeaksOfLayers(t *testing.T) {
	before := engine.Stats{CacheHits: 10, CacheMisses: 30, ReadAheadHits: 29}
	after := engine.Stats{RSSBytes: 1 << 30, BytesRead: 1 << 30, CacheHits: 26, CacheMisses: 94, ReadAheadHits: 92}
	line := strings.Join(streamingParts(before, after, "stream"), " · ")
	if !strings.Contains(line, "layers cached 20%") || !strings.Contains(line, "read ahead 79%") || strings.Contains(line, "hit ") {
		t.Fatalf("stream status line: %q", line)
	}
	if line := strings.Join(streamingParts(before, after, "sniper"), " · "); !strings.Contains(line, "hit 20%") {
		t.Fatalf("sniper status line: %q", line)
	}
	report := statsReport(engine.ModelInfo{Name: "dense.gguf", Mode: "stream", Slots: 1}, after, Totals{}, "")
	if !strings.Contains(report, "26 layers from the cache, 94 layers read (92 of them ahead") || !strings.Contains(report, "21.7% from the cache") {
		t.Fatalf("stream /stats:\n%s", report)
	}
}
