package main

import (
	"context"
	"fmt"
	"io"
	"math"
	"net"
	"os"
	"os/signal"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/expertsniper/expertsniper/binding"
	"github.com/expertsniper/expertsniper/bytesize"
	"github.com/expertsniper/expertsniper/engine"
	"github.com/expertsniper/expertsniper/ggmlrpc"
	"github.com/expertsniper/expertsniper/plan"
)

func init() { register(rpcServerCommand) }

// rpcServerCommand is a worker of llama.cpp's RPC backend from this binary: ggml's own RPC server
// (reached through the backend registry) exposing this machine's CPU to a client's --rpc.
func rpcServerCommand(streams *IOStreams) *cli.Command {
	var host, cacheDir string
	var port, threads int
	var cache bool
	return &cli.Command{
		Name:  "rpc-server",
		Usage: "lend this machine's CPU and RAM to another machine's model (llama.cpp's RPC backend worker)",
		Description: "The machine running `agent run|serve --rpc HOST:PORT` places some of the model's layers here.\n" +
			"It speaks llama.cpp's RPC protocol, so stock llama.cpp clients (--rpc) can use it too, and our --rpc\n" +
			"can use stock ggml-rpc-server workers of the same ggml version. A worker serves one client at a time.\n" +
			"The protocol has no authentication and no encryption: anyone who can reach the port can use this\n" +
			"machine's memory and compute. It listens on loopback unless --host says otherwise.",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "host", Aliases: []string{"H"}, Value: "127.0.0.1", Usage: "address to listen on (anything but loopback is open to the network, unauthenticated)", EnvVars: []string{"EXPERTSNIPER_RPC_HOST"}, Destination: &host},
			&cli.IntFlag{Name: "port", Aliases: []string{"p"}, Value: ggmlrpc.DefaultPort, Usage: "port to listen on", EnvVars: []string{"EXPERTSNIPER_RPC_PORT"}, Destination: &port},
			&cli.IntFlag{Name: "threads", Aliases: []string{"t"}, Value: runtime.NumCPU(), Usage: "compute threads", EnvVars: []string{"EXPERTSNIPER_THREADS"}, Destination: &threads},
			&cli.BoolFlag{Name: "cache", Aliases: []string{"c"}, Usage: "keep tensors clients send in a local file cache ($XDG_CACHE_HOME/expertsniper/rpc), so that reloading a model sends only hashes", Destination: &cache},
			&cli.StringFlag{Name: "cache-dir", Usage: "the `DIR` of --cache", Destination: &cacheDir},
		},
		Action: func(c *cli.Context) error {
			if c.NArg() > 0 {
				return usagef("rpc-server takes no arguments, got %q", c.Args().Slice())
			}
			if port < 1 || port > 65535 {
				return usagef("--port must be between 1 and 65535, got %d", port)
			}
			if threads < 1 {
				return usagef("--threads must be at least 1, got %d", threads)
			}
			if strings.Contains(host, ":") {
				return usagef("--host %q: llama.cpp's RPC endpoints cannot hold IPv6 addresses; use an IPv4 address or a name", host)
			}
			if cacheDir != "" && !cache {
				return usagef("--cache-dir needs --cache")
			}
			dir := ""
			if cache {
				var err error
				if dir, err = rpcCacheDir(cacheDir); err != nil {
					return err
				}
			}
			endpoint := net.JoinHostPort(host, strconv.Itoa(port))
			// ggml's server only logs a failed bind and returns; trying it here gives a clear error.
			ln, err := net.Listen("tcp", endpoint)
			if err != nil {
				return fmt.Errorf("rpc-server: listen on %s: %w", endpoint, err)
			}
			ln.Close()
			if !isLoopback(host) {
				fmt.Fprintf(streams.ErrOut, "warning: listening on %s: llama.cpp's RPC protocol has no authentication or encryption; "+
					"anyone who can reach this port can use this machine's memory and compute. Use it only on a network you trust.\n", endpoint)
			}
			cpu, err := binding.CPUDevice()
			if err != nil {
				return err
			}
			fmt.Fprintf(streams.ErrOut, "rpc worker on %s: %s (%s), %d threads, protocol %d.%d.%d%s\n", endpoint, cpu.Description,
				bytesize.Format(int64(cpu.FreeBytes))+" free", threads, ggmlrpc.ProtoMajor, ggmlrpc.ProtoMinor, ggmlrpc.ProtoPatch,
				map[bool]string{true: ", tensor cache in " + dir, false: ""}[dir != ""])
			binding.SetLogger(binding.LogInfo, func(_ binding.LogLevel, msg string) { fmt.Fprintln(streams.ErrOut, msg) })
			// ggml's server cannot be stopped; SIGTERM and Ctrl-C cancel the context (signals.go), we
			// return and the process ends.
			ctx := c.Context
			served := make(chan error, 1)
			go func() { served <- binding.ServeRPC(endpoint, dir, threads) }()
			select {
			case err := <-served:
				return err
			case <-ctx.Done():
				fmt.Fprintf(streams.ErrOut, "rpc worker on %s stopped\n", endpoint)
				return nil
			}
		},
	}
}

// rpcCacheDir makes (private) and returns the worker's tensor cache directory.
func rpcCacheDir(dir string) (string, error) {
	if dir == "" {
		base, err := os.UserCacheDir()
		if err != nil {
			return "", fmt.Errorf("rpc-server: no cache directory (set --cache-dir): %w", err)
		}
		dir = filepath.Join(base, "expertsniper", "rpc")
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("rpc-server: make the tensor cache %s: %w", dir, err)
	}
	// ggml-rpc.cpp joins file names to the directory without a separator.
	return strings.TrimRight(dir, "/") + "/", nil
}

// rpcFlagSet are the flags that spread a model over RPC workers, shared by run, serve, the REPL and
// bench.
type rpcFlagSet struct {
	RPC         string // HOST:PORT[,HOST:PORT…]
	TensorSplit string // weights: the local machine's, then one per worker
}

func (r *rpcFlagSet) flags(envPrefix string) []cli.Flag {
	return []cli.Flag{
		&cli.StringFlag{Name: "rpc", Usage: "spread the model's layers over llama.cpp RPC workers (`HOST:PORT`,…; see agent rpc-server); ram mode only", EnvVars: []string{envPrefix + "RPC"}, Destination: &r.RPC},
		&cli.StringFlag{Name: "tensor-split", Aliases: []string{"ts"}, Usage: "with --rpc: layer share `WEIGHTS`, the local machine's first then one per worker (default: equal, e.g. 1,1,1)", EnvVars: []string{envPrefix + "TENSOR_SPLIT"}, Destination: &r.TensorSplit},
	}
}

// parse checks the flags; it returns nil when --rpc is not set.
func (r *rpcFlagSet) parse() (*rpcSetup, error) {
	if strings.TrimSpace(r.RPC) == "" {
		if r.TensorSplit != "" {
			return nil, usagef("--tensor-split needs --rpc")
		}
		return nil, nil
	}
	eps, err := ggmlrpc.ParseEndpoints(r.RPC)
	if err != nil {
		return nil, usagef("--rpc: %v", err)
	}
	ws, err := ggmlrpc.ParseSplit(r.TensorSplit, len(eps))
	if err != nil {
		return nil, usagef("%v", err)
	}
	return &rpcSetup{Endpoints: eps, Weights: ws}, nil
}

// rpcSetup is a checked --rpc/--tensor-split pair.
type rpcSetup struct {
	Endpoints []string
	Weights   []float64 // nil: equal shares
	// meters, when set, relay llama.cpp's connection to each worker and count its bytes (--stats).
	meters []*ggmlrpc.Meter
}

// checkMode refuses the streamed modes: their expert tensors live in memory the sniper owns on this
// machine, which a worker cannot reach (docs/rpc.md has the numbers behind this).
func (s *rpcSetup) checkMode(mode string) error {
	if s == nil || mode == "ram" {
		return nil
	}
	return usagef("--rpc spreads a model that runs in RAM; it cannot be combined with %s mode, whose streamed "+
		"weights live in this machine's memory (use --mode ram, with --tensor-split giving this machine a share it can hold; see docs/rpc.md)", mode)
}

// rpcPlan is what connecting to the workers gave: the options that place the layers and a report.
type rpcPlan struct {
	Options   []binding.ModelOption
	Devices   []binding.Device
	Placement ggmlrpc.Placement
	Endpoints []string
}

// connect probes every worker (a clear error naming an unreachable or incompatible one, before
// llama.cpp's client could abort the process), adds their devices and places layers layers.
func (s *rpcSetup) connect(ctx context.Context, layers int) (*rpcPlan, error) {
	for _, ep := range s.Endpoints {
		if _, err := ggmlrpc.Probe(ctx, ep); err != nil {
			return nil, err
		}
	}
	var devs []binding.Device
	perWorker := make([]int, len(s.Endpoints))
	for i, ep := range s.Endpoints {
		dial := ep
		if s.meters != nil {
			dial = s.meters[i].Endpoint()
		}
		d, err := binding.AddRPCServer(dial)
		if err != nil {
			return nil, err
		}
		for j := range d {
			d[j].Endpoint = ep
		}
		devs = append(devs, d...)
		perWorker[i] = len(d)
	}
	p, err := ggmlrpc.Place(layers, s.Weights, perWorker)
	if err != nil {
		return nil, fmt.Errorf("--tensor-split: %w", err)
	}
	if p.OffloadLayers == 0 {
		return nil, usagef("--tensor-split leaves the workers no layer of %d; give them a larger share", p.Units)
	}
	return &rpcPlan{
		// Read, not mmap: the workers' layers are read once and sent, and this machine keeps only its
		// own share resident (mapped, the sent layers' pages would stay counted in its RSS).
		Options: []binding.ModelOption{binding.WithDevices(devs), binding.WithTensorSplit(p.DeviceSplit), binding.WithGPULayers(p.OffloadLayers),
			binding.WithMMap(false)},
		Devices:   devs,
		Placement: p,
		Endpoints: s.Endpoints,
	}, nil
}

// describe says where the layers went, e.g. "layers: 3 local, 3 on 127.0.0.1:50052, 3 on …".
func (p *rpcPlan) describe() string {
	var b strings.Builder
	fmt.Fprintf(&b, "%d of %d layers (output included) local", p.Placement.LocalLayers, p.Placement.Units)
	for i, ep := range p.Endpoints {
		fmt.Fprintf(&b, ", %d on rpc worker %s", p.Placement.WorkerLayers[i], ep)
	}
	return b.String()
}

// rpcTraffic counts what agent run sends to and receives from its workers, split into loading the
// model, the prompt and generation (--stats, --stats-json): the transfer cost of spreading.
type rpcTraffic struct {
	setup            *rpcSetup
	placement        ggmlrpc.Placement
	start            time.Time
	loadSecs         float64
	atLoad, atPrompt int64
}

// measureTraffic puts a counting relay in front of every worker of s; call it before connect.
func measureTraffic(s *rpcSetup) (*rpcTraffic, error) {
	for _, ep := range s.Endpoints {
		m, err := ggmlrpc.NewMeter(ep)
		if err != nil {
			s.closeMeters()
			return nil, err
		}
		s.meters = append(s.meters, m)
	}
	return &rpcTraffic{setup: s, start: time.Now()}, nil
}

func (s *rpcSetup) closeMeters() {
	for _, m := range s.meters {
		m.Close()
	}
	s.meters = nil
}

func (t *rpcTraffic) total() int64 {
	var n int64
	for _, m := range t.setup.meters {
		sent, recv := m.Counts()
		n += sent + recv
	}
	return n
}

// loaded marks the end of the load (the weights have been sent).
func (t *rpcTraffic) loaded(p ggmlrpc.Placement) {
	if t != nil {
		t.placement, t.atLoad, t.loadSecs = p, t.total(), time.Since(t.start).Seconds()
	}
}

// prompted marks the end of prefill.
func (t *rpcTraffic) prompted() {
	if t != nil {
		t.atPrompt = t.total()
	}
}

// fill adds the traffic to rs; decodeEvals is how many generated tokens were evaluated.
func (t *rpcTraffic) fill(rs *runStats, decodeEvals int) {
	if t == nil {
		return
	}
	end := t.total()
	rs.RPCWorkers = t.setup.Endpoints
	rs.RPCLayers = append([]int{t.placement.LocalLayers}, t.placement.WorkerLayers...)
	rs.RPCLoadBytes, rs.RPCLoadSeconds = t.atLoad, t.loadSecs
	rs.RPCPromptBytes = t.atPrompt - t.atLoad
	rs.RPCDecodeBytes = end - t.atPrompt
	if decodeEvals > 0 {
		rs.RPCDecodeBytesPerToken = float64(rs.RPCDecodeBytes) / float64(decodeEvals)
	}
}

// printRPCStats is --stats's line about the workers.
func printRPCStats(w io.Writer, rs runStats) {
	if len(rs.RPCWorkers) == 0 {
		return
	}
	rate := 0.0
	if rs.RPCLoadSeconds > 0 {
		rate = float64(rs.RPCLoadBytes) / rs.RPCLoadSeconds / 1e9
	}
	fmt.Fprintf(w, "  rpc: layers %v (local first, then %s); load sent %s in %.1fs (%.2f GB/s); prompt %s on the wire, decode %s per token\n",
		rs.RPCLayers, strings.Join(rs.RPCWorkers, ", "), sizeString(rs.RPCLoadBytes), rs.RPCLoadSeconds, rate,
		sizeString(rs.RPCPromptBytes), sizeString(int64(rs.RPCDecodeBytesPerToken)))
}

// engineDevices lists where the plan put the layers, for /stats, /metrics and the dashboard.
func (p *rpcPlan) engineDevices() []engine.Device {
	out := []engine.Device{{Name: "local", Layers: p.Placement.LocalLayers}}
	if cpu, err := binding.CPUDevice(); err == nil {
		out[0].Name, out[0].FreeBytes, out[0].TotalBytes = "local "+cpu.Name, cpu.FreeBytes, cpu.TotalBytes
	}
	for i, d := range p.Devices {
		layers := 0
		if i < len(p.Placement.DeviceSplit) {
			layers = int(math.Round(float64(p.Placement.DeviceSplit[i])))
		}
		out = append(out, engine.Device{Name: d.Name, Endpoint: d.Endpoint, Layers: layers, FreeBytes: d.FreeBytes, TotalBytes: d.TotalBytes})
	}
	return out
}

// deviceStats puts the devices into the engine's statistics (local.StatsSource).
type deviceStats []engine.Device

func (d deviceStats) FillStats(s *engine.Stats) { s.Devices = d }

// rpcMemoryPlan is agent inspect --rpc: what each device would hold of the model spread over the
// workers. Field names are stable (--json).
type rpcMemoryPlan struct {
	Workers     []string          `json:"workers"`
	TensorSplit string            `json:"tensor_split"`
	Devices     []rpcDeviceMemory `json:"devices"`
}

type rpcDeviceMemory struct {
	Name     string `json:"name"`
	Endpoint string `json:"endpoint,omitempty"`
	ggmlrpc.Share
	FreeBytes uint64 `json:"free_bytes"`
	Fits      bool   `json:"fits"`
}

// planRPCMemory asks the workers for their devices and memory and divides the model's weights and
// KV cache (p's context) along the placement --tensor-split gives.
func planRPCMemory(ctx context.Context, s *rpcSetup, m *plan.Model, p *plan.Plan) (*rpcMemoryPlan, error) {
	rp, err := s.connect(ctx, m.Layers)
	if err != nil {
		return nil, err
	}
	kvPerLayer := (p.KVCacheBytes + p.RecurrentStateBytes) / int64(max(m.Layers, 1))
	shares := ggmlrpc.Shares(rp.Placement, m.LayerBytes, m.OutputBytes, m.InputBytes, kvPerLayer)
	split := "equal"
	if len(s.Weights) > 0 {
		var ws []string
		for _, w := range s.Weights {
			ws = append(ws, strconv.FormatFloat(w, 'g', -1, 64))
		}
		split = strings.Join(ws, ",")
	}
	out := &rpcMemoryPlan{Workers: s.Endpoints, TensorSplit: split}
	for i, d := range rp.engineDevices() {
		dm := rpcDeviceMemory{Name: d.Name, Endpoint: d.Endpoint, Share: shares[i], FreeBytes: d.FreeBytes}
		need := dm.WeightBytes + dm.KVBytes
		if i == 0 {
			need += p.ComputeBytes // the local machine also runs the graph's CPU parts and the runtime
		}
		dm.Fits = d.FreeBytes == 0 || uint64(need) <= d.FreeBytes
		out.Devices = append(out.Devices, dm)
	}
	return out, nil
}

func (r *rpcMemoryPlan) writeText(w io.Writer) {
	fmt.Fprintf(w, "\nSpread over %d RPC worker(s), --tensor-split %s (layers include the output layer; KV cache shared evenly):\n", len(r.Workers), r.TensorSplit)
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "  device\tlayers\tweights\tKV cache\tfree memory\t")
	for _, d := range r.Devices {
		name := d.Name
		if d.Endpoint != "" {
			name += " on " + d.Endpoint
		}
		fit := ""
		if !d.Fits {
			fit = "does not fit"
		}
		fmt.Fprintf(tw, "  %s\t%d\t%s\t%s\t%s\t%s\n", name, d.Layers, sizeString(d.WeightBytes), sizeString(d.KVBytes), sizeString(int64(d.FreeBytes)), fit)
	}
	tw.Flush()
}

// guardProcess prepares a process whose model uses the workers of s for losing one. llama.cpp's RPC
// client cannot survive it, but it can say so: a write to the dead worker's socket then fails
// instead of ending the process silently by SIGPIPE, and the GGML_ABORT that follows prints which
// worker no longer accepts connections (a worker busy with this process still does). A worker that is
// being killed may close this process's connection a moment before its listening socket (the kernel
// closes a dying process's descriptors one by one), so the probe is repeated for up to two seconds.
func (s *rpcSetup) guardProcess(errOut io.Writer) error {
	signal.Ignore(syscall.SIGPIPE)
	return binding.SetAbortHandler(func(msg string) {
		var lost []string
		for deadline := time.Now().Add(2 * time.Second); len(lost) == 0 && time.Now().Before(deadline); {
			for _, ep := range s.Endpoints {
				c, err := net.DialTimeout("tcp", ep, 3*time.Second)
				if err != nil {
					lost = append(lost, ep)
					continue
				}
				c.Close()
			}
			if len(lost) == 0 {
				time.Sleep(100 * time.Millisecond)
			}
		}
		if len(lost) > 0 {
			fmt.Fprintf(errOut, "error: rpc worker %s lost mid-run (llama.cpp: %s)\n", strings.Join(lost, ", "), msg)
			return
		}
		fmt.Fprintf(errOut, "error: llama.cpp aborted with rpc workers %s: %s\n", strings.Join(s.Endpoints, ", "), msg)
	})
}
