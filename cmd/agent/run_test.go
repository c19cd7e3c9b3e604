package main

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math/rand/v2"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"github.com/expertsniper/expertsniper/engine/local"
	"github.com/expertsniper/expertsniper/modelgen/testmodels"
	"github.com/expertsniper/expertsniper/plan"
	"github.com/expertsniper/expertsniper/sniper"
	"github.com/expertsniper/expertsniper/sniper/faultfs"
)

// About 32 tokens with the test models' byte-level tokenizer.
const runTestPrompt = "Tiny experts route tokens; the sniper reads just them in time."

type runResult struct {
	stdout, stderr string
	logits         []byte
}

// runAgentRun drives `agent run` through the same code as the command (runRun), in process.
func runAgentRun(t *testing.T, o runOptions) (runResult, error) {
	t.Helper()
	var out, errOut bytes.Buffer
	o.Prompt, o.PromptSet = runTestPrompt, true
	if o.Tokens == 0 {
		o.Tokens = 32
	}
	o.LogitsOut = filepath.Join(t.TempDir(), "logits.bin")
	o.Quiet = true
	err := runRun(context.Background(), &IOStreams{In: strings.NewReader(""), Out: &out, ErrOut: &errOut}, &o)
	res := runResult{stdout: out.String(), stderr: errOut.String()}
	if b, rerr := os.ReadFile(o.LogitsOut); rerr == nil {
		res.logits = b
	}
	return res, err
}

// readRunStats reads what agent run wrote with --stats-json.
func readRunStats(t *testing.T, path string) runStats {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var rs runStats
	if err := json.Unmarshal(b, &rs); err != nil {
		t.Fatalf("%s: %v", path, err)
	}
	return rs
}

// ramReference runs the model in RAM, with llama.cpp's default weight repacking or (noRepack) without,
// once per model, thread count and setting, shared between tests (which may run in parallel).
// Streaming with the same setting reproduces it bit for bit.
var (
	refMu    sync.Mutex
	refCache = map[string]*refEntry{}
)

type refEntry struct {
	once sync.Once
	res  runResult
	err  error
}

func ramReference(t *testing.T, model string, threads int, noRepack bool) runResult {
	t.Helper()
	key := fmt.Sprintf("%s/%d/%v", model, threads, noRepack)
	refMu.Lock()
	e := refCache[key]
	if e == nil {
		e = &refEntry{}
		refCache[key] = e
	}
	refMu.Unlock()
	e.once.Do(func() {
		e.res, e.err = runAgentRun(t, runOptions{Model: model, Mode: "ram", NoRepack: noRepack, Threads: threads})
		if e.err == nil && len(e.res.logits) == 0 {
			e.err = fmt.Errorf("no logits written")
		}
	})
	if e.err != nil {
		t.Fatalf("in-RAM reference run of %s: %v", model, e.err)
	}
	return e.res
}

// TestStreamingIsBitExact compares --logits-out of sniper (MoE) and stream (dense) mode with the
// in-RAM run for every test architecture and type, with no cache, a small cache and an unlimited
// one (dense models also with half their layers cached, an LRU of layers, and the next layer read
// ahead at every cache). Q8_0 runs every cache at 1 and 2 threads; the other types (to keep the test
// quick) every cache at 2 threads. The default is compared with the default (llama.cpp repacks Q4_0
// and Q4_K weights for its faster kernels, and streaming converts each expert read into that
// layout), and for the repacked types also --no-repack with --no-repack: two different numeric
// paths, each exact.
func TestStreamingIsBitExact(t *testing.T) {
	archs := []string{"qwen3moe", "qwen35moe", "olmoe", "qwen2moe", "qwen3"}
	types := []string{"f32", "f16", "q8_0", "q4_0", "q4_k_m"}
	caches := []string{"0", "256KiB", "unlimited"}
	for _, arch := range archs {
		for _, typ := range types {
			name := arch + "-" + typ
			t.Run(name, func(t *testing.T) {
				t.Parallel() // runs wait on reads and page faults as much as on the 2 cores
				model := testmodels.Path(t, name)
				mode := "sniper"
				if arch == "qwen3" {
					mode = "stream"
				}
				threadCounts := []int{2}
				if typ == "q8_0" {
					threadCounts = []int{1, 2}
				}
				type variant struct {
					cache, policy string
					prefetch      bool
				}
				var variants []variant
				for _, cache := range caches {
					variants = append(variants, variant{cache: cache})
				}
				if mode == "stream" {
					// Dense: a cache that keeps half the layers (the fixed set, and an LRU of layers),
					// and every cache with the next layer read ahead.
					pm, err := plan.Open(model)
					if err != nil {
						t.Fatal(err)
					}
					half := fmt.Sprint(pm.StreamedBytes / 2)
					variants = append(variants, variant{cache: half}, variant{cache: half, policy: "lru"})
					for _, cache := range append(caches, half) {
						variants = append(variants, variant{cache: cache, prefetch: true})
					}
				}
				repacked := strings.HasPrefix(typ, "q4")
				if repacked {
					// Where the CPU has repacked kernels for the type, the two paths differ: a stream
					// that computed on the wrong one fails below.
					def, plain := ramReference(t, model, 2, false), ramReference(t, model, 2, true)
					t.Logf("ram default and --no-repack logits equal: %v", bytes.Equal(def.logits, plain.logits))
				}
				for _, threads := range threadCounts {
					for _, noRepack := range []bool{false, true} {
						if noRepack && !repacked {
							continue
						}
						want := ramReference(t, model, threads, noRepack)
						for _, v := range variants {
							got, err := runAgentRun(t, runOptions{Model: model, Mode: mode, Cache: v.cache, Policy: v.policy, Prefetch: v.prefetch,
								Threads: threads, Stats: true, NoRepack: noRepack, Repack: !noRepack})
							if err != nil {
								t.Fatalf("%s %+v -t %d --no-repack=%v: %v", mode, v, threads, noRepack, err)
							}
							if !bytes.Equal(got.logits, want.logits) {
								t.Fatalf("%s %+v -t %d --no-repack=%v: logits differ from the in-RAM run (%d vs %d bytes)", mode, v, threads, noRepack, len(got.logits), len(want.logits))
							}
							if got.stdout != want.stdout {
								t.Fatalf("%s %+v -t %d --no-repack=%v: text differs from the in-RAM run:\n%q\n%q", mode, v, threads, noRepack, got.stdout, want.stdout)
							}
							if mode == "stream" && (!strings.Contains(got.stderr, "layers from the cache") || strings.Contains(got.stderr, "expert")) {
								t.Fatalf("stream --stats speaks of experts, not layers:\n%s", got.stderr)
							}
						}
					}
					if repacked {
						// Neither flag: a cache that cannot hold every streamed weight keeps the
						// file's layout (exact against --mode ram --no-repack), one that can repacks.
						for _, cache := range []string{"0", "unlimited"} {
							got, err := runAgentRun(t, runOptions{Model: model, Mode: mode, Cache: cache, Threads: threads, Stats: true})
							if err != nil {
								t.Fatalf("%s --cache %s (default layout): %v", mode, cache, err)
							}
							if want := ramReference(t, model, threads, cache != "unlimited"); !bytes.Equal(got.logits, want.logits) {
								t.Fatalf("%s --cache %s, default layout: logits differ from the in-RAM run with the same layout", mode, cache)
							}
							if small := cache != "unlimited"; mode == "sniper" && small != strings.Contains(got.stderr, "repacked 0 weight tensors") {
								t.Fatalf("%s --cache %s: repacked the weights %v, want %v:\n%s", mode, cache, !small, small, got.stderr)
							}
						}
					}
					want := ramReference(t, model, threads, false)
					if mode == "sniper" {
						// Everything read before the prompt: the decode runs from the cache alone.
						got, err := runAgentRun(t, runOptions{Model: model, Mode: mode, Cache: "unlimited", Warm: true, Threads: threads, Stats: true})
						if err != nil {
							t.Fatalf("--warm: %v", err)
						}
						if !bytes.Equal(got.logits, want.logits) {
							t.Fatalf("--warm -t %d: logits differ from the in-RAM run", threads)
						}
						if !strings.Contains(got.stderr, "hit rate 100.0%") || !strings.Contains(got.stderr, "reads 0,") {
							t.Fatalf("--warm: the run still read experts after warming:\n%s", got.stderr)
						}
					}
				}
			})
		}
	}
}

func TestRunRefusesABudgetTooSmall(t *testing.T) {
	model := testmodels.Path(t, "qwen3moe-q8_0")
	_, err := runAgentRun(t, runOptions{Model: model, Mode: "sniper", RAM: "1MiB", Threads: 1})
	var oe *local.OptionError
	if !errors.As(err, &oe) || !strings.Contains(err.Error(), "--ram ") || !strings.Contains(err.Error(), "too small") {
		t.Fatalf("err = %v, want a usage error naming the --ram that would work", err)
	}
	// The size it names works.
	i := strings.Index(err.Error(), "use --ram ")
	size := strings.Fields(err.Error()[i+len("use --ram "):])[0]
	if _, err := runAgentRun(t, runOptions{Model: model, Mode: "sniper", RAM: size, Threads: 1, Tokens: 4}); err != nil {
		t.Fatalf("--ram %s (as suggested): %v", size, err)
	}
}

func TestRunWarmNeedsACacheForEveryExpert(t *testing.T) {
	model := testmodels.Path(t, "qwen3moe-q8_0")
	_, err := runAgentRun(t, runOptions{Model: model, Mode: "sniper", Cache: "256KiB", Warm: true, Threads: 2})
	if err == nil || !strings.Contains(err.Error(), "cannot hold every expert") {
		t.Fatalf("--warm with a small cache: err = %v", err)
	}
	_, err = runAgentRun(t, runOptions{Model: model, Mode: "ram", Warm: true, Threads: 2})
	if err == nil || !strings.Contains(err.Error(), "needs sniper mode") {
		t.Fatalf("--warm in ram mode: err = %v", err)
	}
}

func TestRunAutoPicksModeByBudget(t *testing.T) {
	moe := testmodels.Path(t, "qwen3moe-q8_0")
	dense := testmodels.Path(t, "qwen3-q8_0")
	// Budgets between the streaming minimum and the whole model in RAM, as the memory plan puts them
	// for run's context (the prompt's bytes, -n and 8).
	between := func(model string) string {
		pm, err := plan.Open(model)
		if err != nil {
			t.Fatal(err)
		}
		d, err := local.Decide(pm, local.Options{RAM: "unlimited", Context: len("hi") + 2 + 8})
		if err != nil {
			t.Fatal(err)
		}
		return fmt.Sprint((d.Plan.StreamingMinBytes + d.Plan.InRAMBytes) / 2)
	}
	for _, c := range []struct {
		model, ram, want string
	}{{moe, "1GiB", "ram"}, {moe, between(moe), "sniper"}, {dense, between(dense), "stream"}} {
		var errOut bytes.Buffer
		o := runOptions{Model: c.model, Mode: "auto", RAM: c.ram, Threads: 1, Tokens: 2, Prompt: "hi", PromptSet: true, StatsJSON: filepath.Join(t.TempDir(), "s.json")}
		if err := runRun(context.Background(), &IOStreams{In: strings.NewReader(""), Out: &bytes.Buffer{}, ErrOut: &errOut}, &o); err != nil {
			t.Fatalf("%s --ram %s: %v", filepath.Base(c.model), c.ram, err)
		}
		b, _ := os.ReadFile(o.StatsJSON)
		if !strings.Contains(string(b), `"mode": "`+c.want+`"`) {
			t.Fatalf("%s --ram %s: stats %s, want mode %s", filepath.Base(c.model), c.ram, b, c.want)
		}
	}
}

func TestRunReadsPromptFromStdin(t *testing.T) {
	model := testmodels.Path(t, "qwen3moe-q8_0")
	var a, b bytes.Buffer
	o := runOptions{Model: model, Mode: "sniper", Threads: 1, Tokens: 4, Quiet: true}
	if err := runRun(context.Background(), &IOStreams{In: strings.NewReader(runTestPrompt + "\n"), Out: &a, ErrOut: &bytes.Buffer{}}, &o); err != nil {
		t.Fatal(err)
	}
	o2 := runOptions{Model: model, Mode: "sniper", Threads: 1, Tokens: 4, Quiet: true, Prompt: runTestPrompt, PromptSet: true}
	if err := runRun(context.Background(), &IOStreams{In: strings.NewReader(""), Out: &b, ErrOut: &bytes.Buffer{}}, &o2); err != nil {
		t.Fatal(err)
	}
	if a.String() != b.String() || a.Len() == 0 {
		t.Fatalf("stdin prompt gave %q, -p gave %q", a.String(), b.String())
	}
}

// TestRunFaults injects EIO or a short read at a random expert read: the run must fail with an error
// naming the file and offset, and every token it printed before must be the in-RAM run's.
func TestRunFaults(t *testing.T) {
	model := testmodels.Path(t, "qwen2moe-q8_0")
	want := ramReference(t, model, 2, false)
	rng := rand.New(rand.NewPCG(uint64(os.Getpid()), 3))
	for _, kind := range []string{"eio", "short"} {
		for trial := 0; trial < 3; trial++ {
			at := rng.Int64N(200)
			pred := faultfs.OnIndex(at, faultfs.Reads)
			inj := faultfs.EIO(pred)
			if kind == "short" {
				inj = faultfs.ShortRead(pred)
			}
			got, err := runAgentRun(t, runOptions{Model: model, Mode: "sniper", Cache: "0", Threads: 2, fs: faultfs.Wrap(sniper.DirectFS{}, inj)})
			if err == nil {
				t.Fatalf("%s at read %d: the run succeeded", kind, at)
			}
			var re *sniper.ReadError
			if !errors.As(err, &re) || re.Path != model || !strings.Contains(err.Error(), model) || !strings.Contains(err.Error(), "offset") {
				t.Fatalf("%s at read %d: error does not name the file and offset: %v", kind, at, err)
			}
			if !strings.HasPrefix(want.stdout, got.stdout) {
				t.Fatalf("%s at read %d: printed %q, which is not a prefix of the correct output %q", kind, at, got.stdout, want.stdout)
			}
			if !bytes.HasPrefix(want.logits, got.logits[:len(got.logits)/4*4]) {
				t.Fatalf("%s at read %d: logits written before the error differ from the in-RAM run", kind, at)
			}
		}
	}
}

// TestRunModelFileChangesWhileRunning truncates or replaces the model file in the middle of a run.
func TestRunModelFileChangesWhileRunning(t *testing.T) {
	src := testmodels.Path(t, "olmoe-q8_0")
	orig, err := os.ReadFile(src)
	if err != nil {
		t.Fatal(err)
	}
	other, err := os.ReadFile(testmodels.Path(t, "olmoe-f32"))
	if err != nil {
		t.Fatal(err)
	}
	for _, how := range []string{"truncate", "replace"} {
		t.Run(how, func(t *testing.T) {
			model := filepath.Join(t.TempDir(), "model.gguf")
			if err := os.WriteFile(model, orig, 0o644); err != nil {
				t.Fatal(err)
			}
			want := ramReference(t, model, 2, false)
			var fired atomic.Bool
			var n atomic.Int64
			inj := faultfs.InjectorFunc(func(op faultfs.Op) faultfs.Fault {
				if op.Kind != faultfs.OpRead || n.Add(1) != 40 || fired.Swap(true) {
					return faultfs.Fault{}
				}
				switch how {
				case "truncate":
					if err := os.Truncate(model, int64(len(orig)/3)); err != nil {
						t.Error(err)
					}
				case "replace":
					tmp := model + ".new"
					if err := os.WriteFile(tmp, other, 0o644); err != nil {
						t.Error(err)
					}
					if err := os.Rename(tmp, model); err != nil {
						t.Error(err)
					}
				}
				return faultfs.Fault{}
			})
			got, err := runAgentRun(t, runOptions{Model: model, Mode: "sniper", Cache: "0", Threads: 2, fs: faultfs.Wrap(sniper.DirectFS{}, inj)})
			if err == nil {
				t.Fatal("the run succeeded on a changed file")
			}
			if !strings.Contains(err.Error(), model) || !strings.Contains(err.Error(), "offset") {
				t.Fatalf("error does not name the file and offset: %v", err)
			}
			if !strings.HasPrefix(want.stdout, got.stdout) {
				t.Fatalf("printed %q, not a prefix of the correct %q", got.stdout, want.stdout)
			}
			t.Logf("%s: %v", how, err)
		})
	}
}

// TestRunBinary runs the built agent binary as a user would and compares sniper and in-RAM logits
// with cmp-style byte equality.
func TestRunBinary(t *testing.T) {
	dir := t.TempDir()
	bin := filepath.Join(dir, "agent")
	build := exec.Command("go", "build", "-o", bin, ".")
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	model := testmodels.Path(t, "qwen35moe-q4_k_m")
	run := func(args ...string) string {
		t.Helper()
		cmd := exec.Command(bin, append([]string{"run", "-m", model, "-n", "32", "-t", "2"}, args...)...)
		cmd.Stdin = strings.NewReader(runTestPrompt)
		var out, errOut bytes.Buffer
		cmd.Stdout, cmd.Stderr = &out, &errOut
		if err := cmd.Run(); err != nil {
			t.Fatalf("agent run %v: %v\n%s", args, err, errOut.String())
		}
		return errOut.String()
	}
	// A cache too small for every expert keeps the file's layout (engine/local.Decision.Repack), so
	// the in-RAM reference is the one without repacking, and the decision line says so.
	run("--mode", "ram", "--no-repack", "--logits-out", filepath.Join(dir, "ram.bin"))
	stderr := run("--mode", "sniper", "--cache", "1MiB", "--stats", "--logits-out", filepath.Join(dir, "sniper.bin"))
	if !strings.Contains(stderr, "file's layout") {
		t.Fatalf("the decision line does not say the streamed weights keep the file's layout:\n%s", stderr)
	}
	a, _ := os.ReadFile(filepath.Join(dir, "ram.bin"))
	b, _ := os.ReadFile(filepath.Join(dir, "sniper.bin"))
	if len(a) == 0 || !bytes.Equal(a, b) {
		t.Fatalf("binary: sniper logits (%d bytes) differ from in-RAM (%d bytes)", len(b), len(a))
	}
	if !strings.Contains(stderr, "hit rate") || !strings.Contains(stderr, "read latency") {
		t.Fatalf("--stats output lacks the statistics:\n%s", stderr)
	}
}

// TestRunPinsHotExperts: --pin-hot holds the experts an earlier run's --stats-json used most, the
// results stay bit-exact, and bad combinations are usage errors.
func TestRunPinsHotExperts(t *testing.T) {
	model := testmodels.Path(t, "qwen3moe-q8_0")
	want := ramReference(t, model, 2, false)
	stats := filepath.Join(t.TempDir(), "first.json")
	if _, err := runAgentRun(t, runOptions{Model: model, Mode: "sniper", Cache: "512KiB", Threads: 2, StatsJSON: stats}); err != nil {
		t.Fatal(err)
	}
	second := filepath.Join(t.TempDir(), "second.json")
	got, err := runAgentRun(t, runOptions{Model: model, Mode: "sniper", Cache: "512KiB", PinHot: "256KiB", HotFrom: stats, Threads: 2, StatsJSON: second})
	if err != nil {
		t.Fatalf("--pin-hot: %v", err)
	}
	if !bytes.Equal(got.logits, want.logits) {
		t.Fatal("--pin-hot: logits differ from the in-RAM run")
	}
	var rs runStats
	if b, err := os.ReadFile(second); err != nil || json.Unmarshal(b, &rs) != nil || rs.HotPinned == 0 {
		t.Fatalf("--pin-hot pinned nothing (%v): %+v", err, rs.HotPinned)
	}
	var ue usageError
	if _, err := runAgentRun(t, runOptions{Model: model, Mode: "sniper", Cache: "512KiB", PinHot: "256KiB", Threads: 2}); !errors.As(err, &ue) {
		t.Fatalf("--pin-hot without --hot-from: %v, want a usage error", err)
	}
	if _, err := runAgentRun(t, runOptions{Model: model, Mode: "sniper", Cache: "512KiB", PinHot: "400KiB", HotFrom: stats, Threads: 2}); err == nil || !strings.Contains(err.Error(), "half the cache") {
		t.Fatalf("--pin-hot above half the cache: %v", err)
	}
}
