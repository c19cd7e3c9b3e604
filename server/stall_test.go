package server

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/expertsniper/expertsniper/engine/local"
	"github.com/expertsniper/expertsniper/modelgen/testmodels"
	"github.com/expertsniper/expertsniper/sniper"
	"github.com/expertsniper/expertsniper/sniper/faultfs"
)

// TestStatsAnswerWhileASniperReadIsStalled: a request in sniper mode whose expert read hangs on the
// disk must not hold up /stats (nor anything else that reads the sniper's statistics): the sniper
// lets go of its lock while it reads.
func TestStatsAnswerWhileASniperReadIsStalled(t *testing.T) {
	var armed atomic.Bool
	stalled := make(chan struct{}, 1)
	release := make(chan struct{})
	var releaseOnce sync.Once
	unstall := func() { releaseOnce.Do(func() { close(release) }) }
	stall := faultfs.InjectorFunc(func(op faultfs.Op) faultfs.Fault {
		if op.Kind == faultfs.OpRead && armed.Load() {
			select {
			case stalled <- struct{}{}:
			default:
			}
			<-release
		}
		return faultfs.Fault{}
	})
	eng, err := local.Open(context.Background(), testmodels.Path(t, "qwen3moe-f32"), local.Options{
		Mode: "sniper", Cache: "0", Context: 256, Threads: 2,
		StreamFS: faultfs.Wrap(sniper.DirectFS{}, stall),
	})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if err := eng.Close(); err != nil {
			t.Errorf("close engine: %v", err)
		}
	})
	srv, err := New(Config{Host: "127.0.0.1", ContextDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.SetEngine(eng); err != nil {
		t.Fatal(err)
	}
	hs := httptest.NewServer(srv.Handler())
	t.Cleanup(hs.Close)
	// First of the cleanups: the engine's Close and the server's wait for the stalled read.
	t.Cleanup(unstall)

	armed.Store(true)
	done := make(chan error, 1)
	go func() {
		body := `{"prompt":"the cat sat on","n_predict":4,"temperature":0}`
		resp, err := hs.Client().Post(hs.URL+"/completion", "application/json", strings.NewReader(body))
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				err = &statusError{resp.StatusCode}
			}
		}
		done <- err
	}()
	select {
	case <-stalled:
	case err := <-done:
		t.Fatalf("the completion ended (%v) before any expert read: nothing stalled", err)
	case <-time.After(2 * time.Minute):
		t.Fatal("no expert read began within 2 minutes")
	}

	// The read is stalled now. /stats must answer (a generous bound: the machine may be loaded, but
	// a lock held across the read would block until the read is released, i.e. forever).
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	req, _ := http.NewRequestWithContext(ctx, "GET", hs.URL+"/stats", nil)
	resp, err := hs.Client().Do(req)
	if err != nil {
		t.Fatalf("/stats while a sniper read is stalled: %v", err)
	}
	var stats map[string]any
	err = json.NewDecoder(resp.Body).Decode(&stats)
	resp.Body.Close()
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("/stats: status %d, %v", resp.StatusCode, err)
	}
	if stats["mode"] != "sniper" {
		t.Fatalf("/stats mode %v, want sniper", stats["mode"])
	}

	armed.Store(false)
	unstall()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("the completion failed once its read was released: %v", err)
		}
	case <-time.After(5 * time.Minute):
		t.Fatal("the completion did not finish after its read was released")
	}
}

type statusError struct{ code int }

func (e *statusError) Error() string { return http.StatusText(e.code) }
