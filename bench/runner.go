package bench

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/expertsniper/expertsniper/memcap"
)

// Runner runs configurations as child processes under memory caps.
type Runner struct {
	// LlamaBench is the stock llama-bench of the same llama.cpp build; Agent our own binary.
	LlamaBench string
	Agent      string
	// Prompt is the text our runs evaluate; it should tokenize to the workload's prompt length.
	Prompt string
	// Repetitions of llama-bench's tests (averaged by llama-bench), and whether it warms up first.
	Repetitions int
	PeerWarmup  bool
	// PeerGenTokens, if positive, is the peer's generated tokens instead of the workload's: stock
	// mmap on a dense model far bigger than the cap decodes a token a minute, and its rate is steady
	// after a couple.
	PeerGenTokens int
	// Timeout, if positive, bounds each configuration's run: one still running is killed and
	// reported as failed, and the matrix goes on.
	Timeout time.Duration
	// Cold drops the page cache before every configuration (needs root).
	Cold bool
	// Rounds runs the whole list of configurations this many times, one round after the other (so
	// that a slow spell of the machine hits every configuration alike), and reports each
	// configuration's median (0 or 1: once).
	Rounds int
	// Env for the children (nil: inherit).
	Env []string
	// Log receives progress lines and the children's stderr when Verbose.
	Log     io.Writer
	Verbose bool
	// TempDir holds the statistics files of our runs ("" = os.TempDir()).
	TempDir string
	// Exec runs one child under a cap; nil means memcap.Run. Tests replace it.
	Exec func(ctx context.Context, spec memcap.Spec) (memcap.Result, error)
	// DropCaches drops the page cache; nil means memcap.DropCaches.
	DropCaches func() error
}

// Matrix builds the configurations to run: for every cap, the peer, our in-RAM mode and one streaming
// run per budget and variant (kinds in the order given; no variants means one without extra flags). A
// budget that cannot fit under its cap is kept as a row that says so, rather than silently dropped.
func Matrix(kinds []Kind, budgets, caps []int64, variants ...Variant) []Config {
	if len(variants) == 0 {
		variants = []Variant{{}}
	}
	var out []Config
	if slices.Contains(kinds, KindPeerDefault) {
		// Uncapped only: it holds a repacked copy of the weights in RAM; a cap would only kill it.
		out = append(out, Config{Kind: KindPeerDefault, Cap: memcap.NoLimit})
	}
	for _, cp := range caps {
		for _, k := range kinds {
			if k == KindPeerDefault {
				continue
			}
			if k == KindSniper || k == KindStream {
				for _, b := range budgets {
					for _, v := range variants {
						out = append(out, Config{Kind: k, Budget: b, Cap: cp, Variant: v.Name, Flags: v.Flags})
					}
				}
				continue
			}
			out = append(out, Config{Kind: k, Cap: cp})
		}
	}
	return out
}

// Run measures every configuration in order and returns the report with ratios filled in. Only
// problems of the harness itself are errors; a configuration that fails (OOM kill, crash, bad output)
// becomes a row with its error.
func (r *Runner) Run(ctx context.Context, w Workload, configs []Config) (*Report, error) {
	if err := w.Validate(); err != nil {
		return nil, err
	}
	st, err := os.Stat(w.Model)
	if err != nil {
		return nil, fmt.Errorf("bench: model: %w", err)
	}
	if r.Cold {
		if err := r.dropCaches(); err != nil {
			return nil, fmt.Errorf("bench: --cold: %w", err)
		}
	}
	rep := &Report{Machine: ThisMachine(), Workload: w, ModelSize: st.Size(), Started: time.Now().UTC(), Rounds: max(r.Rounds, 1)}
	runs := make([][]Measurement, len(configs))
	for round := 1; round <= rep.Rounds; round++ {
		for i, c := range configs {
			if err := ctx.Err(); err != nil {
				return rep, err
			}
			if round > 1 && len(runs[i]) > 0 && strings.HasPrefix(runs[i][0].Err, skippedPrefix) {
				continue // nothing to measure again
			}
			prefix := ""
			if rep.Rounds > 1 {
				prefix = fmt.Sprintf("round %d/%d ", round, rep.Rounds)
			}
			r.logf("%s[%d/%d] %s, cap %s", prefix, i+1, len(configs), c.Name(), FormatSize(c.Cap))
			m, err := r.one(ctx, w, c)
			if err != nil {
				return rep, err
			}
			if m.OK() {
				r.logf("        prefill %.2f tok/s, decode %.2f tok/s, peak RSS %s, cgroup peak %s (%s)", m.PrefillTPS, m.DecodeTPS,
					FormatSize(m.PeakRSS), FormatSize(m.PeakUsage), m.Wall.Round(time.Millisecond))
			} else {
				r.logf("        failed: %s", m.Err)
			}
			runs[i] = append(runs[i], m)
		}
	}
	for _, ms := range runs {
		rep.Results = append(rep.Results, Median(ms))
	}
	rep.ComputeRatios()
	return rep, nil
}

// skippedPrefix starts the error of a configuration that cannot run at all.
const skippedPrefix = "skipped: "

func (r *Runner) one(ctx context.Context, w Workload, c Config) (Measurement, error) {
	if c.Cap >= 0 && (c.Kind == KindSniper || c.Kind == KindStream) && (c.Budget < 0 || c.Budget >= c.Cap) {
		budget := FormatSize(c.Budget)
		if c.Budget < 0 {
			budget = "unlimited"
		}
		return failed(c, fmt.Errorf(skippedPrefix+"a cache budget of %s cannot fit under a cap of %s", budget, FormatSize(c.Cap))), nil
	}
	if c.Kind == KindSniper && c.Budget >= 0 && slices.Contains(c.Flags, "--warm") {
		return failed(c, errors.New(skippedPrefix+"--warm needs a cache that holds every expert (unlimited)")), nil
	}
	if r.Cold {
		if err := r.dropCaches(); err != nil {
			return Measurement{}, fmt.Errorf("bench: --cold: %w", err)
		}
	} else if err := evictFile(w.Model); err != nil {
		return Measurement{}, fmt.Errorf("bench: %w", err)
	}
	switch c.Kind {
	case KindPeer, KindPeerDefault:
		return r.peer(ctx, w, c)
	case KindRAM, KindSniper, KindStream, KindRPC:
		return r.ours(ctx, w, c)
	}
	return Measurement{}, fmt.Errorf("bench: unknown configuration kind %q", c.Kind)
}

func (r *Runner) peer(ctx context.Context, w Workload, c Config) (Measurement, error) {
	if r.LlamaBench == "" {
		return failed(c, errors.New("llama-bench not found (it comes with llama.cpp's tools; inside the build root it is on PATH)")), nil
	}
	var stdout bytes.Buffer
	stderr := r.stderrSink()
	pw := w
	if r.PeerGenTokens > 0 {
		pw.GenTokens = r.PeerGenTokens
	}
	args := PeerArgs(pw, r.Repetitions, r.PeerWarmup)
	if c.Kind == KindPeerDefault {
		args = PeerDefaultArgs(pw, r.Repetitions)
	}
	res, err := r.execTimed(ctx, memcap.Spec{Path: r.LlamaBench, Args: append([]string{r.LlamaBench}, args...),
		Env: r.Env, Stdout: &stdout, Stderr: stderr, Limit: c.Cap})
	if errors.Is(err, errTimedOut) {
		return failed(c, err), nil
	}
	if err != nil {
		return Measurement{}, fmt.Errorf("bench: %s: %w", c.Name(), err)
	}
	if err := res.Err(); err != nil {
		return failed(c, fmt.Errorf("llama-bench %v%s", err, stderr.tail())), nil
	}
	pr, err := ParsePeer(stdout.Bytes())
	if err != nil {
		return failed(c, err), nil
	}
	m := Measurement{Config: c, PromptTokens: pr.PromptTokens, GenTokens: pr.GenTokens, PrefillTPS: pr.PrefillTPS, DecodeTPS: pr.DecodeTPS}
	m.clearOptional()
	fillProcess(&m, res)
	return m, nil
}

func (r *Runner) ours(ctx context.Context, w Workload, c Config) (Measurement, error) {
	if r.Agent == "" {
		return Measurement{}, errors.New("bench: no agent binary to run our configurations with")
	}
	if r.Prompt == "" {
		return Measurement{}, errors.New("bench: no prompt for our configurations")
	}
	tmp, err := os.MkdirTemp(r.TempDir, "agent-bench-")
	if err != nil {
		return Measurement{}, fmt.Errorf("bench: temporary directory: %w", err)
	}
	defer os.RemoveAll(tmp)
	statsPath := filepath.Join(tmp, "stats.json")
	stderr := r.stderrSink()
	res, err := r.execTimed(ctx, memcap.Spec{Path: r.Agent, Args: append([]string{r.Agent}, OursArgs(w, c, r.Prompt, statsPath)...),
		Env: r.Env, Stdout: io.Discard, Stderr: stderr, Limit: c.Cap})
	if errors.Is(err, errTimedOut) {
		return failed(c, err), nil
	}
	if err != nil {
		return Measurement{}, fmt.Errorf("bench: %s: %w", c.Name(), err)
	}
	if err := res.Err(); err != nil {
		return failed(c, fmt.Errorf("agent run %v%s", err, stderr.tail())), nil
	}
	data, err := os.ReadFile(statsPath)
	if err != nil {
		return failed(c, fmt.Errorf("agent run wrote no statistics: %w%s", err, stderr.tail())), nil
	}
	s, err := ParseRunStats(data)
	if err != nil {
		return failed(c, err), nil
	}
	m := measurementFromRun(c, s)
	fillProcess(&m, res)
	return m, nil
}

func fillProcess(m *Measurement, res memcap.Result) {
	m.PeakRSS, m.PeakUsage, m.DiskRead, m.Wall = res.PeakRSS, res.PeakUsage, res.ReadBytes, res.Wall
}

func (r *Runner) exec(ctx context.Context, spec memcap.Spec) (memcap.Result, error) {
	if r.Exec != nil {
		return r.Exec(ctx, spec)
	}
	return memcap.Run(ctx, spec)
}

// errTimedOut is the error of a configuration killed at Runner.Timeout.
var errTimedOut = errors.New("timed out")

// execTimed is exec bounded by r.Timeout: a child still running then is killed, and the error wraps
// errTimedOut (ctx's own cancellation stays an error of the harness).
func (r *Runner) execTimed(ctx context.Context, spec memcap.Spec) (memcap.Result, error) {
	if r.Timeout <= 0 {
		return r.exec(ctx, spec)
	}
	tctx, cancel := context.WithTimeout(ctx, r.Timeout)
	defer cancel()
	res, err := r.exec(tctx, spec)
	if err != nil && ctx.Err() == nil && tctx.Err() != nil {
		return res, fmt.Errorf("%w: killed after --timeout %v", errTimedOut, r.Timeout)
	}
	return res, err
}

func (r *Runner) dropCaches() error {
	if r.DropCaches != nil {
		return r.DropCaches()
	}
	return memcap.DropCaches()
}

func (r *Runner) logf(format string, args ...any) {
	if r.Log != nil {
		fmt.Fprintf(r.Log, format+"\n", args...)
	}
}

// stderrSink keeps the end of a child's stderr for error messages, and copies it to the log when
// verbose.
func (r *Runner) stderrSink() *tailBuffer {
	t := &tailBuffer{max: 2048}
	if r.Verbose {
		t.copyTo = r.Log
	}
	return t
}

type tailBuffer struct {
	buf    []byte
	max    int
	copyTo io.Writer
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	if t.copyTo != nil {
		t.copyTo.Write(p)
	}
	t.buf = append(t.buf, p...)
	if len(t.buf) > t.max {
		t.buf = t.buf[len(t.buf)-t.max:]
	}
	return len(p), nil
}

// tail is ": <last lines>" for an error message, or "" when the child printed nothing.
func (t *tailBuffer) tail() string {
	s := strings.TrimSpace(string(t.buf))
	if s == "" {
		return ""
	}
	lines := strings.Split(s, "\n")
	if len(lines) > 4 {
		lines = lines[len(lines)-4:]
	}
	return ": " + strings.Join(lines, " / ")
}
