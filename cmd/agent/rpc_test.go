package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/expertsniper/expertsniper/ggmlrpc"
	"github.com/expertsniper/expertsniper/modelgen/testmodels"
)

// rpcWorker is an `agent rpc-server` started by a test.
type rpcWorker struct {
	endpoint string
	cmd      *exec.Cmd
	log      *syncBuffer
}

// kill stops the worker as a crash would (SIGKILL) and waits for it.
func (w *rpcWorker) kill() {
	if w.cmd.Process != nil {
		_ = w.cmd.Process.Kill()
		_ = w.cmd.Wait()
	}
}

// startRPCWorker starts `bin rpc-server` on a free loopback port (or on endpoint when given) and
// waits until it answers the protocol's hello.
func startRPCWorker(t *testing.T, bin, endpoint string) *rpcWorker {
	t.Helper()
	if endpoint == "" {
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			t.Fatal(err)
		}
		endpoint = ln.Addr().String()
		ln.Close()
	}
	_, port, _ := net.SplitHostPort(endpoint)
	w := &rpcWorker{endpoint: endpoint, log: &syncBuffer{}}
	w.cmd = exec.Command(bin, "rpc-server", "--port", port, "--threads", "1")
	w.cmd.Stdout, w.cmd.Stderr = w.log, w.log
	if err := w.cmd.Start(); err != nil {
		t.Fatalf("start rpc-server: %v", err)
	}
	t.Cleanup(w.kill)
	deadline := time.Now().Add(60 * time.Second)
	for {
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		_, err := ggmlrpc.Probe(ctx, endpoint)
		cancel()
		if err == nil {
			return w
		}
		if time.Now().After(deadline) {
			t.Fatalf("rpc-server on %s did not answer: %v\n%s", endpoint, err, w.log.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
}

// TestRunOverTwoRPCWorkersMatchesTheLocalRun: the model spread over this process and two loopback
// workers gives the same greedy text and bit-identical logits as the local in-RAM run without
// repacking (the workers' CPU backends run the same kernels on the same bytes; repacking would take
// another numeric path on the local share only).
func TestRunOverTwoRPCWorkersMatchesTheLocalRun(t *testing.T) {
	bin := buildAgent(t)
	w1, w2 := startRPCWorker(t, bin, ""), startRPCWorker(t, bin, "")
	for _, name := range []string{"qwen3moe-q8_0", "qwen35moe-q4_k_m"} {
		t.Run(name, func(t *testing.T) {
			model := testmodels.Path(t, name)
			ref := ramReference(t, model, 1, true)
			for _, split := range []string{"", "0,1,1", "2,1,3"} {
				o := runOptions{Model: model, Mode: "auto", NoRepack: true, Threads: 1,
					rpc: rpcFlagSet{RPC: w1.endpoint + "," + w2.endpoint, TensorSplit: split}}
				if split == "2,1,3" { // through the traffic meters too
					o.StatsJSON = filepath.Join(t.TempDir(), "stats.json")
				}
				got, err := runAgentRun(t, o)
				if err != nil {
					t.Fatalf("--rpc --tensor-split %q: %v\n%s", split, err, got.stderr)
				}
				if got.stdout != ref.stdout {
					t.Fatalf("--tensor-split %q: text %q, local %q", split, got.stdout, ref.stdout)
				}
				if !bytes.Equal(got.logits, ref.logits) {
					t.Fatalf("--tensor-split %q: logits (%d bytes) differ from the local run's (%d bytes)", split, len(got.logits), len(ref.logits))
				}
				if o.StatsJSON != "" {
					var st runStats
					data, _ := os.ReadFile(o.StatsJSON)
					if err := json.Unmarshal(data, &st); err != nil {
						t.Fatal(err)
					}
					layers := mustPlan(t, model).Layers
					if len(st.RPCLayers) != 3 || st.RPCLayers[0]+st.RPCLayers[1]+st.RPCLayers[2] != layers+1 ||
						st.RPCLoadBytes <= 0 || st.RPCPromptBytes <= 0 || st.RPCDecodeBytesPerToken <= 0 {
						t.Fatalf("rpc statistics: %s", data)
					}
				}
			}
		})
	}
}

// stockRPCServer is Debian's ggml-rpc-server (llama.cpp-tools-extra, which build.sh installs).
const stockRPCServer = "/usr/libexec/x86_64-linux-gnu/llama/bin/ggml-rpc-server"

// TestRunOverAStockWorkerToo: a stock ggml-rpc-server of the same build serves our --rpc next to an
// agent rpc-server, with the local run's logits.
func TestRunOverAStockWorkerToo(t *testing.T) {
	if _, err := os.Stat(stockRPCServer); err != nil {
		t.Fatalf("the stock worker is missing (./build.sh installs llama.cpp-tools-extra): %v", err)
	}
	bin := buildAgent(t)
	ours := startRPCWorker(t, bin, "")
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	stockEP := ln.Addr().String()
	ln.Close()
	_, port, _ := net.SplitHostPort(stockEP)
	stock := exec.Command(stockRPCServer, "-p", port, "-t", "1")
	log := &syncBuffer{}
	stock.Stdout, stock.Stderr = log, log
	if err := stock.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { stock.Process.Kill(); stock.Wait() })
	deadline := time.Now().Add(60 * time.Second)
	for {
		if _, err := ggmlrpc.Probe(context.Background(), stockEP); err == nil {
			break
		} else if time.Now().After(deadline) {
			t.Fatalf("stock worker: %v\n%s", err, log.String())
		}
		time.Sleep(100 * time.Millisecond)
	}
	model := testmodels.Path(t, "qwen3moe-q8_0")
	ref := ramReference(t, model, 1, true)
	got, err := runAgentRun(t, runOptions{Model: model, Mode: "auto", NoRepack: true, Threads: 1,
		rpc: rpcFlagSet{RPC: stockEP + "," + ours.endpoint}})
	if err != nil {
		t.Fatalf("%v\n%s", err, got.stderr)
	}
	if got.stdout != ref.stdout || !bytes.Equal(got.logits, ref.logits) {
		t.Fatalf("over a stock and our worker: text %q (local %q), logits equal: %v", got.stdout, ref.stdout, bytes.Equal(got.logits, ref.logits))
	}
}

// TestRPCFlagsRefuseBadInput: bad --rpc values, a split of the wrong length, streamed modes and an
// unreachable or incompatible worker are clear errors naming what is wrong, before anything loads.
func TestRPCFlagsRefuseBadInput(t *testing.T) {
	model := testmodels.Path(t, "qwen3moe-q8_0")
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	dead := ln.Addr().String()
	ln.Close()
	cases := []struct {
		o    runOptions
		want string
	}{
		{runOptions{rpc: rpcFlagSet{RPC: "nohost"}}, "HOST:PORT"},
		{runOptions{rpc: rpcFlagSet{RPC: "127.0.0.1:1", TensorSplit: "1,1,1"}}, "want 2"},
		{runOptions{rpc: rpcFlagSet{TensorSplit: "1,1"}}, "needs --rpc"},
		{runOptions{Mode: "sniper", rpc: rpcFlagSet{RPC: dead}}, "sniper mode"},
		{runOptions{rpc: rpcFlagSet{RPC: dead}}, "rpc worker " + dead + " unreachable"},
		{runOptions{rpc: rpcFlagSet{RPC: dead, TensorSplit: "1,0"}}, "unreachable"},
	}
	for _, c := range cases {
		o := c.o
		o.Model, o.Threads = model, 1
		if o.Mode == "" {
			o.Mode = "auto"
		}
		_, err := runAgentRun(t, o)
		if err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%+v: error %v, want it to say %q", c.o.rpc, err, c.want)
		}
	}
	// A worker of another protocol version: a listener that answers hello with major version 1.
	old, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer old.Close()
	go func() {
		for {
			c, err := old.Accept()
			if err != nil {
				return
			}
			buf := make([]byte, 33)
			if _, err := c.Read(buf); err == nil {
				resp := make([]byte, 8+28)
				resp[0], resp[8] = 28, 1
				c.Write(resp)
			}
			c.Close()
		}
	}()
	_, err = runAgentRun(t, runOptions{Model: model, Mode: "auto", Threads: 1, rpc: rpcFlagSet{RPC: old.Addr().String()}})
	var we *ggmlrpc.WorkerError
	if !errors.As(err, &we) || we.Kind != "version mismatch" || !strings.Contains(err.Error(), old.Addr().String()) {
		t.Fatalf("old worker: %v", err)
	}
}

// TestBenchRPCConfiguration: agent bench --rpc measures our in-RAM mode spread over the workers next
// to the local one, with the bytes on the wire per token.
func TestBenchRPCConfiguration(t *testing.T) {
	bin := buildAgent(t)
	w1, w2 := startRPCWorker(t, bin, ""), startRPCWorker(t, bin, "")
	model := testmodels.Path(t, "qwen3moe-q8_0")
	var out, errOut bytes.Buffer
	code := run(t.Context(), []string{"agent", "bench", "-m", model, "-p", "8", "-n", "4", "-t", "1", "--configs", "ram,rpc",
		"--caps", "none", "--probe", "0", "--json", "--agent", bin, "--rpc", w1.endpoint + "," + w2.endpoint, "--tensor-split", "1,1,2"},
		&IOStreams{In: strings.NewReader(""), Out: &out, ErrOut: &errOut})
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	var rep struct {
		Results []struct {
			Kind         string   `json:"kind"`
			Err          string   `json:"error"`
			DecodeTPS    float64  `json:"decode_tok_s"`
			WirePerToken *float64 `json:"rpc_wire_per_token_bytes"`
		} `json:"results"`
	}
	if err := json.Unmarshal(out.Bytes(), &rep); err != nil {
		t.Fatalf("%v\n%s", err, out.String())
	}
	if len(rep.Results) != 2 || rep.Results[1].Kind != "rpc" || rep.Results[1].Err != "" || rep.Results[1].DecodeTPS <= 0 ||
		rep.Results[1].WirePerToken == nil || *rep.Results[1].WirePerToken <= 0 {
		t.Fatalf("report:\n%s\n%s", out.String(), errOut.String())
	}

	// agent inspect --rpc plans the memory of each device.
	cmd := exec.Command(bin, "inspect", model, "--ram", "1GiB", "--disk-gbps", "1", "--json", "--rpc", w1.endpoint+","+w2.endpoint, "--tensor-split", "1,1,2")
	js, err := cmd.Output()
	if err != nil {
		t.Fatalf("inspect --rpc: %v", err)
	}
	var ins struct {
		Model struct {
			Layers int `json:"layers"`
		} `json:"model"`
		RPC struct {
			Devices []struct {
				Endpoint    string `json:"endpoint"`
				Layers      int    `json:"layers"`
				WeightBytes int64  `json:"weight_bytes"`
				Fits        bool   `json:"fits"`
			} `json:"devices"`
		} `json:"rpc"`
	}
	if err := json.Unmarshal(js, &ins); err != nil {
		t.Fatal(err)
	}
	d := ins.RPC.Devices
	if len(d) != 3 || d[2].Endpoint != w2.endpoint || d[0].Layers+d[1].Layers+d[2].Layers != ins.Model.Layers+1 ||
		d[2].Layers < d[1].Layers || d[1].WeightBytes <= 0 || !d[0].Fits {
		t.Fatalf("inspect --rpc devices: %s", js)
	}
}

// TestRunNamesALostWorker: llama.cpp's RPC client ends the process when a worker dies mid-run; agent
// run says which worker (instead of dying silently by SIGPIPE) and exits non-zero.
func TestRunNamesALostWorker(t *testing.T) {
	bin := buildAgent(t)
	w1, w2 := startRPCWorker(t, bin, ""), startRPCWorker(t, bin, "")
	model := testmodels.Path(t, "qwen3moe-q8_0")
	cmd := exec.Command(bin, "run", "-m", model, "-p", "Once upon a time", "-n", "4000", "-t", "1", "--temp", "0",
		"--rpc", w1.endpoint+","+w2.endpoint)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	var stderr syncBuffer
	cmd.Stderr = &stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	first := make([]byte, 1)
	if _, err := io.ReadFull(stdout, first); err != nil {
		t.Fatalf("no token before the kill: %v\n%s", err, stderr.String())
	}
	w2.kill()
	go io.Copy(io.Discard, stdout)
	err = cmd.Wait()
	if err == nil || !strings.Contains(stderr.String(), "rpc worker "+w2.endpoint+" lost mid-run") {
		t.Fatalf("agent run after its worker died: %v\n%s", err, stderr.String())
	}
}
