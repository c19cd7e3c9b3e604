package main

import (
	"bufio"
	"context"
	"encoding/binary"
	"encoding/json"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/mattn/go-isatty"
	"github.com/urfave/cli/v2"

	"github.com/expertsniper/expertsniper/binding"
	"github.com/expertsniper/expertsniper/bytesize"
	"github.com/expertsniper/expertsniper/diskspace"
	"github.com/expertsniper/expertsniper/engine"
	"github.com/expertsniper/expertsniper/engine/local"
	"github.com/expertsniper/expertsniper/ggmlrpc"
	"github.com/expertsniper/expertsniper/plan"
	"github.com/expertsniper/expertsniper/sniper"
)

func init() { register(runCommand) }

// runOptions are the flags of `agent run`.
type runOptions struct {
	Model     string
	Prompt    string
	PromptSet bool
	Tokens    int
	Temp      float64
	Seed      uint
	Mode      string // auto, ram, sniper, stream
	RAM       string
	Cache     string
	Threads   int
	Readers   int
	LogitsOut string
	Stats     bool
	StatsJSON string
	RSSSample time.Duration
	NoRepack  bool
	Repack    bool
	Quiet     bool
	Doc       string // answer the prompt about this document (run_doc.go)
	DocCtx    int    // the context size for --doc (0: the model's training context, at most what the engine allows)
	// NoRecycle, Prefetch and Policy are sniper tuning switches (stream.Options).
	NoRecycle, Prefetch bool
	Policy              string
	// Warm reads every expert into the cache before the prompt (sniper.Sniper.Warm).
	Warm bool
	// PinHot pins up to this size of the hottest experts in HotFrom (an earlier run's --stats-json)
	// in the cache for good (sniper.Sniper.PinHot).
	PinHot, HotFrom string

	// rpc spreads the model over RPC workers (rpc.go).
	rpc rpcFlagSet

	// fs opens the model file for streaming; tests inject faults (nil: direct I/O).
	fs sniper.FS
	// predictInline makes --prefetch score every prediction (stream.Options.PredictInline).
	predictInline bool
	// statsOut receives --stats-json (opened up front by runRun).
	statsOut io.Writer
}

// The help of --ram and --cache, one text for every command that takes them (run, serve, the REPL,
// ask): they mean the same everywhere (engine/local.Decide).
const (
	ramUsage    = "all the memory the model may take (weights in RAM, expert cache, KV cache, buffers), e.g. 8GiB, or unlimited (default: available memory less a tenth, at least 256 MiB)"
	cacheUsage  = "sniper/stream: expert (or dense FFN) cache `SIZE`, e.g. 512MiB, 0 (reread every expert), or unlimited (default: what --ram leaves)"
	repackUsage = "sniper/stream: convert every streamed read into llama.cpp's repacked layout (exact against --mode ram) even when the cache cannot hold every streamed weight; by default only when it can, since rereading means reconverting, which costs more than the repacked kernels save"
)

func runCommand(streams *IOStreams) *cli.Command {
	o := &runOptions{}
	return &cli.Command{
		Name:  "run",
		Usage: "run one prompt: in RAM, or streaming experts (sniper) or dense FFNs (stream) from disk",
		Description: "Tokens go to stdout, status and statistics to stderr (-q: only warnings and errors).\n" +
			"--mode auto runs in RAM when the model fits --ram, else sniper for MoE models and stream for dense\n" +
			"ones. --ram is all the memory the model may take (weights held in RAM, expert cache, KV cache and\n" +
			"compute buffers: what `agent inspect` plans); by default, the memory available less a tenth (at\n" +
			"least 256 MiB) for the system, within a memory cgroup's limit. --cache sets the expert cache\n" +
			"directly (0: every chosen expert is read again every token; one layer's working set is always held;\n" +
			"unlimited: keep every expert read). Options that do not apply to the mode that runs are ignored\n" +
			"with a warning. MODEL is a .gguf path, a name from config.json, or a pulled OWNER/REPO[:QUANT]\n" +
			"(default: config.json's default_model).",
		Flags: append([]cli.Flag{
			&cli.StringFlag{Name: "model", Aliases: []string{"m"}, Usage: "`MODEL`: a .gguf path, a name from config.json or OWNER/REPO[:QUANT] (default: config.json's default_model)", EnvVars: []string{"EXPERTSNIPER_MODEL"}, Destination: &o.Model},
			&cli.StringFlag{Name: "prompt", Aliases: []string{"p"}, Usage: "prompt `TEXT` (- or absent: read stdin)", Action: func(*cli.Context, string) error { o.PromptSet = true; return nil }, Destination: &o.Prompt},
			&cli.IntFlag{Name: "max-tokens", Aliases: []string{"n"}, Value: 64, Usage: "tokens to generate", EnvVars: []string{"EXPERTSNIPER_MAX_TOKENS"}, Destination: &o.Tokens},
			&cli.Float64Flag{Name: "temp", Value: 0, Usage: "temperature (0: greedy)", Destination: &o.Temp},
			&cli.UintFlag{Name: "seed", Usage: "sampling seed for --temp > 0 (0 = random, as in the REPL)", EnvVars: []string{"EXPERTSNIPER_SEED"}, Destination: &o.Seed},
			&cli.StringFlag{Name: "mode", Value: "auto", Usage: "auto, ram, sniper or stream", EnvVars: []string{"EXPERTSNIPER_MODE"}, Destination: &o.Mode},
			&cli.StringFlag{Name: "ram", Usage: ramUsage, EnvVars: []string{"EXPERTSNIPER_RAM"}, Destination: &o.RAM},
			&cli.StringFlag{Name: "cache", Usage: cacheUsage, EnvVars: []string{"EXPERTSNIPER_CACHE"}, Destination: &o.Cache},
			&cli.IntFlag{Name: "threads", Aliases: []string{"t"}, Value: runtime.NumCPU(), Usage: "compute threads", EnvVars: []string{"EXPERTSNIPER_THREADS"}, Destination: &o.Threads},
			&cli.IntFlag{Name: "readers", Usage: fmt.Sprintf("sniper/stream: parallel disk reads (default: %d)", local.DefaultReaders), EnvVars: []string{"EXPERTSNIPER_READERS"}, Destination: &o.Readers},
			&cli.StringFlag{Name: "logits-out", Usage: "write the float32 logits of every evaluated position to `FILE` (compare runs with cmp)", Destination: &o.LogitsOut},
			&cli.BoolFlag{Name: "stats", Usage: "print detailed statistics at the end", Destination: &o.Stats},
			&cli.StringFlag{Name: "stats-json", Usage: "write the statistics as JSON to `FILE`", Destination: &o.StatsJSON},
			&cli.DurationFlag{Name: "rss-sample", Usage: "sample the resident set size at this interval (e.g. 10ms) and report its peak", Destination: &o.RSSSample},
			&cli.BoolFlag{Name: "no-repack", Usage: "no weight repacking (use_extra_bufts=false; every mode): the file's layout and llama.cpp's plain kernels, instead of the repacked layouts llama.cpp's default load uses", Destination: &o.NoRepack},
			&cli.BoolFlag{Name: "repack", Usage: repackUsage, Destination: &o.Repack},
			&cli.BoolFlag{Name: "prefetch", Value: true, Usage: "sniper: read the experts the next layer is predicted to choose while this one computes; stream: read the next layer's FFN (same results; --prefetch=false turns it off)", EnvVars: []string{"EXPERTSNIPER_PREFETCH"}, Destination: &o.Prefetch},
			&cli.StringFlag{Name: "policy", Usage: fmt.Sprintf("sniper/stream: cache eviction policy, lfu, lru or fixed (default: %s; stream: %s, which keeps the first layers that fit)", local.DefaultPolicy, sniper.DefaultDensePolicy), EnvVars: []string{"EXPERTSNIPER_POLICY"}, Destination: &o.Policy},
			&cli.BoolFlag{Name: "no-recycle", Usage: "sniper: release evicted experts' memory instead of reusing it for the next read (slower; for measurements)", Destination: &o.NoRecycle},
			&cli.BoolFlag{Name: "warm", Usage: "sniper: read every expert into the cache before the prompt (needs a cache that holds them all, e.g. --cache unlimited; measures the hook's own cost against --mode ram)", Destination: &o.Warm},
			&cli.StringFlag{Name: "pin-hot", Usage: "sniper: hold up to `SIZE` (at most half the cache) of the most used experts of --hot-from in the cache for good, read before the prompt", Destination: &o.PinHot},
			&cli.StringFlag{Name: "hot-from", Usage: "sniper: the statistics of an earlier run (its --stats-json `FILE`) that say which experts --pin-hot holds", Destination: &o.HotFrom},
			&cli.BoolFlag{Name: "quiet", Aliases: []string{"q"}, Usage: "no status lines (warnings and errors still show)", Destination: &o.Quiet},
			&cli.StringFlag{Name: "doc", Usage: "answer the prompt (a question) about document `FILE` (- = stdin), read in pages when it is longer than the context", Destination: &o.Doc},
			&cli.IntFlag{Name: "ctx-size", Aliases: []string{"c"}, Usage: "context size in tokens (default: what the prompt and -n need; with --doc, the model's)", EnvVars: []string{"EXPERTSNIPER_CTX_SIZE"}, Destination: &o.DocCtx},
		}, o.rpc.flags("EXPERTSNIPER_")...),
		Action: func(c *cli.Context) error {
			if c.NArg() > 0 {
				return usagef("run takes no arguments (the prompt goes in -p), got %q", c.Args().Slice())
			}
			if err := resolveRunModel(c, o); err != nil {
				return err
			}
			if o.Doc != "" {
				if !o.PromptSet || o.Prompt == "" || o.Prompt == "-" {
					return usagef("--doc needs the question in -p")
				}
				if o.Tokens < 0 || o.DocCtx < 0 {
					return usagef("-n and -c must not be negative, got %d and %d", o.Tokens, o.DocCtx)
				}
				return runDocument(c.Context, streams, o, o.Prompt)
			}
			return runRun(c.Context, streams, o)
		},
	}
}

// runStats is what `agent run` reports; field names are stable (--stats-json).
type runStats struct {
	Mode            string  `json:"mode"`
	PromptTokens    int     `json:"prompt_tokens"`
	GeneratedTokens int     `json:"generated_tokens"`
	PromptPerSec    float64 `json:"prompt_tok_per_sec"`
	DecodePerSec    float64 `json:"decode_tok_per_sec"`
	// RAMBudget is the memory budget the run had (--ram, or the default; -1: unlimited).
	RAMBudget     int64 `json:"ram_budget"`
	PinnedBytes   int64 `json:"pinned_bytes"`
	StreamedBytes int64 `json:"streamed_bytes"`
	CacheBudget   int64 `json:"cache_budget"`
	// RepackedTensors are the weights in llama.cpp's repacked CPU layouts (0 with --no-repack);
	// ConvertMs the time spent converting streamed reads into them (on the reading goroutines), and
	// ConvertMsPerExpert that per expert of the model's mean size.
	RepackedTensors    int     `json:"repacked_tensors"`
	ConvertMs          float64 `json:"convert_ms"`
	ConvertMsPerExpert float64 `json:"convert_ms_per_expert"`
	RSSBytes           int64   `json:"rss_bytes"`
	PeakRSSBytes       int64   `json:"peak_rss_bytes"`
	RSSSamples         int     `json:"rss_samples"`
	// RSSBeforeLoad is the process before the model was loaded (runtime, libraries); RSSAfterLoad
	// with the model loaded (pinned weights), RSSAfterContext with the context made (KV cache),
	// RSSAfterPrompt after prefill (compute buffers touched, experts of the prompt held).
	RSSBeforeLoad    int64 `json:"rss_before_load"`
	RSSAfterLoad     int64 `json:"rss_after_load"`
	RSSAfterContext  int64 `json:"rss_after_context"`
	RSSAfterPrompt   int64 `json:"rss_after_prompt"`
	CacheAfterPrompt int64 `json:"cache_bytes_after_prompt"`

	BytesRead   int64 `json:"bytes_read"`
	BytesIssued int64 `json:"bytes_issued"`
	Reads       int64 `json:"reads"`
	// Hits and Misses count cache lookups of experts, or in stream mode of layers (a layer read ahead
	// is a miss: it came from disk; prefetch_hits counts those).
	Hits            int64   `json:"hits"`
	Misses          int64   `json:"misses"`
	HitRate         float64 `json:"hit_rate"`
	PeakCacheBytes  int64   `json:"peak_cache_bytes"`
	ReadP50Micros   int64   `json:"read_p50_us"`
	ReadP99Micros   int64   `json:"read_p99_us"`
	PromptBytesRead int64   `json:"prompt_bytes_read"`
	// PromptHookMs is the time the prompt spent blocked in the router hook, PromptPrefetchReads
	// the experts read ahead while it ran.
	PromptHookMs        float64 `json:"prompt_hook_ms"`
	PromptPrefetchReads int64   `json:"prompt_prefetch_reads"`
	DecodeBytesRead     int64   `json:"decode_bytes_read"`
	DecodeEvals         int     `json:"decode_evals"`
	DecodeBytesPerTk    float64 `json:"decode_bytes_per_token"`
	// MissedExpertBytes is the sum of the index's sizes of every missed expert (computed from the
	// per-layer miss counts, independently of the sniper's byte counter).
	MissedExpertBytes int64 `json:"missed_expert_bytes"`
	// DecodeBytesIssued is what the sniper asked the disk for while generating (aligned supersets);
	// DecodeIOReadBytes what the kernel says this process read from storage meanwhile (-1: unknown).
	DecodeBytesIssued int64 `json:"decode_bytes_issued"`
	DecodeIOReadBytes int64 `json:"decode_io_read_bytes"`

	// PromptHits and PromptMisses are the cache lookups of prefill (the rest are decode's).
	PromptHits   int64 `json:"prompt_hits"`
	PromptMisses int64 `json:"prompt_misses"`
	// ExpertActivations[l][e] counts how often layer l's router chose expert e (sniper mode): what
	// --hot-from reads.
	ExpertActivations [][]int64 `json:"expert_activations,omitempty"`
	// HotPinned is how many experts --pin-hot holds in the cache.
	HotPinned int `json:"hot_pinned_experts"`

	// DecodeHookMs is the time decode spent blocked in the router hook (making experts resident),
	// DecodeReadMs the part of it spent reading; per token in the _per_token fields.
	DecodeHookMs         float64 `json:"decode_hook_ms"`
	DecodeReadMs         float64 `json:"decode_read_ms"`
	DecodeLockWaitMs     float64 `json:"decode_lock_wait_ms"`
	DecodeHookMsPerToken float64 `json:"decode_hook_ms_per_token"`
	// Recycled and Released count evicted expert page ranges reused for new reads / given back.
	Recycled int64 `json:"recycled_ranges"`
	Released int64 `json:"released_ranges"`
	// Prefetch counters (--prefetch): experts read ahead, later used, evicted unused; recall is the
	// share of the router's choices that were predicted.
	PrefetchReads  int64   `json:"prefetch_reads"`
	PrefetchHits   int64   `json:"prefetch_hits"`
	PrefetchWasted int64   `json:"prefetch_wasted"`
	PrefetchRecall float64 `json:"prefetch_recall"`
	// PrefetchRankPrecision[r]: of one-token predictions, the share whose r-th surest expert the
	// router chose (only ranks that were predicted).
	PrefetchRankPrecision []float64 `json:"prefetch_rank_precision,omitempty"`

	// --rpc: the workers, the layers each holds (local first), and the bytes on the wire (both ways)
	// while loading, during the prompt and per generated token (rpc.go: rpcTraffic).
	RPCWorkers             []string `json:"rpc_workers,omitempty"`
	RPCLayers              []int    `json:"rpc_layers,omitempty"`
	RPCLoadBytes           int64    `json:"rpc_load_bytes,omitempty"`
	RPCLoadSeconds         float64  `json:"rpc_load_seconds,omitempty"`
	RPCPromptBytes         int64    `json:"rpc_prompt_bytes,omitempty"`
	RPCDecodeBytes         int64    `json:"rpc_decode_bytes,omitempty"`
	RPCDecodeBytesPerToken float64  `json:"rpc_decode_bytes_per_token,omitempty"`
}

// engineOptions are run's flags as the engine's options: every knob goes to engine/local, which
// validates them and decides the mode (local.Decide) as it does for serve and the REPL.
func (o *runOptions) engineOptions(contextSize int, onDecision func(local.Decision)) local.Options {
	return local.Options{
		Slots: 1, Context: contextSize, Threads: o.Threads, BatchThreads: o.Threads,
		Mode: local.Mode(o.Mode), RAM: o.RAM, Cache: o.Cache, Policy: o.Policy, Readers: o.Readers,
		NoRecycle: o.NoRecycle, NoPrefetch: !o.Prefetch, NoRepack: o.NoRepack, Repack: o.Repack,
		StreamFS: o.fs, PredictInline: o.predictInline, OnDecision: onDecision,
	}
}

func runRun(ctx context.Context, streams *IOStreams, o *runOptions) (err error) {
	status := func(format string, args ...any) {
		if !o.Quiet {
			fmt.Fprintf(streams.ErrOut, format+"\n", args...)
		}
	}
	if o.Tokens < 0 {
		return usagef("-n must not be negative, got %d", o.Tokens)
	}
	if o.Threads <= 0 {
		return usagef("--threads must be positive, got %d", o.Threads)
	}
	if o.Temp < 0 {
		return usagef("--temp must not be negative, got %g", o.Temp)
	}
	if o.RSSSample < 0 {
		return usagef("--rss-sample must not be negative, got %s", o.RSSSample)
	}
	if o.DocCtx < 0 {
		return usagef("--ctx-size must not be negative, got %d", o.DocCtx)
	}
	if (o.PinHot == "") != (o.HotFrom == "") {
		return usagef("--pin-hot and --hot-from go together")
	}
	// Every engine option is checked before stdin is read or the model is touched, whichever mode
	// --mode auto will pick.
	if err := o.engineOptions(o.DocCtx, nil).Validate(); err != nil {
		return err
	}
	// Output files are opened before any work (a path that cannot be written fails now, not after the
	// run) and named only if the run succeeds (outputs.go).
	var logitsOut, statsOut *outputFile
	if o.LogitsOut != "" {
		if logitsOut, err = createOutput("--logits-out", o.LogitsOut); err != nil {
			return err
		}
		defer logitsOut.finish(&err)
	}
	if o.StatsJSON != "" {
		if statsOut, err = createOutput("--stats-json", o.StatsJSON); err != nil {
			return err
		}
		defer statsOut.finish(&err)
		o.statsOut = statsOut
	}
	prompt := o.Prompt
	if !o.PromptSet || prompt == "-" {
		if f, ok := streams.In.(*os.File); ok && isatty.IsTerminal(f.Fd()) {
			fmt.Fprintln(streams.ErrOut, "reading the prompt from the terminal (end it with Ctrl-D; or pass -p TEXT)")
		}
		b, err := io.ReadAll(streams.In)
		if err != nil {
			return fmt.Errorf("read the prompt from stdin: %w", err)
		}
		prompt = strings.TrimRight(string(b), "\n")
	}
	if prompt == "" {
		return usagef("the prompt is empty: pass -p TEXT or pipe it on stdin")
	}
	workers, err := o.rpc.parse()
	if err != nil {
		return err
	}
	if workers != nil && o.Mode != "auto" && o.Mode != "" {
		if err := workers.checkMode(strings.ToLower(o.Mode)); err != nil {
			return err
		}
	}
	pm, err := plan.Open(o.Model)
	if err != nil {
		return err
	}
	if o.LogitsOut != "" {
		// Before loading, what the logits take at least (the prompt is one token or more); the exact
		// size is checked once the prompt is tokenized.
		if err := diskspace.Check(filepath.Dir(o.LogitsOut), int64(1+o.Tokens)*int64(pm.Vocab)*4, "--logits-out"); err != nil {
			return err
		}
	}
	// The context holds the prompt and the answer: -c when given, else a bound from the prompt's
	// bytes (a token is at least one byte, bar a few special ones), so that the KV cache is sized to
	// the run rather than to the model's whole context.
	contextSize := o.DocCtx
	if contextSize == 0 {
		contextSize = len(prompt) + o.Tokens + 8
	}
	if err := binding.Init(); err != nil {
		return err
	}
	var ramOptions []binding.ModelOption
	var traffic *rpcTraffic
	var placement ggmlrpc.Placement
	if workers != nil {
		if err := workers.guardProcess(streams.ErrOut); err != nil {
			return err
		}
		if o.Stats || o.StatsJSON != "" {
			if traffic, err = measureTraffic(workers); err != nil {
				return err
			}
			defer workers.closeMeters()
		}
		rp, err := workers.connect(ctx, pm.Layers)
		if err != nil {
			return err
		}
		status("rpc: %s", rp.describe())
		ramOptions, placement = rp.Options, rp.Placement
	}

	var sampler *rssSampler
	rssBefore := sniper.CurrentRSS()
	if o.RSSSample > 0 {
		sampler = startRSSSampler(o.RSSSample)
		defer sampler.stop()
	}
	start := time.Now()
	eo := o.engineOptions(contextSize, reportDecision(streams.ErrOut, o.Quiet))
	if workers != nil {
		// The layers are spread over the workers: RAM mode, this machine holding its share.
		eo.ModelOptions, eo.Distributed = ramOptions, true
	}
	e, err := local.Open(ctx, o.Model, eo)
	if err != nil {
		return err
	}
	defer func() {
		if cerr := e.Close(); cerr != nil && err == nil {
			err = cerr
		}
	}()
	d := e.Decision()
	mode := string(d.Mode)
	info := e.Info()
	status("loaded %s in %s mode in %.2fs", info.Name, mode, time.Since(start).Seconds())
	sn := e.Sniper()
	traffic.loaded(placement)
	if o.Warm {
		if sn == nil || d.Mode != local.ModeSniper {
			return usagef("--warm needs sniper mode (the model runs in %s mode)", mode)
		}
		warmStart := time.Now()
		if err := sn.Warm(ctx); err != nil {
			return err
		}
		status("warmed the expert cache: %s read in %.2fs", bytesize.Format(sn.Stats().BytesRead), time.Since(warmStart).Seconds())
		sn.ResetStats()
	}
	hotPinned := 0
	if o.PinHot != "" {
		if hotPinned, err = pinHot(ctx, sn, mode, o, status); err != nil {
			return err
		}
	}
	rssAfterLoad := sniper.CurrentRSS()

	toks, err := e.Tokenize(prompt, true, true)
	if err != nil {
		return err
	}
	if o.LogitsOut != "" {
		// Every evaluated position's logits: a long run on a large vocabulary writes gigabytes.
		size := int64(len(toks)+o.Tokens) * int64(info.Vocab) * 4
		if err := diskspace.Check(filepath.Dir(o.LogitsOut), size, "--logits-out"); err != nil {
			return err
		}
	}
	// llama.cpp pads the context it makes; -c is what was asked for.
	if limit := min(info.Context, contextSize); len(toks)+o.Tokens > limit {
		return usagef("the prompt (%d tokens) and -n %d need %d tokens of context, -c gives %d", len(toks), o.Tokens, len(toks)+o.Tokens, limit)
	}
	if need := len(toks) + o.Tokens; info.ContextTrain > 0 && need > info.ContextTrain {
		fmt.Fprintf(streams.ErrOut, "warning: the prompt (%d tokens) and -n %d go past the %d tokens the model was trained on: expect worse output\n",
			len(toks), o.Tokens, info.ContextTrain)
	}
	if len(toks) >= longPrompt {
		status("evaluating the prompt: %d tokens", len(toks))
	}
	rssAfterContext := sniper.CurrentRSS()
	rssAfterPrompt := int64(0)

	var logits *logitsWriter
	if logitsOut != nil {
		logits = newLogitsWriter(logitsOut.File)
		defer func() {
			if ferr := logits.flush(); ferr != nil && err == nil {
				err = fmt.Errorf("--logits-out: %w", ferr)
			}
		}()
	}
	// The request goes through the engine's scheduler like serve's; the observer, called on its
	// loop between decodes, sees every position's logits and the exact end of the prompt (the
	// prompt/decode split of --stats).
	var atPrompt sniper.Stats
	ioAtPrompt := int64(-1)
	obs := local.Observer{
		Logits: logitsFunc(logits),
		PromptDone: func() {
			if sn != nil {
				atPrompt, ioAtPrompt = sn.Stats(), ioReadBytes()
			}
			rssAfterPrompt = sniper.CurrentRSS()
			traffic.prompted()
		},
	}
	if len(toks) >= longPrompt && !o.Quiet {
		obs.PromptProgress = func(done, total int) {
			if done < total {
				status("evaluating the prompt: %d of %d tokens done", done, total)
			}
		}
	}
	if o.Tokens == 0 {
		// Only the prompt: evaluate it (logits included) without sampling.
		obs.PromptDone = nil
		if err := e.Evaluate(ctx, toks, -1, obs); err != nil {
			return err
		}
		status("evaluated %d prompt tokens", len(toks))
		return report(streams, o, e, runStats{PromptTokens: len(toks)}, rssBefore, sampler, sniper.Stats{}, 0)
	}
	req := engine.Request{Prompt: prompt, PromptTokens: toks, MaxTokens: o.Tokens, Slot: -1,
		Sampling: engine.Sampling{Temperature: float32(o.Temp), Seed: uint32(o.Seed)}}
	res, err := e.CompleteObserved(ctx, req, obs, func(t engine.Token) error {
		_, err := io.WriteString(streams.Out, t.Text)
		return err
	})
	if err != nil {
		return err
	}
	fmt.Fprintln(streams.Out)
	evals := res.Timings.PredictedTokens
	if res.FinishReason == binding.FinishLength && evals > 0 {
		evals-- // the last token was sampled, never evaluated
	}
	rs := runStats{
		PromptTokens: res.Timings.PromptTokens, GeneratedTokens: res.Timings.PredictedTokens,
		PromptPerSec: res.Timings.PromptPerSecond, DecodePerSec: res.Timings.PredictedPerSecond,
	}
	rs.RSSAfterLoad, rs.RSSAfterContext, rs.RSSAfterPrompt, rs.CacheAfterPrompt = rssAfterLoad, rssAfterContext, rssAfterPrompt, atPrompt.CacheBytes
	rs.HotPinned = hotPinned
	traffic.fill(&rs, evals)
	rs.DecodeIOReadBytes = -1
	if ioAtPrompt >= 0 {
		if now := ioReadBytes(); now >= 0 {
			rs.DecodeIOReadBytes = now - ioAtPrompt
		}
	}
	return report(streams, o, e, rs, rssBefore, sampler, atPrompt, evals)
}

// reportDecision prints how the engine will run the model (unless quiet) and every warning (always),
// the same way in every command.
func reportDecision(w io.Writer, quiet bool) func(local.Decision) {
	return func(d local.Decision) {
		if !quiet {
			fmt.Fprintln(w, d.Summary)
		}
		for _, warning := range d.Warnings {
			fmt.Fprintf(w, "warning: %s\n", warning)
		}
	}
}

// longPrompt is the prompt length from which run says that it is evaluating it (a long prompt on a
// streamed model takes a while before the first token).
const longPrompt = 256

func logitsFunc(w *logitsWriter) binding.LogitsFunc {
	if w == nil {
		return nil
	}
	return w.write
}

func cacheString(n int64) string {
	if n < 0 {
		return "unlimited"
	}
	return sizeString(n)
}

func sizeString(n int64) string {
	switch {
	case n >= 1<<30:
		return fmt.Sprintf("%.2f GiB", float64(n)/(1<<30))
	case n >= 1<<20:
		return fmt.Sprintf("%.1f MiB", float64(n)/(1<<20))
	case n >= 1<<10:
		return fmt.Sprintf("%.1f KiB", float64(n)/(1<<10))
	}
	return fmt.Sprintf("%d B", n)
}

func report(streams *IOStreams, o *runOptions, e *local.Engine, rs runStats,
	rssBefore int64, sampler *rssSampler, atPrompt sniper.Stats, decodeEvals int) error {
	mode := string(e.Decision().Mode)
	rs.Mode, rs.RAMBudget = mode, e.Decision().RAM
	rs.RSSBytes = sniper.CurrentRSS()
	rs.RSSBeforeLoad = rssBefore
	if sampler != nil {
		rs.PeakRSSBytes, rs.RSSSamples = sampler.stop()
	}
	if sn := e.Sniper(); sn != nil {
		info, _ := e.StreamInfo()
		st := sn.Stats()
		rs.PinnedBytes, rs.StreamedBytes, rs.CacheBudget = info.PinnedBytes, info.StreamedBytes, e.Decision().CacheBudget
		rs.BytesRead, rs.BytesIssued, rs.Reads = st.BytesRead, st.BytesIssued, st.Reads
		rs.Hits, rs.Misses, rs.HitRate, rs.PeakCacheBytes = st.Hits, st.Misses, st.HitRate(), st.PeakCacheBytes
		rs.PromptHits, rs.PromptMisses = atPrompt.Hits, atPrompt.Misses
		if info.Mode == sniper.ModeDense {
			// Layers: a layer read ahead came from disk all the same, so it is a miss; the hit rate
			// is what the cache held (the read-ahead is in prefetch_hits).
			rs.Hits, rs.Misses = st.Hits-st.PrefetchHits, st.Misses+st.PrefetchHits
			rs.PromptHits, rs.PromptMisses = atPrompt.Hits-atPrompt.PrefetchHits, atPrompt.Misses+atPrompt.PrefetchHits
			if rs.Hits+rs.Misses > 0 {
				rs.HitRate = float64(rs.Hits) / float64(rs.Hits+rs.Misses)
			}
		}
		rs.ReadP50Micros, rs.ReadP99Micros = st.ReadP50.Microseconds(), st.ReadP99.Microseconds()
		rs.PromptBytesRead = atPrompt.BytesRead
		rs.PromptHookMs, rs.PromptPrefetchReads = float64(atPrompt.EnsureTime)/1e6, atPrompt.PrefetchReads
		rs.DecodeBytesRead = st.BytesRead - atPrompt.BytesRead
		rs.DecodeBytesIssued = st.BytesIssued - atPrompt.BytesIssued
		rs.DecodeEvals = decodeEvals
		if decodeEvals > 0 {
			rs.DecodeBytesPerTk = float64(rs.DecodeBytesRead) / float64(decodeEvals)
		}
		rs.DecodeHookMs = float64(st.EnsureTime-atPrompt.EnsureTime) / 1e6
		rs.DecodeReadMs = float64(st.ReadTime-atPrompt.ReadTime) / 1e6
		rs.DecodeLockWaitMs = float64(st.LockWaitTime-atPrompt.LockWaitTime) / 1e6
		if decodeEvals > 0 {
			rs.DecodeHookMsPerToken = rs.DecodeHookMs / float64(decodeEvals)
		}
		rs.Recycled, rs.Released = st.Recycled, st.Released
		rs.RepackedTensors, rs.ConvertMs = info.RepackedTensors, float64(st.ConvertTime)/1e6
		if st.ConvertedBytes > 0 && info.Layers > 0 && info.Experts > 0 {
			mean := float64(info.StreamedBytes) / float64(info.Layers*info.Experts)
			rs.ConvertMsPerExpert = rs.ConvertMs * mean / float64(st.ConvertedBytes)
		}
		rs.ExpertActivations = st.ExpertActivations
		rs.PrefetchReads, rs.PrefetchHits, rs.PrefetchWasted, rs.PrefetchRecall = st.PrefetchReads, st.PrefetchHits, st.PrefetchWasted, st.Recall()
		for r := 0; r < sniper.PredictionRanks && st.RankPredicted[r] > 0; r++ {
			rs.PrefetchRankPrecision = append(rs.PrefetchRankPrecision, st.RankPrecision(r))
		}
		idx := sn.Index()
		for l, n := range st.LayerMisses {
			rs.MissedExpertBytes += n * idx.ExpertBytes(l)
		}
	}
	if !o.Quiet || o.Stats {
		line := fmt.Sprintf("%s: prompt %d tok at %.1f tok/s, generated %d at %.2f tok/s, RSS %s",
			mode, rs.PromptTokens, rs.PromptPerSec, rs.GeneratedTokens, rs.DecodePerSec, sizeString(rs.RSSBytes))
		if rs.PeakRSSBytes > 0 {
			line += fmt.Sprintf(" (peak %s over %d samples)", sizeString(rs.PeakRSSBytes), rs.RSSSamples)
		}
		switch mode {
		case "ram":
		case "stream":
			line += fmt.Sprintf(", read %s per token, layers from the cache %.1f%%", sizeString(int64(rs.DecodeBytesPerTk)), 100*rs.HitRate)
		default:
			line += fmt.Sprintf(", read %s per token, hit rate %.1f%%", sizeString(int64(rs.DecodeBytesPerTk)), 100*rs.HitRate)
		}
		fmt.Fprintln(streams.ErrOut, line)
	}
	if o.Stats {
		printRPCStats(streams.ErrOut, rs)
	}
	if o.Stats && mode == "stream" {
		printDenseStats(streams.ErrOut, rs, o.Prefetch)
	} else if o.Stats && mode != "ram" {
		fmt.Fprintf(streams.ErrOut, "  pinned %s, streamed %s, cache budget %s (peak %s held)\n",
			sizeString(rs.PinnedBytes), sizeString(rs.StreamedBytes), cacheString(rs.CacheBudget), sizeString(rs.PeakCacheBytes))
		fmt.Fprintf(streams.ErrOut, "  reads %d, %s of experts (%s issued, aligned), hits %d, misses %d, read latency p50 %dµs p99 %dµs\n",
			rs.Reads, sizeString(rs.BytesRead), sizeString(rs.BytesIssued), rs.Hits, rs.Misses, rs.ReadP50Micros, rs.ReadP99Micros)
		fmt.Fprintf(streams.ErrOut, "  repacked %d weight tensors; converting streamed reads into the repacked layout took %.0f ms (%.2f ms per expert)\n",
			rs.RepackedTensors, rs.ConvertMs, rs.ConvertMsPerExpert)
		fmt.Fprintf(streams.ErrOut, "  RSS: %s before load, %s loaded, %s with the context, %s after the prompt (%s of experts held)\n",
			sizeString(rs.RSSBeforeLoad), sizeString(rs.RSSAfterLoad), sizeString(rs.RSSAfterContext), sizeString(rs.RSSAfterPrompt), sizeString(rs.CacheAfterPrompt))
		fmt.Fprintf(streams.ErrOut, "  prompt read %s (blocked in the router hook %.0f ms, %d experts read ahead); decode read %s over %d tokens (%d bytes issued; the kernel counted %d)\n",
			sizeString(rs.PromptBytesRead), rs.PromptHookMs, rs.PromptPrefetchReads, sizeString(rs.DecodeBytesRead), rs.DecodeEvals, rs.DecodeBytesIssued, rs.DecodeIOReadBytes)
		fmt.Fprintf(streams.ErrOut, "  decode blocked in the router hook %.0f ms (%.1f ms per token; %.0f ms reading, %.0f ms waiting for the lock); expert memory reused %d times, released %d times\n",
			rs.DecodeHookMs, rs.DecodeHookMsPerToken, rs.DecodeReadMs, rs.DecodeLockWaitMs, rs.Recycled, rs.Released)
		if o.Prefetch {
			var ranks []string
			for _, p := range rs.PrefetchRankPrecision {
				ranks = append(ranks, fmt.Sprintf("%.0f%%", 100*p))
			}
			fmt.Fprintf(streams.ErrOut, "  prefetch: %d experts read ahead, %d used, %d evicted unused; recall %.1f%%; precision by rank %s\n",
				rs.PrefetchReads, rs.PrefetchHits, rs.PrefetchWasted, 100*rs.PrefetchRecall, strings.Join(ranks, " "))
		}
	}
	if o.statsOut != nil {
		b, err := json.MarshalIndent(rs, "", "  ")
		if err != nil {
			return err
		}
		if _, err := o.statsOut.Write(append(b, '\n')); err != nil {
			return fmt.Errorf("write statistics: %w", err)
		}
	}
	return nil
}

// printDenseStats is --stats of stream mode: dense layers' FFNs, not experts, are what is cached,
// read and read ahead (the "hook" is the one before each layer's FFN).
func printDenseStats(w io.Writer, rs runStats, readAhead bool) {
	fmt.Fprintf(w, "  pinned %s, streamed %s (layers' FFNs), cache budget %s (peak %s held, with the layers computing and read ahead)\n",
		sizeString(rs.PinnedBytes), sizeString(rs.StreamedBytes), cacheString(rs.CacheBudget), sizeString(rs.PeakCacheBytes))
	fmt.Fprintf(w, "  layers: %d from the cache, %d read (%d of them ahead, while the layer before computed); %d reads, %s of FFNs (%s issued, aligned), read latency p50 %dµs p99 %dµs\n",
		rs.Hits, rs.Misses, rs.PrefetchHits, rs.Reads, sizeString(rs.BytesRead), sizeString(rs.BytesIssued), rs.ReadP50Micros, rs.ReadP99Micros)
	fmt.Fprintf(w, "  RSS: %s before load, %s loaded, %s with the context, %s after the prompt (%s of FFNs held)\n",
		sizeString(rs.RSSBeforeLoad), sizeString(rs.RSSAfterLoad), sizeString(rs.RSSAfterContext), sizeString(rs.RSSAfterPrompt), sizeString(rs.CacheAfterPrompt))
	fmt.Fprintf(w, "  prompt read %s (waited for layers %.0f ms); decode read %s over %d tokens (%d bytes issued; the kernel counted %d)\n",
		sizeString(rs.PromptBytesRead), rs.PromptHookMs, sizeString(rs.DecodeBytesRead), rs.DecodeEvals, rs.DecodeBytesIssued, rs.DecodeIOReadBytes)
	fmt.Fprintf(w, "  decode waited for layers %.0f ms (%.1f ms per token; %.0f ms reading on demand, %.0f ms waiting for the lock); FFN memory reused %d times, released %d times\n",
		rs.DecodeHookMs, rs.DecodeHookMsPerToken, rs.DecodeReadMs, rs.DecodeLockWaitMs, rs.Recycled, rs.Released)
	if readAhead {
		fmt.Fprintf(w, "  read-ahead: %d layers read ahead, %d used\n", rs.PrefetchReads, rs.PrefetchHits)
	}
}

// logitsWriter appends float32 logits, little-endian, to a file.
type logitsWriter struct {
	w   *bufio.Writer
	buf []byte
}

func newLogitsWriter(f io.Writer) *logitsWriter {
	return &logitsWriter{w: bufio.NewWriterSize(f, 1<<20)}
}

func (l *logitsWriter) write(_ int, logits []float32) error {
	l.buf = l.buf[:0]
	for _, v := range logits {
		l.buf = binary.LittleEndian.AppendUint32(l.buf, math.Float32bits(v))
	}
	_, err := l.w.Write(l.buf)
	return err
}

func (l *logitsWriter) flush() error { return l.w.Flush() }

// rssSampler reads the resident set size at a fixed interval and keeps the peak.
type rssSampler struct {
	done    chan struct{}
	wg      sync.WaitGroup
	once    sync.Once
	mu      sync.Mutex
	peak    int64
	samples int
}

func startRSSSampler(every time.Duration) *rssSampler {
	s := &rssSampler{done: make(chan struct{})}
	s.wg.Add(1)
	go func() {
		defer s.wg.Done()
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			r := sniper.CurrentRSS()
			s.mu.Lock()
			s.peak = max(s.peak, r)
			s.samples++
			s.mu.Unlock()
			select {
			case <-s.done:
				return
			case <-t.C:
			}
		}
	}()
	return s
}

// stop ends sampling (idempotent) and returns the peak and the number of samples.
func (s *rssSampler) stop() (int64, int) {
	s.once.Do(func() { close(s.done); s.wg.Wait() })
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.peak, s.samples
}

// pinHot holds the hottest experts of o.HotFrom (an earlier run's --stats-json) in the cache, up to
// o.PinHot bytes, and forgets the reads in the statistics.
func pinHot(ctx context.Context, sn *sniper.Sniper, mode string, o *runOptions, status func(string, ...any)) (int, error) {
	if sn == nil || mode != "sniper" {
		return 0, usagef("--pin-hot needs sniper mode (the model runs in %s mode)", mode)
	}
	size, err := plan.ParseSize(o.PinHot)
	if err != nil || size <= 0 {
		return 0, usagef("--pin-hot: want a size such as 1GiB, got %q", o.PinHot)
	}
	b, err := os.ReadFile(o.HotFrom)
	if err != nil {
		return 0, fmt.Errorf("--hot-from: %w", err)
	}
	var prev struct {
		Activations [][]int64 `json:"expert_activations"`
	}
	if err := json.Unmarshal(b, &prev); err != nil {
		return 0, fmt.Errorf("--hot-from %s: not run statistics: %w", o.HotFrom, err)
	}
	idx := sn.Index()
	if len(prev.Activations) != idx.Layers {
		return 0, fmt.Errorf("--hot-from %s: statistics of %d layers, the model has %d (another model's run?)", o.HotFrom, len(prev.Activations), idx.Layers)
	}
	start := time.Now()
	n, bytes, err := sn.PinHot(ctx, sniper.HottestExperts(prev.Activations), size)
	if err != nil {
		return 0, err
	}
	status("pinned the %d most used experts of %s (%s) in %.2fs", n, o.HotFrom, bytesize.Format(bytes), time.Since(start).Seconds())
	sn.ResetStats()
	return n, nil
}
