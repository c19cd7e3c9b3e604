package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"

	"github.com/mattn/go-isatty"
	"github.com/urfave/cli/v2"

	"github.com/expertsniper/expertsniper/engine"
	"github.com/expertsniper/expertsniper/engine/local"
	"github.com/expertsniper/expertsniper/remote"
	"github.com/expertsniper/expertsniper/repl"
	"github.com/expertsniper/expertsniper/websearch"
)

// The REPL is what a bare `agent` runs; its flags are the top-level flags.
func init() {
	// newApp asks for the flags and then the action; both must share one options value per app.
	var opts *replOptions
	defaultFlags = func() []cli.Flag {
		opts = &replOptions{}
		return opts.flags(true)
	}
	defaultAction = func(streams *IOStreams) cli.ActionFunc {
		o := opts
		if o == nil {
			o = &replOptions{}
		}
		return func(c *cli.Context) error { return replRun(c, streams, o) }
	}
}

// replOptions are the flags of the REPL (and of `agent ask`, which shares the model flags). Each one
// overrides config.json, and each has an EXPERTSNIPER_* environment variable.
type replOptions struct {
	Config     string
	Model      string
	Context    int
	CacheTypeK string
	CacheTypeV string
	Mode       string
	RAM        string
	Cache      string
	Threads    int
	rpc        rpcFlagSet

	Raw          bool
	System       string
	MaxTokens    int
	Temperature  float64
	Seed         uint
	SearchURL    string
	NoShell      bool
	ShellTimeout int
	PriceInput   float64
	PriceOutput  float64
	Remote       string
}

func env(name string) []string { return []string{"EXPERTSNIPER_" + name} }

// flags lists the model flags, plus the session flags when session is true.
func (o *replOptions) flags(session bool) []cli.Flag {
	fs := []cli.Flag{
		&cli.StringFlag{Name: "config", Usage: "config `FILE` (default: $XDG_CONFIG_HOME/expertsniper/config.json)", EnvVars: env("CONFIG"), Destination: &o.Config},
		&cli.StringFlag{Name: "model", Aliases: []string{"m"}, Usage: "model: a name from config.json or a .gguf `PATH`", EnvVars: env("MODEL"), Destination: &o.Model},
		&cli.IntFlag{Name: "ctx-size", Aliases: []string{"c"}, Usage: "context size in tokens (default: the model config's, else the engine's)", EnvVars: env("CTX_SIZE"), Destination: &o.Context},
		&cli.StringFlag{Name: "cache-type-k", Aliases: []string{"ctk"}, Usage: "KV cache type for K: f16, q8_0, q4_0, ...", EnvVars: env("CACHE_TYPE_K"), Destination: &o.CacheTypeK},
		&cli.StringFlag{Name: "cache-type-v", Aliases: []string{"ctv"}, Usage: "KV cache type for V: f16, q8_0, q4_0, ...", EnvVars: env("CACHE_TYPE_V"), Destination: &o.CacheTypeV},
		&cli.StringFlag{Name: "mode", Usage: "auto, ram, sniper or stream", EnvVars: env("MODE"), Destination: &o.Mode},
		&cli.StringFlag{Name: "ram", Usage: ramUsage, EnvVars: env("RAM"), Destination: &o.RAM},
		&cli.StringFlag{Name: "cache", Usage: cacheUsage, EnvVars: env("CACHE"), Destination: &o.Cache},
		&cli.IntFlag{Name: "threads", Aliases: []string{"t"}, Usage: "compute threads (default: the engine's)", EnvVars: env("THREADS"), Destination: &o.Threads},
		&cli.IntFlag{Name: "max-tokens", Aliases: []string{"n"}, Usage: "most tokens per answer", EnvVars: env("MAX_TOKENS"), Destination: &o.MaxTokens},
		&cli.Float64Flag{Name: "temp", Usage: "sampling temperature (0 = greedy)", EnvVars: env("TEMP"), Destination: &o.Temperature},
		&cli.UintFlag{Name: "seed", Usage: "sampling seed (0 = random)", EnvVars: env("SEED"), Destination: &o.Seed},
		&cli.StringFlag{Name: "system", Usage: "system prompt", EnvVars: env("SYSTEM"), Destination: &o.System},
	}
	fs = append(fs, o.rpc.flags("EXPERTSNIPER_")...)
	if session {
		fs = append(fs,
			&cli.BoolFlag{Name: "raw", Usage: "start in raw mode (plain chat, no routing)", EnvVars: env("RAW"), Destination: &o.Raw},
			&cli.StringFlag{Name: "search-url", Usage: "DuckDuckGo-compatible HTML search `URL`", EnvVars: env("SEARCH_URL"), Destination: &o.SearchURL},
			&cli.BoolFlag{Name: "no-shell", Usage: "never offer to run shell commands", EnvVars: env("NO_SHELL"), Destination: &o.NoShell},
			&cli.IntFlag{Name: "shell-timeout", Usage: "seconds before a shell command is killed", EnvVars: env("SHELL_TIMEOUT"), Destination: &o.ShellTimeout},
			&cli.Float64Flag{Name: "price-input", Usage: "cloud price per 1M input tokens for /cost, in $", EnvVars: env("PRICE_INPUT"), Destination: &o.PriceInput},
			&cli.Float64Flag{Name: "price-output", Usage: "cloud price per 1M output tokens for /cost, in $", EnvVars: env("PRICE_OUTPUT"), Destination: &o.PriceOutput},
			remoteFlag(&o.Remote),
		)
	}
	return fs
}

// settings loads config.json and lays the flags over it, returning the config, the model to load and
// the directories.
func (o *replOptions) settings(c *cli.Context) (repl.Config, repl.ModelConfig, repl.Dirs, error) {
	dirs, err := repl.DefaultDirs()
	if err != nil {
		return repl.Config{}, repl.ModelConfig{}, dirs, err
	}
	path := o.Config
	if path == "" {
		path = filepath.Join(dirs.Config, "config.json")
	}
	cfg, err := repl.LoadConfig(path)
	if err != nil {
		return cfg, repl.ModelConfig{}, dirs, err
	}
	set := c.IsSet
	if set("raw") && o.Raw {
		cfg.Mode = "raw"
	}
	if set("system") {
		cfg.System = o.System
	}
	if set("max-tokens") {
		cfg.MaxTokens = o.MaxTokens
	}
	if set("temp") {
		cfg.Temperature = float32(o.Temperature)
	}
	if set("seed") {
		cfg.Seed = uint32(o.Seed)
	}
	if set("search-url") {
		cfg.Search.URL = o.SearchURL
	}
	if set("no-shell") {
		cfg.Shell.Disabled = o.NoShell
	}
	if set("shell-timeout") {
		cfg.Shell.TimeoutSeconds = o.ShellTimeout
	}
	if set("remote") {
		cfg.Remote = o.Remote
	}
	if set("price-input") || set("price-output") {
		cfg.Prices.Label = "the prices you gave"
		if set("price-input") {
			cfg.Prices.InputPerMillion = o.PriceInput
		}
		if set("price-output") {
			cfg.Prices.OutputPerMillion = o.PriceOutput
		}
	}
	name := o.Model
	if name == "" {
		name = cfg.DefaultModel
	}
	if name == "" {
		return cfg, repl.ModelConfig{}, dirs, usagef("no model: pass -m PATH.gguf (or -m NAME with models in %s)", path)
	}
	m, err := cfg.ResolveModel(name)
	if err != nil {
		return cfg, m, dirs, usagef("%v", err)
	}
	if set("ctx-size") {
		m.Context = o.Context
	}
	if set("cache-type-k") {
		m.CacheTypeK = o.CacheTypeK
	}
	if set("cache-type-v") {
		m.CacheTypeV = o.CacheTypeV
	}
	if set("mode") {
		m.Mode = o.Mode
	}
	if set("ram") {
		m.RAM = o.RAM
	}
	if set("cache") {
		m.Cache = o.Cache
	}
	if set("threads") {
		m.Threads = o.Threads
	}
	if set("rpc") {
		m.RPC = o.rpc.RPC
	}
	if set("tensor-split") {
		m.TensorSplit = o.rpc.TensorSplit
	}
	// The flags must pass the same checks as config.json.
	check := cfg
	check.DefaultModel = ""
	check.Models = map[string]repl.ModelConfig{m.Name: m}
	if err := check.Validate(); err != nil {
		return cfg, m, dirs, usagef("%v", err)
	}
	return cfg, m, dirs, nil
}

func replRun(c *cli.Context, streams *IOStreams, o *replOptions) error {
	if c.NArg() > 0 {
		return usagef("unknown command %q (agent help lists the commands)", c.Args().First())
	}
	cfg, model, dirs, err := o.settings(c)
	if err != nil {
		return err
	}
	var lines repl.LineReader
	if f, ok := streams.In.(*os.File); ok && streams.IsTTY && isatty.IsTerminal(f.Fd()) {
		lines, err = repl.NewTerminalReader(filepath.Join(dirs.State, "history"), streams.Out, streams.ErrOut)
		if err != nil {
			return err
		}
	}
	// Ctrl-C cancels the running answer instead of killing the program; at the prompt the line editor
	// sees it as a key.
	interrupts := make(chan os.Signal, 1)
	signal.Notify(interrupts, os.Interrupt)
	defer signal.Stop(interrupts)
	defer takeInterrupts(c.Context)()

	var rem *remote.Remote
	if cfg.Remote != "" {
		if rem, err = remote.Open(c.Context, cfg.Remote); err != nil {
			return usagef("--remote: %v", err)
		}
	}
	r, err := repl.New(c.Context, repl.Options{
		In: streams.In, Out: streams.Out, ErrOut: streams.ErrOut, Lines: lines,
		Config: cfg, Dirs: dirs, Model: model, Open: modelOpener(streams.ErrOut),
		Searcher:   &websearch.DuckDuckGo{BaseURL: cfg.Search.URL},
		Interrupts: interrupts,
		Remote:     rem,
	})
	if err != nil {
		if lines != nil {
			lines.Close()
		}
		return err
	}
	defer r.Close()
	return r.Run(c.Context)
}

// modelOpener loads models with the real engine, which decides the mode as for every command (auto:
// in RAM if the model fits the budget, else sniper for MoE models and stream for dense ones). The
// decision and any warnings are reported on status.
func modelOpener(status io.Writer) repl.Opener {
	return func(ctx context.Context, m repl.ModelConfig) (engine.Engine, error) {
		workers, err := (&rpcFlagSet{RPC: m.RPC, TensorSplit: m.TensorSplit}).parse()
		if err != nil {
			return nil, err
		}
		lo := local.Options{
			Context: m.Context, Threads: m.Threads, CacheTypeK: m.CacheTypeK, CacheTypeV: m.CacheTypeV,
			Mode: local.Mode(m.Mode), RAM: m.RAM, Cache: m.Cache, OnDecision: reportDecision(status, false),
			Checkpoints: local.DefaultCheckpoints, // a conversation's next turn resumes on a hybrid model
		}
		if workers != nil {
			if mode := strings.ToLower(m.Mode); mode != "" && mode != "auto" {
				if err := workers.checkMode(mode); err != nil {
					return nil, err
				}
			}
			// In its own process: a worker lost mid-answer fails that answer, not the session. The
			// engine process decides the mode as local.Open does, with the layers spread.
			lo.OnDecision, lo.Distributed = nil, true
			say := func(format string, args ...any) { fmt.Fprintf(status, format+"\n", args...) }
			return openIsolated(ctx, workers, m.Path, lo, status, say)
		}
		return local.Open(ctx, m.Path, lo)
	}
}
