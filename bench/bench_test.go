package bench

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/expertsniper/expertsniper/gguf"
	"github.com/expertsniper/expertsniper/memcap"
	"github.com/expertsniper/expertsniper/modelgen/testmodels"
	"github.com/expertsniper/expertsniper/sniper"
	"github.com/expertsniper/expertsniper/sniper/faultfs"
)

func TestParsePeerRecordedSample(t *testing.T) {
	data, err := os.ReadFile("testdata/llama-bench-b11669-qwen35moe-tiny.json")
	if err != nil {
		t.Fatal(err)
	}
	r, err := ParsePeer(data)
	if err != nil {
		t.Fatal(err)
	}
	if r.PromptTokens != 32 || r.GenTokens != 8 || r.Build != 11669 {
		t.Fatalf("parsed %+v", r)
	}
	if math.Abs(r.PrefillTPS-175.829833) > 1e-6 || math.Abs(r.DecodeTPS-158.838263) > 1e-6 {
		t.Fatalf("rates %g / %g, want the avg_ts of the pp and tg records", r.PrefillTPS, r.DecodeTPS)
	}
}

func TestParsePeerRejectsBadOutput(t *testing.T) {
	for name, in := range map[string]string{
		"not json":     "| model | size |",
		"empty array":  "[]",
		"no tg test":   `[{"n_prompt": 32, "n_gen": 0, "avg_ts": 10}]`,
		"missing rate": `[{"n_prompt": 32, "n_gen": 0}, {"n_prompt": 0, "n_gen": 8, "avg_ts": 3}]`,
		"zero rate":    `[{"n_prompt": 32, "n_gen": 0, "avg_ts": 0}, {"n_prompt": 0, "n_gen": 8, "avg_ts": 3}]`,
	} {
		if _, err := ParsePeer([]byte(in)); err == nil || !strings.Contains(err.Error(), "llama-bench") {
			t.Errorf("%s: err = %v, want an error naming llama-bench's output", name, err)
		}
	}
}

func TestPeerArgs(t *testing.T) {
	got := strings.Join(PeerArgs(Workload{Model: "m.gguf", PromptTokens: 32, GenTokens: 8, Threads: 2}, 1, false), " ")
	want := "-m m.gguf -p 32 -n 8 -t 2 --repack 0 -lm mmap -r 1 -o json --no-warmup"
	if got != want {
		t.Fatalf("args %q, want %q", got, want)
	}
	// llama.cpp's defaults: repacking on, its default load.
	got = strings.Join(PeerDefaultArgs(Workload{Model: "m.gguf", PromptTokens: 32, GenTokens: 8, Threads: 2}, 3), " ")
	if want := "-m m.gguf -p 32 -n 8 -t 2 -r 3 -o json"; got != want {
		t.Fatalf("default args %q, want %q", got, want)
	}
}

func TestParseSizes(t *testing.T) {
	got, err := ParseSizes("4GiB, 512MiB,none,1.5G")
	if err != nil {
		t.Fatal(err)
	}
	want := []int64{4 << 30, 512 << 20, memcap.NoLimit, 3 << 29}
	for i := range want {
		if got[i] != want[i] {
			t.Fatalf("ParseSizes = %v, want %v", got, want)
		}
	}
	for _, bad := range []string{"", "4XB", "GiB", ",,"} {
		if _, err := ParseSizes(bad); err == nil {
			t.Errorf("ParseSizes(%q) accepted", bad)
		}
	}
}

func TestVariants(t *testing.T) {
	vs, err := ParseVariants("plain=, prefetch=--prefetch --readers 2")
	if err != nil {
		t.Fatal(err)
	}
	if len(vs) != 2 || vs[0].Name != "plain" || len(vs[0].Flags) != 0 || strings.Join(vs[1].Flags, " ") != "--prefetch --readers 2" {
		t.Fatalf("parsed %+v", vs)
	}
	m := Matrix([]Kind{KindPeer, KindSniper}, []int64{1 << 30}, []int64{memcap.NoLimit}, vs...)
	if len(m) != 3 || m[2].Name() != "sniper 1.00 GiB +prefetch" {
		t.Fatalf("matrix %+v", m)
	}
	args := strings.Join(OursArgs(Workload{Model: "m", GenTokens: 1, Threads: 1}, m[2], "p", "s"), " ")
	if !strings.HasSuffix(args, "--cache 1073741824 --prefetch --readers 2") {
		t.Fatalf("args %q lack the variant's flags", args)
	}
	for _, bad := range []string{"noequals", "=--x", "a=,a=", "x=prefetch"} {
		if _, err := ParseVariants(bad); err == nil {
			t.Errorf("ParseVariants(%q) accepted", bad)
		}
	}
	if vs, err := ParseVariants(""); err != nil || len(vs) != 1 || vs[0].Name != "" {
		t.Fatalf("empty: %+v %v", vs, err)
	}
}

func TestMatrix(t *testing.T) {
	got := Matrix([]Kind{KindPeer, KindRAM, KindSniper}, []int64{1 << 30, 2 << 30}, []int64{memcap.NoLimit, 4 << 30})
	if len(got) != 8 {
		t.Fatalf("%d configurations, want 2 caps × (peer + ram + 2 budgets) = 8: %+v", len(got), got)
	}
	if got[0].Kind != KindPeer || got[0].Cap != memcap.NoLimit || got[7].Name() != "sniper 2.00 GiB" || got[7].Cap != 4<<30 {
		t.Fatalf("order: %+v", got)
	}
	// Stock's default run holds the repacked weights in RAM: once, uncapped, whatever the caps.
	got = Matrix([]Kind{KindPeer, KindPeerDefault, KindSniper}, []int64{1 << 30}, []int64{8 << 30, 4 << 30})
	if len(got) != 5 || got[0].Kind != KindPeerDefault || got[0].Cap != memcap.NoLimit || got[0].Name() != "llama.cpp default" {
		t.Fatalf("with llama.cpp-default: %+v", got)
	}
	for _, c := range got[1:] {
		if c.Kind == KindPeerDefault {
			t.Fatalf("llama.cpp-default under a cap: %+v", got)
		}
	}
	if k, err := ParseKind("llama.cpp-default"); err != nil || k != KindPeerDefault {
		t.Fatalf("ParseKind: %v %v", k, err)
	}
}

func TestWarmRunsOnlyWithAnUnlimitedCache(t *testing.T) {
	r := &Runner{Agent: "/nonexistent/agent", Prompt: "p"}
	m, err := r.one(t.Context(), Workload{Model: "m.gguf", PromptTokens: 1, GenTokens: 1, Threads: 1},
		Config{Kind: KindSniper, Budget: 1 << 30, Cap: memcap.NoLimit, Variant: "warm", Flags: []string{"--warm"}})
	if err != nil || m.OK() || !strings.HasPrefix(m.Err, skippedPrefix) || !strings.Contains(m.Err, "--warm") {
		t.Fatalf("--warm with a 1 GiB cache: %+v, %v", m, err)
	}
}

func TestRatiosToStockDefault(t *testing.T) {
	r := sampleReport()
	def := Measurement{Config: Config{Kind: KindPeerDefault, Cap: memcap.NoLimit}, PrefillTPS: 9, DecodeTPS: 5}
	r.Results = append([]Measurement{def}, r.Results...)
	r.ComputeRatios()
	sn := r.Results[4]
	if sn.Kind != KindSniper || math.Abs(float64(sn.DecodeVsDefault)-2.2/5) > 1e-9 {
		t.Fatalf("sniper vs stock default: %v (%+v)", sn.DecodeVsDefault, sn.Config)
	}
	if !r.Results[0].DecodeVsDefault.Missing() || !r.Results[0].DecodeVsPeer.Missing() {
		t.Fatal("stock default compared with itself or with the mmap peer")
	}
	var text strings.Builder
	if err := r.WriteText(&text); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(text.String(), "decode ×default") || !strings.Contains(text.String(), "0.44×") {
		t.Fatalf("the table lacks the ratio to stock's default:\n%s", text.String())
	}
}

// sampleReport is a report as a run under two caps would produce it.
func sampleReport() *Report {
	nan := Num(math.NaN())
	mk := func(c Config, pp, tg float64) Measurement {
		return Measurement{Config: c, PromptTokens: 32, GenTokens: 8, PrefillTPS: pp, DecodeTPS: tg, PeakRSS: 3 << 30, PeakUsage: 4 << 30,
			DiskRead: 25 << 30, ReadPerToken: nan, DiskGBps: nan, HitRate: nan}
	}
	sn := mk(Config{Kind: KindSniper, Budget: 2 << 30, Cap: 4 << 30}, 4, 2.2)
	sn.ReadPerToken, sn.DiskGBps, sn.HitRate = 400e6, 0.9, 0.25
	r := &Report{
		Machine:   Machine{OS: "linux", Arch: "amd64", CPU: "Test CPU", Cores: 2, RAM: 24 << 30},
		Workload:  Workload{Model: "big.gguf", PromptTokens: 32, GenTokens: 8, Threads: 2},
		ModelSize: 19 << 30,
		DiskBound: &DiskBound{ReadSize: 589824, ReadsPerToken: 960, MissBytesPerToken: 566231040, Threads: 2, GBps: 2.3, Direct: true, TokPerSec: 4.06},
		Results: []Measurement{
			mk(Config{Kind: KindPeer, Cap: memcap.NoLimit}, 7.37, 3.92),
			mk(Config{Kind: KindRAM, Cap: memcap.NoLimit}, 8, 4),
			mk(Config{Kind: KindPeer, Cap: 4 << 30}, 2, 0.11),
			sn,
			failed(Config{Kind: KindRAM, Cap: 4 << 30}, errors.New("agent run killed by the kernel for running out of memory")),
		},
	}
	r.ComputeRatios()
	return r
}

func TestRatiosAreToThePeerUnderTheSameCapAndToUncappedRAM(t *testing.T) {
	r := sampleReport()
	sn := r.Results[3]
	if math.Abs(float64(sn.DecodeVsPeer)-2.2/0.11) > 1e-9 || math.Abs(float64(sn.PrefillVsPeer)-2) > 1e-9 {
		t.Fatalf("sniper vs peer under 4 GiB: %v / %v", sn.PrefillVsPeer, sn.DecodeVsPeer)
	}
	if math.Abs(float64(sn.DecodeVsRAM)-0.55) > 1e-9 || math.Abs(float64(sn.PrefillVsRAM)-0.5) > 1e-9 {
		t.Fatalf("sniper vs uncapped RAM: %v / %v", sn.PrefillVsRAM, sn.DecodeVsRAM)
	}
	if !r.Results[0].DecodeVsPeer.Missing() || !r.Results[1].DecodeVsRAM.Missing() {
		t.Fatal("a reference must not be compared with itself")
	}
	if !r.Results[4].DecodeVsPeer.Missing() {
		t.Fatal("a failed run has no ratio")
	}
}

func TestTextTable(t *testing.T) {
	var b bytes.Buffer
	if err := sampleReport().WriteText(&b); err != nil {
		t.Fatal(err)
	}
	out := b.String()
	for _, want := range []string{
		"model big.gguf (19.00 GiB), prompt 32 tokens, 8 generated, 2 threads",
		"machine: linux/amd64, Test CPU (2 cores), 24.00 GiB RAM",
		"disk bound: 2.30 GB/s direct reads of 576.00 KiB (2 threads) ÷ 540.00 MiB missed per token (960 reads) = 4.06 tok/s",
		"decode ×peer", "cgroup peak",
		"20.00×", "25.0%", "0.90", "381.47 MiB", "25.00 GiB",
		"failed: agent run killed by the kernel",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("table lacks %q:\n%s", want, out)
		}
	}
	// Aligned columns: every data line starts its second column at the same place.
	lines := strings.Split(strings.TrimSpace(out), "\n")[3:]
	col := strings.Index(lines[0], "cap")
	for _, l := range lines[1:] {
		if len(l) <= col || l[col-1] != ' ' || l[col] == ' ' {
			t.Errorf("misaligned line %q (cap column at %d)", l, col)
		}
	}
}

func TestMarkdownTable(t *testing.T) {
	var b bytes.Buffer
	r := sampleReport()
	r.Command = "agent bench -m big.gguf"
	if err := r.WriteMarkdown(&b); err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(b.String()), "\n")
	var table []string
	for _, l := range lines {
		if strings.HasPrefix(l, "|") {
			table = append(table, l)
		}
	}
	if len(table) != 2+len(r.Results) {
		t.Fatalf("markdown table has %d lines, want header, rule and %d rows:\n%s", len(table), len(r.Results), b.String())
	}
	for _, l := range table {
		if got := strings.Count(l, " | ") + 2; strings.HasPrefix(l, "| ") && got != len(columns)+1 {
			t.Errorf("row %q has %d cells, want %d", l, got-1, len(columns))
		}
	}
	if !strings.Contains(b.String(), "command: `agent bench -m big.gguf`") {
		t.Error("markdown lacks the command")
	}
}

func TestJSONRoundTrip(t *testing.T) {
	var b bytes.Buffer
	if err := sampleReport().WriteJSON(&b); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(b.String(), `"hit_rate": null`) || !strings.Contains(b.String(), `"decode_vs_peer": 20`) {
		t.Fatalf("JSON lacks null for missing numbers or the ratio:\n%s", b.String())
	}
	var back Report
	if err := json.Unmarshal(b.Bytes(), &back); err != nil {
		t.Fatal(err)
	}
	if len(back.Results) != 5 || back.Results[3].HitRate != 0.25 || !back.Results[0].HitRate.Missing() || back.Results[4].Err == "" {
		t.Fatalf("round trip lost data: %+v", back.Results)
	}
	if back.DiskBound == nil || back.DiskBound.TokPerSec != 4.06 {
		t.Fatalf("disk bound lost: %+v", back.DiskBound)
	}
}

// fakeAgent answers our configurations' runs without a model: it writes the statistics file named in
// the arguments, as `agent run --stats-json` does.
func fakeAgent(stats string, res memcap.Result) func(context.Context, memcap.Spec) (memcap.Result, error) {
	return func(_ context.Context, spec memcap.Spec) (memcap.Result, error) {
		for i, a := range spec.Args {
			if a == "--stats-json" {
				if err := os.WriteFile(spec.Args[i+1], []byte(stats), 0o644); err != nil {
					return memcap.Result{}, err
				}
			}
		}
		res.Limit = spec.Limit
		return res, nil
	}
}

// A statistics file as run.go writes it (sniper mode, 32 prompt tokens, 8 generated).
const sampleRunStats = `{
  "mode": "sniper", "prompt_tokens": 32, "generated_tokens": 8,
  "prompt_tok_per_sec": 4, "decode_tok_per_sec": 2,
  "pinned_bytes": 1000, "streamed_bytes": 5000, "cache_budget": 2147483648,
  "rss_bytes": 100, "peak_rss_bytes": 0, "rss_samples": 0, "rss_before_load": 10,
  "bytes_read": 3500001000, "bytes_issued": 3600000000, "reads": 400,
  "hits": 40, "misses": 120, "hit_rate": 0.25, "peak_cache_bytes": 2000000000,
  "read_p50_us": 300, "read_p99_us": 900,
  "prompt_bytes_read": 1000, "decode_bytes_read": 3500000000, "decode_evals": 7,
  "decode_bytes_per_token": 500000000, "missed_expert_bytes": 3500001000,
  "prompt_hits": 10, "prompt_misses": 90
}`

func TestOurRunIsMeasuredFromItsStatistics(t *testing.T) {
	model := filepath.Join(t.TempDir(), "m.gguf")
	os.WriteFile(model, make([]byte, 1000), 0o644)
	var args []string
	exec := fakeAgent(sampleRunStats, memcap.Result{PeakRSS: 3 << 30, PeakUsage: 4 << 30, ReadBytes: 5e9, Wall: time.Second})
	r := &Runner{Agent: "/bin/agent", Prompt: "hello", Exec: func(ctx context.Context, s memcap.Spec) (memcap.Result, error) {
		args = s.Args
		return exec(ctx, s)
	}}
	rep, err := r.Run(t.Context(), Workload{Model: model, PromptTokens: 32, GenTokens: 8, Threads: 2},
		[]Config{{Kind: KindSniper, Budget: 2 << 30, Cap: 4 << 30}})
	if err != nil {
		t.Fatal(err)
	}
	m := rep.Results[0]
	if !m.OK() || m.PrefillTPS != 4 || m.DecodeTPS != 2 || m.PromptTokens != 32 || m.GenTokens != 8 {
		t.Fatalf("measurement %+v", m)
	}
	// Decode read 3.5 GB over 7 evaluated tokens in 8/2 = 4 s, with 30 hits and 30 misses.
	if m.ReadPerToken != 500e6 || math.Abs(float64(m.DiskGBps)-0.875) > 1e-9 || m.HitRate != 0.5 {
		t.Fatalf("decode reads: %v B/token, %v GB/s, hit rate %v", m.ReadPerToken, m.DiskGBps, m.HitRate)
	}
	if m.PeakRSS != 3<<30 || m.PeakUsage != 4<<30 || m.DiskRead != 5e9 {
		t.Fatalf("process numbers %+v", m)
	}
	joined := strings.Join(args, " ")
	for _, want := range []string{"run -m " + model, "-p hello", "-n 8", "--temp 0", "--threads 2", "--mode sniper", "--cache 2147483648", "--stats-json "} {
		if !strings.Contains(joined, want) {
			t.Errorf("agent args %q lack %q", joined, want)
		}
	}
	if got := strings.Join(OursArgs(Workload{Model: "m", GenTokens: 1, Threads: 1}, Config{Kind: KindRAM}, "p", "s"), " "); !strings.Contains(got, "--mode ram") || strings.Contains(got, "--no-repack") {
		t.Errorf("ram args %q: want --mode ram with llama.cpp's default repacking", got)
	}
}

func TestParseRunStatsRejectsIncompleteStatistics(t *testing.T) {
	for name, in := range map[string]string{
		"not json":    "prompt 32 tok",
		"no prompt":   `{"mode":"ram","generated_tokens":8,"decode_tok_per_sec":3}`,
		"no decode":   `{"mode":"ram","prompt_tokens":32,"prompt_tok_per_sec":3}`,
		"zero decode": `{"mode":"ram","prompt_tokens":32,"prompt_tok_per_sec":3,"generated_tokens":8,"decode_tok_per_sec":0}`,
	} {
		if _, err := ParseRunStats([]byte(in)); err == nil || !strings.Contains(err.Error(), "agent run statistics") {
			t.Errorf("%s: err = %v", name, err)
		}
	}
}

func TestFailuresBecomeRows(t *testing.T) {
	model := filepath.Join(t.TempDir(), "m.gguf")
	os.WriteFile(model, make([]byte, 1000), 0o644)
	oom := func(_ context.Context, spec memcap.Spec) (memcap.Result, error) {
		spec.Stderr.Write([]byte("loading...\nKilled\n"))
		return memcap.Result{Limit: spec.Limit, Signal: "killed", ExitCode: -1, OOMKills: 1}, nil
	}
	r := &Runner{Agent: "/bin/agent", LlamaBench: "/bin/llama-bench", Prompt: "hi", Exec: oom}
	rep, err := r.Run(t.Context(), Workload{Model: model, PromptTokens: 4, GenTokens: 2, Threads: 1}, []Config{
		{Kind: KindPeer, Cap: 1 << 30}, {Kind: KindRAM, Cap: 1 << 30}, {Kind: KindSniper, Budget: 2 << 30, Cap: 1 << 30},
		{Kind: KindSniper, Budget: memcap.NoLimit, Cap: 1 << 30}})
	if err != nil {
		t.Fatal(err)
	}
	for i, want := range []string{"llama-bench killed by the kernel for running out of memory under a cap of 1.00 GiB: loading... / Killed",
		"agent run killed by the kernel", "skipped: a cache budget of 2.00 GiB cannot fit under a cap of 1.00 GiB",
		"skipped: a cache budget of unlimited cannot fit under a cap of 1.00 GiB"} {
		if m := rep.Results[i]; m.OK() || !strings.Contains(m.Err, want) {
			t.Errorf("row %d: error %q, want %q", i, m.Err, want)
		}
	}
}

func TestColdNeedsDroppableCaches(t *testing.T) {
	model := filepath.Join(t.TempDir(), "m.gguf")
	os.WriteFile(model, make([]byte, 10), 0o644)
	r := &Runner{Cold: true, DropCaches: func() error { return errors.New("needs root") }}
	_, err := r.Run(t.Context(), Workload{Model: model, PromptTokens: 1, GenTokens: 1, Threads: 1}, []Config{{Kind: KindPeer}})
	if err == nil || !strings.Contains(err.Error(), "needs root") {
		t.Fatalf("err = %v", err)
	}
}

func TestWorkloadValidation(t *testing.T) {
	r := &Runner{}
	if _, err := r.Run(t.Context(), Workload{Model: "x", PromptTokens: 0, GenTokens: 1, Threads: 1}, nil); err == nil {
		t.Fatal("zero prompt tokens accepted")
	}
	if _, err := r.Run(t.Context(), Workload{Model: "/nonexistent.gguf", PromptTokens: 1, GenTokens: 1, Threads: 1}, nil); err == nil || !strings.Contains(err.Error(), "/nonexistent.gguf") {
		t.Fatalf("missing model: %v", err)
	}
}

// One real llama-bench run on a tiny generated model, under a cap and uncapped, through memcap.
func TestRealLlamaBenchOnTinyModel(t *testing.T) {
	lb, err := exec.LookPath("llama-bench")
	if err != nil {
		if os.Getenv("EXPERTSNIPER_IN_ROOT") != "" {
			t.Fatalf("llama-bench must be on PATH in the build root: %v", err)
		}
		t.Skip("llama-bench is not installed here; ./build.sh test runs this in the build root")
	}
	if err := memcap.Supported(); err != nil {
		t.Fatalf("memory cgroups must work on the test machines: %v", err)
	}
	model := testmodels.Path(t, "qwen35moe-q4_0")
	var log bytes.Buffer
	r := &Runner{LlamaBench: lb, Repetitions: 1, Log: &log}
	rep, err := r.Run(t.Context(), Workload{Model: model, PromptTokens: 16, GenTokens: 4, Threads: 2},
		[]Config{{Kind: KindPeer, Cap: memcap.NoLimit}, {Kind: KindPeer, Cap: 512 << 20}})
	if err != nil {
		t.Fatal(err)
	}
	for _, m := range rep.Results {
		if !m.OK() {
			t.Fatalf("%s under %s: %s\n%s", m.Name(), FormatSize(m.Cap), m.Err, log.String())
		}
		if m.PromptTokens != 16 || m.GenTokens != 4 || m.PrefillTPS <= 0 || m.DecodeTPS <= 0 {
			t.Fatalf("measurement %+v", m)
		}
		if m.PeakRSS <= 0 || m.PeakUsage <= 0 || (m.Cap > 0 && m.PeakUsage > m.Cap) {
			t.Fatalf("memory numbers %+v", m)
		}
	}
	var b bytes.Buffer
	rep.WriteText(&b)
	t.Logf("\n%s", b.String())
}

func TestDiskProbeOnSmallModel(t *testing.T) {
	model := testmodels.Path(t, "qwen35moe-q4_0")
	idx, f, err := sniper.OpenIndex(model, sniper.ModeExperts)
	if err != nil {
		t.Fatal(err)
	}
	used, _ := f.ArchUint("expert_used_count")
	var want int64
	for l := 0; l < idx.Layers; l++ {
		want += int64(used) * idx.ExpertBytes(l)
	}
	d, err := ProbeDisk(t.Context(), model, ProbeOptions{Duration: 300 * time.Millisecond, Seed: 1})
	if err != nil {
		t.Fatal(err)
	}
	if d.MissBytesPerToken != want {
		t.Fatalf("missed bytes per token %d, want layers × used × expert bytes = %d", d.MissBytesPerToken, want)
	}
	// qwen35moe reads gate, up and down of each expert separately: 3 reads per expert per layer.
	if d.ReadsPerToken != idx.Layers*int(used)*3 {
		t.Fatalf("reads per token %d, want %d", d.ReadsPerToken, idx.Layers*int(used)*3)
	}
	if d.GBps <= 0 || d.Threads != 2 || math.Abs(d.TokPerSec-d.GBps*1e9/float64(want)) > 1e-6*d.TokPerSec {
		t.Fatalf("probe %+v", d)
	}
	t.Logf("%+v", d)
}

// A probe on a loaded machine, where one read outlasts the whole duration, measures that slow read
// rather than failing with nothing read; cancelling its context still stops it with an error.
func TestDiskProbeReadsAtLeastOnceWhenReadsOutlastItsDuration(t *testing.T) {
	model := testmodels.Path(t, "qwen35moe-q4_0")
	slow := faultfs.Wrap(sniper.DirectFS{}, faultfs.Latency(200*time.Millisecond, faultfs.Reads))
	d, err := ProbeDisk(t.Context(), model, ProbeOptions{Duration: time.Nanosecond, FS: slow})
	if err != nil {
		t.Fatalf("probe whose reads outlast it: %v", err)
	}
	if d.GBps <= 0 || d.TokPerSec <= 0 {
		t.Fatalf("probe %+v", d)
	}
	ctx, cancel := context.WithCancel(t.Context())
	time.AfterFunc(50*time.Millisecond, cancel)
	if _, err := ProbeDisk(ctx, model, ProbeOptions{Duration: time.Hour, FS: slow}); !errors.Is(err, context.Canceled) {
		t.Fatalf("cancelled probe: %v", err)
	}
}

func TestDiskProbeRejectsNonModels(t *testing.T) {
	p := filepath.Join(t.TempDir(), "junk.gguf")
	os.WriteFile(p, bytes.Repeat([]byte("x"), 4096), 0o644)
	_, err := ProbeDisk(t.Context(), p, ProbeOptions{Duration: 100 * time.Millisecond})
	if err == nil || !strings.Contains(err.Error(), p) {
		t.Fatalf("err = %v, want one naming the file", err)
	}
	dense := testmodels.Path(t, "qwen3-q8_0")
	d, err := ProbeDisk(t.Context(), dense, ProbeOptions{Duration: 100 * time.Millisecond})
	if err != nil {
		t.Fatalf("a dense model is streamed layer by layer and must be probed too: %v", err)
	}
	if d.ReadsPerToken == 0 || d.MissBytesPerToken == 0 {
		t.Fatalf("dense probe %+v", d)
	}
}

// wordTokenizer makes every space-separated word one token, and adds a BOS like most models.
type wordTokenizer struct{ bos bool }

func (w wordTokenizer) Tokenize(text string, addSpecial bool) ([]int32, error) {
	var out []int32
	if addSpecial && w.bos {
		out = append(out, 1)
	}
	for _, f := range strings.Fields(text) {
		out = append(out, int32(len(f)))
	}
	return out, nil
}

func (w wordTokenizer) Detokenize(toks []int32) (string, error) {
	words := make([]string, len(toks))
	for i, n := range toks {
		words[i] = strings.Repeat("x", int(n))
	}
	return strings.Join(words, " "), nil
}

func TestFitPromptHitsTheTokenCountAsRunTokenizes(t *testing.T) {
	for _, bos := range []bool{true, false} {
		for _, target := range []int{1, 2, 32, 200} {
			text, n, err := FitPrompt(wordTokenizer{bos: bos}, target)
			if bos && target == 1 {
				// Only the BOS fits in one token: no text can do that.
				if err == nil && n != 1 {
					t.Errorf("bos, 1 token: got %d", n)
				}
				continue
			}
			if err != nil {
				t.Fatalf("bos=%v target %d: %v", bos, target, err)
			}
			got, _ := wordTokenizer{bos: bos}.Tokenize(text, true)
			if n != target || len(got) != target {
				t.Errorf("bos=%v target %d: reported %d, text tokenizes to %d", bos, target, n, len(got))
			}
		}
	}
	if _, _, err := FitPrompt(wordTokenizer{}, 0); err == nil {
		t.Error("0 tokens accepted")
	}
}

func TestHitRateFallsBackToTheWholeRunWithoutPrefillLookups(t *testing.T) {
	s, err := ParseRunStats([]byte(`{"mode":"sniper","prompt_tokens":4,"prompt_tok_per_sec":2,"generated_tokens":2,
		"decode_tok_per_sec":1,"hits":1,"misses":3,"decode_bytes_read":10,"decode_evals":1}`))
	if err != nil {
		t.Fatal(err)
	}
	if m := measurementFromRun(Config{Kind: KindSniper}, s); m.HitRate != 0.25 || m.ReadPerToken != 10 {
		t.Fatalf("hit rate %v, read/token %v", m.HitRate, m.ReadPerToken)
	}
}

// embeddingRows decodes every row of a model's token embeddings.
func embeddingRows(t *testing.T, path string) [][]float32 {
	t.Helper()
	f, err := gguf.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	ti, _ := f.Tensor(TokenEmbeddingName)
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	n, rb := ti.Dims[0], ti.Type.RowSize(ti.Dims[0])
	rows := make([][]float32, ti.Dims[1])
	for r := range rows {
		rows[r] = make([]float32, n)
		off := f.TensorFileOffset(ti) + int64(r)*rb
		decodeRow(ti.Type, data[off:off+rb], rows[r])
	}
	return rows
}

func meanCosine(rows [][]float32) float64 {
	var sum float64
	var pairs int
	for i := 0; i+1 < len(rows); i += 7 {
		a, b := rows[i], rows[i+1]
		var ab, aa, bb float64
		for j := range a {
			ab += float64(a[j]) * float64(b[j])
			aa += float64(a[j]) * float64(a[j])
			bb += float64(b[j]) * float64(b[j])
		}
		sum += ab / math.Sqrt(aa*bb)
		pairs++
	}
	return sum / float64(pairs)
}

func TestCorrelateRoutingSharesADirectionAcrossTokens(t *testing.T) {
	for _, name := range []string{"qwen35moe-q4_0", "qwen3moe-q8_0", "qwen3moe-f32"} {
		src := testmodels.Path(t, name)
		dst := filepath.Join(t.TempDir(), "m.gguf")
		data, err := os.ReadFile(src)
		if err != nil {
			t.Fatal(err)
		}
		os.WriteFile(dst, data, 0o644)
		before := meanCosine(embeddingRows(t, dst))
		if err := CorrelateRouting(dst, 2, 1); err != nil {
			t.Fatalf("%s: %v", name, err)
		}
		after := meanCosine(embeddingRows(t, dst))
		// Rows of size r plus a shared part of size 2r: cosine 4/5 between any two tokens.
		if math.Abs(before) > 0.1 || after < 0.7 || after > 0.9 {
			t.Fatalf("%s: mean cosine between token embeddings %.3f → %.3f, want ≈0 → ≈0.8", name, before, after)
		}
		got, _ := os.ReadFile(dst)
		if len(got) != len(data) {
			t.Fatalf("%s: file size changed", name)
		}
		f, _ := gguf.Open(dst)
		ti, _ := f.Tensor(TokenEmbeddingName)
		start, end := f.TensorFileOffset(ti), f.TensorFileOffset(ti)+ti.Bytes()
		if !bytes.Equal(got[:start], data[:start]) || !bytes.Equal(got[end:], data[end:]) {
			t.Fatalf("%s: bytes outside %s changed", name, TokenEmbeddingName)
		}
	}
}

func TestCorrelateRoutingRejectsBadInput(t *testing.T) {
	junk := filepath.Join(t.TempDir(), "junk.gguf")
	os.WriteFile(junk, []byte("not a model"), 0o644)
	if err := CorrelateRouting(junk, 1, 1); err == nil || !strings.Contains(err.Error(), junk) {
		t.Errorf("junk file: %v", err)
	}
	model := testmodels.Path(t, "qwen3moe-q8_0")
	if err := CorrelateRouting(model, -1, 1); err == nil || !strings.Contains(err.Error(), "strength") {
		t.Errorf("negative strength: %v", err)
	}
	if err := CorrelateRouting(model, math.NaN(), 1); err == nil {
		t.Error("NaN strength accepted")
	}
}

func TestHalfToFloat(t *testing.T) {
	for h, want := range map[uint16]float32{0x3c00: 1, 0xc000: -2, 0x0001: 5.960464477539063e-08, 0x7bff: 65504, 0x0000: 0, 0x3555: 0.33325195} {
		if got := halfToFloat(h); got != want {
			t.Errorf("halfToFloat(%#x) = %g, want %g", h, got, want)
		}
	}
}

// TestRoundsReportMedians: with several rounds every configuration runs once per round, round after
// round, and its row holds the median speeds and every round's; a configuration that cannot run is
// tried once, and one that fails in any round is reported failed.
func TestRoundsReportMedians(t *testing.T) {
	model := filepath.Join(t.TempDir(), "m.gguf")
	os.WriteFile(model, make([]byte, 1000), 0o644)
	speeds := map[string][]float64{"ram": {3, 9, 6}, "sniper": {2, 1, 4}}
	var order []string
	calls := map[string]int{}
	r := &Runner{Agent: "/bin/agent", Prompt: "hi", Rounds: 3, Exec: func(ctx context.Context, s memcap.Spec) (memcap.Result, error) {
		mode := ""
		for i, a := range s.Args {
			if a == "--mode" {
				mode = s.Args[i+1]
			}
		}
		order = append(order, mode)
		v := speeds[mode][calls[mode]]
		calls[mode]++
		stats := fmt.Sprintf(`{"mode":%q,"prompt_tokens":4,"generated_tokens":2,"prompt_tok_per_sec":%v,"decode_tok_per_sec":%v}`, mode, 2*v, v)
		return fakeAgent(stats, memcap.Result{PeakRSS: int64(v)})(ctx, s)
	}}
	rep, err := r.Run(t.Context(), Workload{Model: model, PromptTokens: 4, GenTokens: 2, Threads: 1}, []Config{
		{Kind: KindRAM, Cap: memcap.NoLimit}, {Kind: KindSniper, Budget: 1 << 30, Cap: memcap.NoLimit},
		{Kind: KindSniper, Budget: 2 << 30, Cap: 1 << 30}})
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(order, ","); got != "ram,sniper,ram,sniper,ram,sniper" {
		t.Fatalf("runs in order %s, want round after round", got)
	}
	ram, sn := rep.Results[0], rep.Results[1]
	if ram.DecodeTPS != 6 || ram.PrefillTPS != 12 || ram.PeakRSS != 6 || !slices.Equal(ram.DecodeRuns, []float64{3, 9, 6}) {
		t.Fatalf("ram: decode %v prefill %v (runs %v), want the medians 6 and 12", ram.DecodeTPS, ram.PrefillTPS, ram.DecodeRuns)
	}
	if sn.DecodeTPS != 2 || sn.PrefillTPS != 4 || float64(sn.DecodeVsRAM) != 2.0/6 {
		t.Fatalf("sniper: decode %v prefill %v ×ram %v", sn.DecodeTPS, sn.PrefillTPS, sn.DecodeVsRAM)
	}
	if m := rep.Results[2]; m.OK() || !strings.HasPrefix(m.Err, "skipped") {
		t.Fatalf("unrunnable configuration: %+v", m)
	}
	var text strings.Builder
	rep.WriteText(&text)
	if !strings.Contains(text.String(), "6.00 (3.00–9.00)") || !strings.Contains(text.String(), "3 rounds") {
		t.Fatalf("table lacks the median with its range:\n%s", text.String())
	}
	failedRound := Median([]Measurement{{DecodeTPS: 1}, failed(Config{}, errors.New("killed"))})
	if failedRound.OK() {
		t.Fatal("a configuration that failed in one round reported as fine")
	}
}

// TestDenseDiskBoundCountsTheLayersNotKept: stream mode keeps the first layers that fit, so the
// disk bound of a dense configuration is the other layers' bytes over the measured bandwidth, and
// each stream row reports its decode speed as a share of that bound.
func TestDenseDiskBoundCountsTheLayersNotKept(t *testing.T) {
	d := &DiskBound{GBps: 2, LayerBytes: []int64{1e9, 1e9, 1e9, 1e9}}
	for _, c := range []struct {
		budget   int64
		kept     int
		uncached int64
	}{{0, 0, 4e9}, {1.5e9, 1, 3e9}, {2e9, 2, 2e9}, {memcap.NoLimit, 4, 0}} {
		kept, uncached, bound, ok := d.Dense(c.budget)
		if !ok || kept != c.kept || uncached != c.uncached {
			t.Errorf("budget %d: kept %d uncached %d, want %d and %d", c.budget, kept, uncached, c.kept, c.uncached)
		}
		if uncached > 0 && math.Abs(bound-2e9/float64(uncached)) > 1e-9 {
			t.Errorf("budget %d: bound %v tok/s", c.budget, bound)
		}
	}
	if _, _, _, ok := (&DiskBound{GBps: 2}).Dense(0); ok {
		t.Error("a MoE model's bound has no dense layers")
	}
	rep := &Report{DiskBound: d, Results: []Measurement{
		{Config: Config{Kind: KindStream, Budget: 2e9, Cap: 8 << 30}, DecodeTPS: 0.8},
		{Config: Config{Kind: KindPeer, Cap: 8 << 30}, DecodeTPS: 0.1},
	}}
	rep.ComputeRatios()
	if got := float64(rep.Results[0].DecodeVsDisk); math.Abs(got-0.8) > 1e-9 {
		t.Fatalf("decode vs disk bound %v, want 0.8 (0.8 tok/s of a 1 tok/s bound)", got)
	}
	if !rep.Results[1].DecodeVsDisk.Missing() || float64(rep.Results[0].DecodeVsPeer) != 8 {
		t.Fatalf("peer row %+v", rep.Results)
	}
	var b strings.Builder
	if err := rep.WriteText(&b); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"keeps the first 2 of 4 layers", "= 1.00 tok/s", "80.0%"} {
		if !strings.Contains(b.String(), want) {
			t.Errorf("report lacks %q:\n%s", want, b.String())
		}
	}
}

// TestTimeoutAndPeerTokens: a configuration still running at --timeout is killed and reported as
// failed while the others go on; the peer generates --peer-gen-tokens instead of the workload's.
func TestTimeoutAndPeerTokens(t *testing.T) {
	model := filepath.Join(t.TempDir(), "m.gguf")
	os.WriteFile(model, make([]byte, 1000), 0o644)
	var peerArgs []string
	ours := fakeAgent(sampleRunStats, memcap.Result{})
	r := &Runner{Agent: "/bin/agent", LlamaBench: "/bin/llama-bench", Prompt: "hi", PeerGenTokens: 2, Timeout: 50 * time.Millisecond,
		Exec: func(ctx context.Context, s memcap.Spec) (memcap.Result, error) {
			if s.Path == "/bin/llama-bench" {
				peerArgs = s.Args
				<-ctx.Done() // a peer that never finishes
				return memcap.Result{}, ctx.Err()
			}
			return ours(ctx, s)
		}}
	rep, err := r.Run(t.Context(), Workload{Model: model, PromptTokens: 4, GenTokens: 8, Threads: 1},
		[]Config{{Kind: KindPeer, Cap: 1 << 30}, {Kind: KindStream, Budget: 0, Cap: 1 << 30}})
	if err != nil {
		t.Fatal(err)
	}
	if m := rep.Results[0]; m.OK() || !strings.Contains(m.Err, "timed out") {
		t.Fatalf("peer: %+v", m)
	}
	if !rep.Results[1].OK() {
		t.Fatalf("stream after the timed-out peer: %+v", rep.Results[1])
	}
	if joined := strings.Join(peerArgs, " "); !strings.Contains(joined, "-n 2 ") {
		t.Fatalf("peer args %q: want -n 2", joined)
	}
}
