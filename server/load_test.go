package server

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/expertsniper/expertsniper/server/internal/fakeengine"
	"github.com/expertsniper/expertsniper/server/loadgen"
)

// A short version of `agent serve-bench`: 8 clients against 4 slots, every answer complete, the
// queue used, and memory flat.
func TestLoadEightClientsOnFourSlots(t *testing.T) {
	fake := fakeengine.New(4, 8192)
	fake.TokenDelay = time.Millisecond
	ts := newTestServer(t, fake)
	rep, err := loadgen.Run(context.Background(), loadgen.Config{URL: ts.URL, Clients: 8, Requests: 12, MaxTokens: 12,
		Stream: "mixed", SampleEvery: 20 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	var out strings.Builder
	rep.Print(&out)
	t.Logf("\n%s", out.String())
	if rep.Failed != 0 || rep.OK != 96 {
		t.Fatalf("%d of %d requests failed: %v", rep.Failed, rep.Requests, rep.Errors)
	}
	if c := fake.Counters(); c.MaxRunning != 4 || c.Completed != 96 {
		t.Fatalf("engine counters %+v: want 4 at once and 96 completed", c)
	}
	if rep.MaxQueue == 0 {
		t.Errorf("8 clients on 4 slots never queued")
	}
	// The process is the test binary here (client and server): allow for the GC's slack.
	if growth := rep.RSSGrowthAfterWarmup(); growth > 16<<20 {
		t.Errorf("RSS grew by %d MiB after warm-up", growth>>20)
	}
}
