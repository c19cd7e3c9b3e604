package main

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"net/http"
	"os/exec"
	"regexp"
	"strconv"
	"testing"
	"time"

	"github.com/expertsniper/expertsniper/modelgen/testmodels"
)

// stockServer starts the stock llama-server of the same build (the reference peer, on PATH in the
// build root) on model and returns its base URL once it is healthy. A missing binary fails the test:
// the comparison is the point.
func stockServer(t *testing.T, model string, args ...string) string {
	t.Helper()
	bin, err := exec.LookPath("llama-server")
	if err != nil {
		t.Fatalf("llama-server (the reference peer) is not on PATH: run the tests in the build root (./build.sh test): %v", err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	port := l.Addr().(*net.TCPAddr).Port
	l.Close()
	var log bytes.Buffer
	cmd := exec.Command(bin, append([]string{"-m", model, "--host", "127.0.0.1", "--port", strconv.Itoa(port)}, args...)...)
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	exited := make(chan error, 1)
	go func() { exited <- cmd.Wait() }()
	t.Cleanup(func() {
		cmd.Process.Kill()
		<-exited
	})
	url := fmt.Sprintf("http://127.0.0.1:%d", port)
	deadline := time.Now().Add(3 * time.Minute)
	for time.Now().Before(deadline) {
		select {
		case err := <-exited:
			t.Fatalf("llama-server exited before it was healthy: %v\n%s", err, log.String())
		default:
		}
		if resp, err := http.Get(url + "/health"); err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return url
			}
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Fatalf("llama-server not healthy after 3 minutes:\n%s", log.String())
	return ""
}

func TestServeBenchAgainstAStockLlamaServerPrintsBothAndTheRatio(t *testing.T) {
	model := testmodels.Path(t, "qwen3moe-q8_0")
	stock := stockServer(t, model, "-np", "2", "-c", "1024", "-t", "2")
	var out, errOut bytes.Buffer
	code := run(context.Background(), []string{"agent", "serve-bench", "-m", model, "-np", "2", "-c", "1024", "-t", "2",
		"--against", stock, "--loads", "1,2", "--requests", "2", "--max-tokens", "4"}, &IOStreams{Out: &out, ErrOut: &errOut})
	if code != exitOK {
		t.Fatalf("exit %d: %s%s", code, out.String(), errOut.String())
	}
	// One row per load: clients, both throughputs (tokens were generated on both sides), the ratio.
	row := regexp.MustCompile(`(?m)^\s+(\d+)\s+([0-9.]+)\s+([0-9.]+)\s+([0-9.]+)×`)
	rows := row.FindAllStringSubmatch(out.String(), -1)
	if len(rows) != 2 || rows[0][1] != "1" || rows[1][1] != "2" {
		t.Fatalf("want rows for 1 and 2 clients:\n%s", out.String())
	}
	for _, r := range rows {
		agent, _ := strconv.ParseFloat(r[2], 64)
		stock, _ := strconv.ParseFloat(r[3], 64)
		if agent <= 0 || stock <= 0 {
			t.Fatalf("a server generated nothing at %s clients:\n%s", r[1], out.String())
		}
	}
	if !regexp.MustCompile(`agent serve, 2 clients vs 1: [0-9.]+× the tokens/s`).MatchString(out.String()) {
		t.Fatalf("no scaling line:\n%s", out.String())
	}
	t.Logf("\n%s", out.String())
}
