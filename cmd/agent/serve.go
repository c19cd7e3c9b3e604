package main

import (
	"context"
	"fmt"
	"io"
	"net"
	"runtime"
	"strconv"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/expertsniper/expertsniper/engine"
	"github.com/expertsniper/expertsniper/engine/local"
	"github.com/expertsniper/expertsniper/plan"
	"github.com/expertsniper/expertsniper/server"
	"github.com/expertsniper/expertsniper/sniper"
)

func init() { register(serveCommand) }

// serveOptions are the flags of `agent serve`; the names follow llama-server's where one exists.
type serveOptions struct {
	Model      string
	Alias      string
	Host       string
	Port       int
	Ctx        int
	Parallel   int
	APIKey     string
	CacheTypeK string
	CacheTypeV string
	FlashAttn  string
	Threads    int
	// Checkpoints per slot (local.Options.Checkpoints).
	Checkpoints int
	Mode        string
	RAM         string
	Cache       string
	ContextDir  string
	MaxBody     string
	AllowHosts  cli.StringSlice
	Remote      string
	// Sniper tuning and RAM-mode repacking, as in agent run (engine/local.Options).
	Policy                      string
	Readers                     int
	Prefetch                    bool
	NoRecycle, NoRepack, Repack bool

	// open loads the model; tests replace it.
	open func(ctx context.Context, o *serveOptions) (engine.Engine, error)
	// ready, when set, receives the address once the server listens (tests).
	ready func(addr string)
	// status prints progress lines (set by runServe).
	status func(format string, args ...any)
	// planned is the model as analysed before listening (a broken file fails there, not after).
	planned *plan.Model
	// Embeddings enables /v1/embeddings (llama-server's --embeddings).
	Embeddings bool
	// rpc spreads the model over RPC workers (rpc.go); the model then runs in an engine process.
	rpc     rpcFlagSet
	workers *rpcSetup
	errOut  io.Writer
}

func serveEnv(name string) []string { return []string{"EXPERTSNIPER_" + name} }

func serveFlags(o *serveOptions) []cli.Flag {
	return append([]cli.Flag{
		&cli.StringFlag{Name: "model", Aliases: []string{"m"}, Usage: "GGUF model `FILE`", EnvVars: serveEnv("MODEL"), Destination: &o.Model},
		&cli.StringFlag{Name: "alias", Usage: "model id reported to clients (default: the file name)", EnvVars: serveEnv("ALIAS"), Destination: &o.Alias},
		&cli.IntFlag{Name: "ctx-size", Aliases: []string{"c"}, Usage: "context size in tokens, shared by the slots (0: each slot gets the model's training context, at most 4096)", EnvVars: serveEnv("CTX_SIZE"), Destination: &o.Ctx},
		&cli.IntFlag{Name: "parallel", Aliases: []string{"np"}, Value: 1, Usage: "parallel slots; further requests wait in a queue", EnvVars: serveEnv("PARALLEL"), Destination: &o.Parallel},
		&cli.StringFlag{Name: "cache-type-k", Aliases: []string{"ctk"}, Value: "f16", Usage: "KV cache type for K: f16, q8_0, q4_0, ...", EnvVars: serveEnv("CACHE_TYPE_K"), Destination: &o.CacheTypeK},
		&cli.StringFlag{Name: "cache-type-v", Aliases: []string{"ctv"}, Value: "f16", Usage: "KV cache type for V: f16, q8_0, q4_0, ...", EnvVars: serveEnv("CACHE_TYPE_V"), Destination: &o.CacheTypeV},
		&cli.StringFlag{Name: "flash-attn", Aliases: []string{"fa"}, Value: "auto", Usage: "flash attention: on, off or auto", EnvVars: serveEnv("FLASH_ATTN"), Destination: &o.FlashAttn},
		&cli.IntFlag{Name: "ctx-checkpoints", Aliases: []string{"ctxcp"}, Value: local.DefaultCheckpoints, Usage: "context checkpoints per slot for recurrent and hybrid models (Qwen3.5, Mamba): a request that diverges from what its slot holds resumes from the newest one before the divergence instead of evaluating its whole prompt again; each holds one recurrent state in RAM (0: none)", EnvVars: serveEnv("CTX_CHECKPOINTS"), Destination: &o.Checkpoints},
		&cli.IntFlag{Name: "threads", Aliases: []string{"t"}, Value: runtime.NumCPU(), Usage: "compute threads", EnvVars: serveEnv("THREADS"), Destination: &o.Threads},
		&cli.StringFlag{Name: "mode", Value: "auto", Usage: "auto, ram, sniper or stream", EnvVars: serveEnv("MODE"), Destination: &o.Mode},
		&cli.StringFlag{Name: "ram", Usage: ramUsage, EnvVars: serveEnv("RAM"), Destination: &o.RAM},
		&cli.StringFlag{Name: "cache", Usage: cacheUsage, EnvVars: serveEnv("CACHE"), Destination: &o.Cache},
		&cli.StringFlag{Name: "policy", Usage: fmt.Sprintf("sniper/stream: cache eviction policy, lfu, lru or fixed (default: %s; stream: %s, which keeps the first layers that fit)", local.DefaultPolicy, sniper.DefaultDensePolicy), EnvVars: serveEnv("POLICY"), Destination: &o.Policy},
		&cli.IntFlag{Name: "readers", Usage: fmt.Sprintf("sniper/stream: parallel disk reads (default: %d)", local.DefaultReaders), EnvVars: serveEnv("READERS"), Destination: &o.Readers},
		&cli.BoolFlag{Name: "prefetch", Value: true, Usage: "sniper: read the experts the next layer is predicted to choose while this one computes; stream: read the next layer's FFN (--prefetch=false turns it off)", EnvVars: serveEnv("PREFETCH"), Destination: &o.Prefetch},
		&cli.BoolFlag{Name: "no-recycle", Usage: "sniper: release evicted experts' memory instead of reusing it (slower; for measurements)", EnvVars: serveEnv("NO_RECYCLE"), Destination: &o.NoRecycle},
		&cli.BoolFlag{Name: "no-repack", Usage: "no weight repacking (use_extra_bufts=false; every mode): the file's layout and llama.cpp's plain kernels", EnvVars: serveEnv("NO_REPACK"), Destination: &o.NoRepack},
		&cli.BoolFlag{Name: "repack", Usage: repackUsage, EnvVars: serveEnv("REPACK"), Destination: &o.Repack},
		&cli.BoolFlag{Name: "embeddings", Usage: "enable /v1/embeddings (mean-pooled; off by default, as in llama-server)", EnvVars: serveEnv("EMBEDDINGS"), Destination: &o.Embeddings},
	}, o.rpc.flags("EXPERTSNIPER_")...)
}

func serveCommand(streams *IOStreams) *cli.Command {
	o := &serveOptions{}
	flags := append(serveFlags(o),
		&cli.StringFlag{Name: "host", Value: "127.0.0.1", Usage: "address to listen on (0.0.0.0 for every interface: set --api-key)", EnvVars: serveEnv("HOST"), Destination: &o.Host},
		&cli.IntFlag{Name: "port", Value: 8080, Usage: "port to listen on (0: any free port)", EnvVars: serveEnv("PORT"), Destination: &o.Port},
		&cli.StringFlag{Name: "api-key", Usage: "require this key as 'Authorization: Bearer KEY' (/health stays open)", EnvVars: append(serveEnv("API_KEY"), "LLAMA_API_KEY"), Destination: &o.APIKey},
		&cli.StringFlag{Name: "context-dir", Usage: "where saved contexts and slot files are kept (default: $XDG_DATA_HOME/expertsniper/contexts)", EnvVars: serveEnv("CONTEXT_DIR"), Destination: &o.ContextDir},
		remoteFlag(&o.Remote),
		&cli.StringSliceFlag{Name: "allow-host", Usage: "also accept this `NAME` as Host and Origin on a loopback bind (a reverse proxy's public name; repeatable)", EnvVars: serveEnv("ALLOW_HOST"), Destination: &o.AllowHosts},

		&cli.StringFlag{Name: "max-body", Value: "16MiB", Usage: "largest request body accepted (413 beyond)", EnvVars: serveEnv("MAX_BODY"), Destination: &o.MaxBody},
	)
	return &cli.Command{
		Name:  "serve",
		Usage: "serve the model over HTTP: OpenAI-compatible and llama-server endpoints, web chat, dashboard",
		Description: "Endpoints: /v1/chat/completions, /v1/completions, /v1/models, /v1/embeddings, /completion,\n" +
			"/tokenize, /detokenize, /apply-template, /props, /slots, /metrics, /health, saved contexts under\n" +
			"/v1/context/{save,load,list,delete,upload,download} (--remote); a web chat at / and a live dashboard at /dashboard.\n" +
			"Stops cleanly on Ctrl-C or SIGTERM.",
		Flags: flags,
		Action: func(c *cli.Context) error {
			if c.NArg() > 0 {
				return usagef("serve takes no arguments (the model goes in -m), got %q", c.Args().Slice())
			}
			return runServe(c.Context, streams, o)
		},
	}
}

// check validates the options shared by serve and serve-bench.
func (o *serveOptions) check() error {
	// Names of pulled models (OWNER/REPO[:QUANT], see agent models) resolve in the models directory.
	m, err := resolveModel(o.Model)
	if err != nil {
		return err
	}
	o.Model = m.Path
	if o.Parallel < 1 || o.Parallel > 64 {
		return usagef("--parallel must be between 1 and 64, got %d", o.Parallel)
	}
	if o.Ctx < 0 {
		return usagef("--ctx-size must not be negative, got %d", o.Ctx)
	}
	if o.Threads < 1 {
		return usagef("--threads must be at least 1, got %d", o.Threads)
	}
	if o.Ctx > 0 && o.perSlot() < 64 {
		return usagef("-c %d over %d slots leaves %d tokens per slot; give each slot at least 64", o.Ctx, o.Parallel, o.perSlot())
	}
	if o.workers, err = o.rpc.parse(); err != nil {
		return err
	}
	if o.workers != nil && o.Mode != "auto" {
		if err := o.workers.checkMode(strings.ToLower(o.Mode)); err != nil {
			return err
		}
	}
	return o.engineOptions(nil).Validate()
}

func runServe(ctx context.Context, streams *IOStreams, o *serveOptions) error {
	if err := o.check(); err != nil {
		return err
	}
	maxBody, err := plan.ParseSize(o.MaxBody)
	if err != nil || maxBody < 1024 {
		return usagef("--max-body must be a size of at least 1KiB, got %q", o.MaxBody)
	}
	for _, h := range o.AllowHosts.Value() {
		if h == "" || (strings.ContainsAny(h, ":/ ") && net.ParseIP(h) == nil) {
			return usagef("--allow-host takes a host name without scheme or port (e.g. chat.example.com), got %q", h)
		}
	}
	if o.Port < 0 || o.Port > 65535 {
		return usagef("--port must be between 0 and 65535, got %d", o.Port)
	}
	// Read and analyse the file before listening: a missing, truncated or foreign file is an error
	// at once, naming the file, rather than a server that comes up and then stops.
	if o.planned, err = plan.Open(o.Model); err != nil {
		return err
	}
	// And decide how it will run (mode, budget): options that cannot work fail before listening too.
	if _, err := local.Decide(o.planned, o.engineOptions(nil)); err != nil {
		return err
	}
	// Ctrl-C and SIGTERM cancel ctx (signals.go): the server then shuts down cleanly.

	rem, err := openRemote(ctx, o.Remote, "")
	if err != nil {
		return err
	}
	srv, err := server.New(server.Config{Host: o.Host, AllowedHosts: o.AllowHosts.Value(), APIKey: o.APIKey, MaxBodyBytes: maxBody, ContextDir: o.ContextDir,
		Remote: rem, ModelAlias: o.Alias, Fingerprint: "expertsniper-b11669", Embeddings: o.Embeddings, Log: streams.ErrOut})
	if err != nil {
		return err
	}
	addr := net.JoinHostPort(o.Host, strconv.Itoa(o.Port))
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("listen on %s: %w", addr, err)
	}
	if !isLoopback(o.Host) && o.APIKey == "" {
		fmt.Fprintf(streams.ErrOut, "warning: listening on %s without --api-key: anyone who can reach it can use the model\n", o.Host)
	}
	fmt.Fprintf(streams.ErrOut, "listening on http://%s (chat at /, dashboard at /dashboard); loading %s\n", ln.Addr(), o.Model)
	if o.ready != nil {
		o.ready(ln.Addr().String())
	}

	serveCtx, stopServing := context.WithCancel(ctx)
	defer stopServing()
	served := make(chan error, 1)
	go func() { served <- srv.Serve(serveCtx, ln) }()

	start := time.Now()
	o.status = func(format string, args ...any) { fmt.Fprintf(streams.ErrOut, format+"\n", args...) }
	o.errOut = streams.ErrOut
	open := o.open
	if open == nil {
		open = serveEngineOpener
	}
	eng, err := open(ctx, o)
	if err != nil {
		stopServing()
		<-served
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("load %s: %w", o.Model, err)
	}
	defer eng.Close() // after Serve has returned: no handler uses the engine any more
	if err := srv.SetEngine(eng); err != nil {
		return err
	}
	info := eng.Info()
	fmt.Fprintf(streams.ErrOut, "model loaded in %.1f s: %s, %s mode, %d slot(s) of %d tokens\n",
		time.Since(start).Seconds(), info.Name, info.Mode, info.Slots, info.Context)

	err = <-served
	if err != nil {
		return err
	}
	fmt.Fprintln(streams.ErrOut, "server stopped")
	return nil
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(strings.Trim(host, "[]"))
	return ip != nil && ip.IsLoopback()
}

// serveEngineOpener is the seam tests replace to serve a scripted engine.
var serveEngineOpener = openServeEngine

// openServeEngine loads the model with the real engine (engine/local), which decides the mode as
// for every command. -c is shared by the slots, as llama-server's is.
func openServeEngine(ctx context.Context, o *serveOptions) (engine.Engine, error) {
	status := o.status
	if status == nil {
		status = func(string, ...any) {}
	}
	lo := o.engineOptions(func(d local.Decision) {
		status("%s", d.Summary)
		for _, w := range d.Warnings {
			status("warning: %s", w)
		}
	})
	if o.workers != nil {
		errOut := o.errOut
		if errOut == nil {
			errOut = io.Discard
		}
		// The engine process decides as local.Open does; what it decides is its to report.
		lo.OnDecision = nil
		return openIsolated(ctx, o.workers, o.Model, lo, errOut, status)
	}
	return local.Open(ctx, o.Model, lo)
}

// perSlot is each slot's share of -c (0: the engine's default).
func (o *serveOptions) perSlot() int {
	if o.Ctx <= 0 {
		return 0
	}
	return o.Ctx / o.Parallel
}

// engineOptions are serve's flags as the engine's options.
func (o *serveOptions) engineOptions(onDecision func(local.Decision)) local.Options {
	return local.Options{
		Slots: o.Parallel, Context: o.perSlot(), Threads: o.Threads,
		CacheTypeK: o.CacheTypeK, CacheTypeV: o.CacheTypeV, FlashAttn: o.flashAttn(), Checkpoints: o.Checkpoints,
		Mode: local.Mode(o.Mode), RAM: o.RAM, Cache: o.Cache, Policy: o.Policy, Readers: o.Readers,
		NoPrefetch: !o.Prefetch, NoRecycle: o.NoRecycle, NoRepack: o.NoRepack, Repack: o.Repack, OnDecision: onDecision,
		// With --rpc the layers are spread over the workers (the engine process adds them).
		Distributed: o.workers != nil,
	}
}

// flashAttn is -fa as the engine reads it (binding.ParseFlashAttn: auto, on/true/1, off/false/0),
// whatever its case; anything else fails the engine's validation.
func (o *serveOptions) flashAttn() string { return strings.ToLower(strings.TrimSpace(o.FlashAttn)) }
