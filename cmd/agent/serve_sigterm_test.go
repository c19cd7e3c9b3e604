package main

import (
	"bufio"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"os/exec"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/expertsniper/expertsniper/modelgen/testmodels"
)

// SIGTERM to the built binary while it generates: the non-streamed request gets 503 with a JSON
// error, and the stream ends with an error event; neither is a 200 with nothing in it (before, the
// non-streamed answer was an empty 200 and the stream just stopped).
func TestServeSIGTERMMidRequestAnswers503(t *testing.T) {
	bin := buildAgent(t)
	model := testmodels.Path(t, "qwen3moe-q8_0")
	cmd := exec.Command(bin, "serve", "-m", model, "--port", "0", "-np", "2", "--mode", "sniper", "--cache", "0")
	cmd.Env = append(os.Environ(), "XDG_DATA_HOME="+t.TempDir(), "XDG_CONFIG_HOME="+t.TempDir(), "XDG_STATE_HOME="+t.TempDir())
	var stderr syncBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Process.Kill()
	addr := regexp.MustCompile(`listening on (http://[0-9.:]+)`)
	deadline := time.Now().Add(3 * time.Minute)
	for !strings.Contains(stderr.String(), "model loaded") {
		if time.Now().After(deadline) {
			t.Fatalf("the server did not start:\n%s", stderr.String())
		}
		time.Sleep(20 * time.Millisecond)
	}
	base := addr.FindStringSubmatch(stderr.String())[1]

	type answer struct {
		status int
		body   string
		err    error
	}
	post := func(body string) chan answer {
		ch := make(chan answer, 1)
		go func() {
			resp, err := http.Post(base+"/completion", "application/json", strings.NewReader(body))
			if err != nil {
				ch <- answer{err: err}
				return
			}
			defer resp.Body.Close()
			data, err := io.ReadAll(resp.Body)
			ch <- answer{resp.StatusCode, string(data), err}
		}()
		return ch
	}
	// Both long: every token is read from disk (--cache 0), and only the context (4096) ends them
	// (greedy on this model never writes the end-of-generation token).
	plain := post(`{"prompt":"Once upon a time","n_predict":-1,"temperature":0}`)
	// The stream is read here: its first event arrives before the signal is sent.
	sresp, err := http.Post(base+"/completion", "application/json",
		strings.NewReader(`{"prompt":"Once upon a time","n_predict":-1,"temperature":0,"stream":true}`))
	if err != nil {
		t.Fatal(err)
	}
	defer sresp.Body.Close()
	events := bufio.NewReader(sresp.Body)
	if first, err := events.ReadString('\n'); err != nil || !strings.HasPrefix(first, "data: ") {
		t.Fatalf("the stream's first event: %q %v", first, err)
	}
	for {
		resp, err := http.Get(base + "/slots")
		if err == nil {
			var slots []struct {
				IsProcessing bool `json:"is_processing"`
			}
			json.NewDecoder(resp.Body).Decode(&slots)
			resp.Body.Close()
			if len(slots) == 2 && slots[0].IsProcessing && slots[1].IsProcessing {
				break
			}
		}
		if time.Now().After(deadline) {
			t.Fatal("the two requests never ran")
		}
		time.Sleep(20 * time.Millisecond)
	}
	time.Sleep(100 * time.Millisecond)
	if err := cmd.Process.Signal(syscall.SIGTERM); err != nil {
		t.Fatal(err)
	}

	a := <-plain
	var e struct {
		Error struct{ Type, Message string }
	}
	if a.err != nil || a.status != 503 || json.Unmarshal([]byte(a.body), &e) != nil || e.Error.Type != "unavailable_error" {
		t.Errorf("the non-streamed request on SIGTERM: %d %q %v", a.status, a.body, a.err)
	}
	rest, err := io.ReadAll(events)
	var last string
	sc := bufio.NewScanner(strings.NewReader(string(rest)))
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		if line := sc.Text(); strings.HasPrefix(line, "data: ") {
			last = strings.TrimPrefix(line, "data: ")
		}
	}
	if err != nil || !strings.Contains(last, `"error"`) || !strings.Contains(last, "shutting down") {
		t.Errorf("the stream on SIGTERM ended with %q (%v)", last, err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	select {
	case <-done:
	case <-time.After(2 * time.Minute):
		t.Fatalf("the server did not exit after SIGTERM:\n%s", stderr.String())
	}
}
