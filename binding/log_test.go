package binding

import (
	"strings"
	"sync"
	"testing"
)

func TestLoggerReceivesWholeLines(t *testing.T) {
	var mu sync.Mutex
	var lines []string
	levels := map[LogLevel]int{}
	SetLogger(LogInfo, func(l LogLevel, msg string) {
		mu.Lock()
		defer mu.Unlock()
		lines = append(lines, msg)
		levels[l]++
	})
	m := loadTiny(t)
	newCtx(t, m)
	SetLogger(0, nil)
	mu.Lock()
	defer mu.Unlock()
	if len(lines) == 0 {
		t.Fatal("no log lines while loading a model")
	}
	if levels[LogDebug] != 0 {
		t.Fatalf("debug lines delivered below the minimum level: %d", levels[LogDebug])
	}
	joined := strings.Join(lines, "\n")
	if !strings.Contains(joined, "qwen3moe") {
		t.Fatalf("log does not mention the architecture:\n%s", joined)
	}
	for _, l := range lines {
		if strings.Contains(l, "\n") {
			t.Fatalf("line with an embedded newline: %q", l)
		}
	}
	n := len(lines)
	mu.Unlock()
	m2 := loadTiny(t) // silenced: nothing more arrives
	_ = m2
	mu.Lock()
	if len(lines) != n {
		t.Fatalf("%d lines arrived after SetLogger(nil)", len(lines)-n)
	}
}
