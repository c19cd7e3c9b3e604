package main

import (
	"bytes"
	"context"
	"os"
	"strings"
	"testing"
)

func TestDemoGeneratesOnceAndShowsExactStreaming(t *testing.T) {
	dir := t.TempDir()
	for i := 0; i < 2; i++ {
		var out, errOut bytes.Buffer
		streams := &IOStreams{In: strings.NewReader(""), Out: &out, ErrOut: &errOut}
		if err := demoRun(context.Background(), streams, &demoOptions{Dir: dir, Tokens: 8, Threads: 2, Cache: demoCache}); err != nil {
			t.Fatalf("demo: %v\n%s%s", err, out.String(), errOut.String())
		}
		generated := strings.Contains(errOut.String(), "generating the demo model")
		if generated != (i == 0) {
			t.Fatalf("run %d: generated the model = %v (want only on the first run)", i, generated)
		}
		for _, want := range []string{"sniper mode", "hit rate", "✓ exact", "read"} {
			if !strings.Contains(out.String(), want) {
				t.Fatalf("demo output lacks %q:\n%s", want, out.String())
			}
		}
	}
	entries, _ := os.ReadDir(dir)
	if len(entries) != 1 {
		t.Fatalf("demo dir holds %d files, want just the model", len(entries))
	}
}
