package main

import (
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"runtime"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/expertsniper/expertsniper/bench"
	"github.com/expertsniper/expertsniper/binding"
	"github.com/expertsniper/expertsniper/gguf"
	"github.com/expertsniper/expertsniper/memcap"
	"github.com/expertsniper/expertsniper/sniper"
)

func init() { register(benchCommand) }

type benchOptions struct {
	Model        string
	PromptTokens int
	GenTokens    int
	Threads      int
	Configs      string
	Budgets      string
	Caps         string
	Variants     string
	JSON         bool
	Markdown     bool
	Cold         bool
	Repetitions  int
	Rounds       int
	PeerWarmup   bool
	PeerGen      int
	Timeout      time.Duration
	Probe        time.Duration
	LlamaBench   string
	Agent        string
	From         string
	Verbose      bool
	rpc          rpcFlagSet
}

func benchCommand(streams *IOStreams) *cli.Command {
	o := &benchOptions{}
	return &cli.Command{
		Name:  "bench",
		Usage: "measure a workload against stock llama.cpp under memory caps that include the page cache",
		Description: "Runs one workload (a prompt of -p tokens, then -n generated) in several configurations, each a\n" +
			"child process in its own memory cgroup capped at each of --caps (page cache included, so a model\n" +
			"bigger than the cap really does not fit): stock llama.cpp (llama-bench, mmap, --repack 0), stock\n" +
			"llama.cpp with its defaults (weights repacked, in RAM; uncapped only), our in-RAM mode, and the\n" +
			"sniper (MoE) or dense streaming with each of --budgets as the expert cache. Prints prefill and\n" +
			"decode tok/s, ratios to the peer under the same cap, to our uncapped in-RAM run and to stock's\n" +
			"default decode, peak RSS and cgroup peak, decode bytes read per token, disk GB/s and the cache\n" +
			"hit rate, plus the disk-bound ceiling measured with direct reads of the model's experts. With --rpc,\n" +
			"also our in-RAM mode spread over those workers (configuration rpc), with the bytes on the wire per token.\n" +
			"Linux only (memory cgroups); runs as root or with a delegated cgroup.",
		Flags: append([]cli.Flag{
			&cli.StringFlag{Name: "model", Aliases: []string{"m"}, Usage: "GGUF model `FILE` (required)", Destination: &o.Model},
			&cli.IntFlag{Name: "prompt-tokens", Aliases: []string{"p"}, Value: 32, Usage: "prompt length in tokens", Destination: &o.PromptTokens},
			&cli.IntFlag{Name: "gen-tokens", Aliases: []string{"n"}, Value: 16, Usage: "tokens to generate", Destination: &o.GenTokens},
			&cli.IntFlag{Name: "threads", Aliases: []string{"t"}, Value: runtime.NumCPU(), Usage: "compute threads (every configuration)", Destination: &o.Threads},
			&cli.StringFlag{Name: "configs", Value: "auto", Usage: "comma-separated `KINDS`: llama.cpp, llama.cpp-default, ram, sniper, stream (auto: llama.cpp,llama.cpp-default,ram and sniper or stream by model)", Destination: &o.Configs},
			&cli.StringFlag{Name: "budgets", Value: "1GiB,2GiB,4GiB", Usage: "expert cache `SIZES` for sniper/stream (unlimited allowed)", Destination: &o.Budgets},
			&cli.StringFlag{Name: "caps", Value: "none,8GiB,4GiB", Usage: "memory caps `SIZES` (page cache included; none = uncapped, still measured)", Destination: &o.Caps},
			&cli.StringFlag{Name: "variants", Usage: "run each streaming configuration once per `NAME=FLAGS` entry, comma-separated, adding FLAGS to agent run (e.g. plain=,prefetch=--prefetch)", Destination: &o.Variants},
			&cli.BoolFlag{Name: "json", Usage: "print the report as JSON", Destination: &o.JSON},
			&cli.BoolFlag{Name: "markdown", Usage: "print the report as a markdown table", Destination: &o.Markdown},
			&cli.BoolFlag{Name: "cold", Usage: "drop the whole page cache before every configuration (needs root; otherwise only the model file is evicted)", Destination: &o.Cold},
			&cli.IntFlag{Name: "reps", Value: 1, Usage: "llama-bench repetitions", Destination: &o.Repetitions},
			&cli.IntFlag{Name: "rounds", Value: 1, Usage: "run the whole list of configurations this many times, round after round, and report each one's median tok/s with the range (this machine's speed drifts: ratios from one round can mislead)", Destination: &o.Rounds},
			&cli.IntFlag{Name: "peer-gen-tokens", Usage: "tokens the peer generates, if fewer than -n (stock mmap on a model far bigger than the cap decodes a token a minute; its rate is steady after a couple)", Destination: &o.PeerGen},
			&cli.DurationFlag{Name: "timeout", Usage: "kill a configuration still running after this `DURATION` and report it as failed (0: no limit)", Destination: &o.Timeout},
			&cli.BoolFlag{Name: "peer-warmup", Usage: "let llama-bench warm up first (our runs have no warmup, so off by default)", Destination: &o.PeerWarmup},
			&cli.DurationFlag{Name: "probe", Value: 3 * time.Second, Usage: "duration of the direct-read disk probe (0: skip)", Destination: &o.Probe},
			&cli.StringFlag{Name: "llama-bench", Usage: "llama-bench `PATH` (default: found on PATH)", Destination: &o.LlamaBench},
			&cli.StringFlag{Name: "from", Usage: "print a report saved with --json from `FILE` (as a table, markdown or JSON) instead of running", Destination: &o.From},
			&cli.StringFlag{Name: "agent", Hidden: true, Usage: "agent `BINARY` that runs our configurations (default: this one)", Destination: &o.Agent},
			&cli.BoolFlag{Name: "verbose", Aliases: []string{"v"}, Usage: "copy the children's stderr to ours", Destination: &o.Verbose},
		}, o.rpc.flags("EXPERTSNIPER_")...),
		Subcommands: []*cli.Command{correlateCommand(streams)},
		Action: func(c *cli.Context) error {
			if c.NArg() > 0 {
				return usagef("bench takes no arguments, got %q", c.Args().Slice())
			}
			if o.From != "" {
				return printSavedBench(streams, o)
			}
			if o.Model == "" {
				return usagef("bench: -m/--model FILE is required")
			}
			return runBench(c.Context, streams, o, strings.Join(os.Args, " "))
		},
	}
}

// correlateCommand rewrites a generated model so that its routing is skewed and temporally
// correlated (bench.CorrelateRouting).
func correlateCommand(streams *IOStreams) *cli.Command {
	var model string
	var strength float64
	var seed uint64
	return &cli.Command{
		Name:  "correlate",
		Usage: "make a generated model route like a real one: skewed and temporally correlated (rewrites it in place)",
		Description: "Random weights route almost uniformly, the worst case for an expert cache. This adds one shared\n" +
			"random direction, of --strength times each row's own size, to every token embedding, so that every\n" +
			"hidden state carries it and each layer's router keeps favouring the same experts. Apply it once to a\n" +
			"freshly generated F32/F16/Q8_0/Q4_0 model (e.g. from agent mkmodel, optionally with --skew).",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "model", Aliases: []string{"m"}, Usage: "GGUF model `FILE` to rewrite", Destination: &model, Required: true},
			&cli.Float64Flag{Name: "strength", Value: 1, Usage: "size of the shared component relative to each token's own", Destination: &strength},
			&cli.Uint64Flag{Name: "seed", Value: 1, Usage: "seed of the shared direction", Destination: &seed},
		},
		Action: func(c *cli.Context) error {
			if c.NArg() > 0 {
				return usagef("bench correlate takes no arguments, got %q", c.Args().Slice())
			}
			if err := bench.CorrelateRouting(model, strength, seed); err != nil {
				return err
			}
			fmt.Fprintf(streams.ErrOut, "rewrote the token embeddings of %s (shared direction, strength %g)\n", model, strength)
			return nil
		},
	}
}

func runBench(ctx context.Context, streams *IOStreams, o *benchOptions, command string) error {
	// Ctrl-C and SIGTERM cancel ctx (signals.go), so that the child is killed and its cgroup removed
	// before we exit.
	w := bench.Workload{Model: o.Model, PromptTokens: o.PromptTokens, GenTokens: o.GenTokens, Threads: o.Threads}
	workers, err := o.rpc.parse()
	if err != nil {
		return err
	}
	if workers != nil {
		w.RPC, w.TensorSplit = strings.Join(workers.Endpoints, ","), o.rpc.TensorSplit
	}
	if err := w.Validate(); err != nil {
		return usageError{err}
	}
	if o.JSON && o.Markdown {
		return usagef("bench: --json and --markdown exclude each other")
	}
	budgets, err := bench.ParseSizes(o.Budgets)
	if err != nil {
		return usagef("bench --budgets: %v", err)
	}
	caps, err := bench.ParseSizes(o.Caps)
	if err != nil {
		return usagef("bench --caps: %v", err)
	}
	variants, err := bench.ParseVariants(o.Variants)
	if err != nil {
		return usagef("bench --variants: %v", err)
	}
	f, err := gguf.Open(o.Model)
	if err != nil {
		return err
	}
	kinds, err := benchKinds(o.Configs, sniper.IsMoE(f), workers != nil)
	if err != nil {
		return usageError{err}
	}
	if workers != nil {
		// A worker serves one client at a time and the configurations run one after another; a
		// worker that is down fails here, not in the middle of the matrix.
		if err := workers.probeAll(ctx, false); err != nil {
			return err
		}
	}
	if err := memcap.Supported(); err != nil {
		return fmt.Errorf("bench runs every configuration under a memory cap: %w", err)
	}

	if o.Rounds < 1 {
		return usagef("bench --rounds: %d: at least 1", o.Rounds)
	}
	if o.PeerGen < 0 || o.Timeout < 0 {
		return usagef("bench: --peer-gen-tokens and --timeout must not be negative")
	}
	r := &bench.Runner{Repetitions: o.Repetitions, Rounds: o.Rounds, PeerWarmup: o.PeerWarmup, Cold: o.Cold,
		Log: streams.ErrOut, Verbose: o.Verbose, PeerGenTokens: o.PeerGen, Timeout: o.Timeout}
	for _, k := range kinds {
		if k == bench.KindPeer || k == bench.KindPeerDefault {
			r.LlamaBench = o.LlamaBench
			if r.LlamaBench == "" {
				if r.LlamaBench, err = exec.LookPath("llama-bench"); err != nil {
					return fmt.Errorf("bench: llama-bench (stock llama.cpp, the peer) is not on PATH: install llama.cpp's tools, pass --llama-bench PATH, or leave llama.cpp out of --configs")
				}
			}
		} else if r.Agent == "" {
			if r.Agent = o.Agent; r.Agent == "" {
				if r.Agent, err = os.Executable(); err != nil {
					return fmt.Errorf("bench: find the agent binary to run our configurations: %w", err)
				}
			}
			if r.Prompt, err = benchPrompt(ctx, o.Model, o.PromptTokens); err != nil {
				return err
			}
		}
	}

	var bound *bench.DiskBound
	if o.Probe > 0 {
		fmt.Fprintf(streams.ErrOut, "probing direct reads of %s's experts for %s\n", o.Model, o.Probe)
		d, err := bench.ProbeDisk(ctx, o.Model, bench.ProbeOptions{Duration: o.Probe})
		if err != nil {
			return err
		}
		bound = &d
	}
	rep, err := r.Run(ctx, w, bench.Matrix(kinds, budgets, caps, variants...))
	if err != nil {
		return err
	}
	rep.DiskBound, rep.Command = bound, command
	rep.ComputeRatios() // again: a dense stream row's share of the disk bound needs the bound
	return writeBenchReport(streams, o, rep)
}

// printSavedBench re-renders a report saved with --json.
func printSavedBench(streams *IOStreams, o *benchOptions) error {
	data, err := os.ReadFile(o.From)
	if err != nil {
		return fmt.Errorf("bench --from: %w", err)
	}
	var rep bench.Report
	if err := json.Unmarshal(data, &rep); err != nil {
		return fmt.Errorf("bench --from %q: not a saved report: %w", o.From, err)
	}
	return writeBenchReport(streams, o, &rep)
}

func writeBenchReport(streams *IOStreams, o *benchOptions, rep *bench.Report) error {
	switch {
	case o.JSON:
		return rep.WriteJSON(streams.Out)
	case o.Markdown:
		return rep.WriteMarkdown(streams.Out)
	}
	return rep.WriteText(streams.Out)
}

// benchKinds parses --configs; auto picks the streaming kind the model supports, and rpc when
// --rpc names workers.
func benchKinds(s string, moe, rpc bool) ([]bench.Kind, error) {
	if strings.EqualFold(strings.TrimSpace(s), "auto") {
		kinds := []bench.Kind{bench.KindPeer, bench.KindPeerDefault, bench.KindRAM, bench.KindStream}
		if moe {
			kinds[3] = bench.KindSniper
		}
		if rpc {
			kinds = append(kinds, bench.KindRPC)
		}
		return kinds, nil
	}
	var out []bench.Kind
	for _, part := range strings.Split(s, ",") {
		if strings.TrimSpace(part) == "" {
			continue
		}
		k, err := bench.ParseKind(part)
		if err != nil {
			return nil, fmt.Errorf("bench --configs: %w", err)
		}
		if k == bench.KindSniper && !moe {
			return nil, fmt.Errorf("bench --configs: sniper needs a Mixture-of-Experts model; this one is dense (use stream)")
		}
		if k == bench.KindStream && moe {
			return nil, fmt.Errorf("bench --configs: stream is for dense models; this one has experts (use sniper)")
		}
		if k == bench.KindRPC && !rpc {
			return nil, fmt.Errorf("bench --configs: rpc needs the workers in --rpc HOST:PORT,…")
		}
		out = append(out, k)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("bench --configs: no configuration given")
	}
	return out, nil
}

// benchPrompt makes a prompt that `agent run` tokenizes to exactly n tokens, using the model's own
// vocabulary (loaded alone, without weights).
func benchPrompt(ctx context.Context, model string, n int) (string, error) {
	if err := binding.Init(); err != nil {
		return "", err
	}
	m, err := binding.LoadModel(ctx, model, binding.WithVocabOnly())
	if err != nil {
		return "", fmt.Errorf("bench: load the vocabulary of %q: %w", model, err)
	}
	defer m.Close()
	text, got, err := bench.FitPrompt(vocabTokenizer{m}, n)
	if err != nil {
		return "", fmt.Errorf("bench: %w", err)
	}
	if got != n {
		return "", fmt.Errorf("bench: could not make a prompt of exactly %d tokens for this vocabulary (closest: %d)", n, got)
	}
	return text, nil
}

// vocabTokenizer tokenizes as `agent run` does (special tokens parsed).
type vocabTokenizer struct{ m *binding.Model }

func (v vocabTokenizer) Tokenize(text string, addSpecial bool) ([]int32, error) {
	return v.m.Tokenize(text, addSpecial, true)
}

func (v vocabTokenizer) Detokenize(toks []int32) (string, error) {
	return v.m.Detokenize(toks, false, false)
}
