package plan

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/expertsniper/expertsniper/gguf"
	"github.com/expertsniper/expertsniper/modelgen"
	"github.com/expertsniper/expertsniper/modelgen/testmodels"
	"github.com/expertsniper/expertsniper/sniper"
)

// golden holds numbers computed in the test from the file's tensor table and the generator's shape,
// independently of plan's code paths.
type golden struct {
	params, active, tensorBytes, streamed int64
	expertBytes                           []int64 // per layer, gate+up+down rows of one expert
	layerRead                             []int64 // per layer at 0% hits
	types                                 map[string]int
	kvF16Per1K                            int64 // KV cache of 1024 tokens at f16
}

var (
	goldenExpertRE = regexp.MustCompile(`^blk\.(\d+)\.ffn_(gate|up|down)_exps\.weight$`)
	goldenDenseRE  = regexp.MustCompile(`^blk\.(\d+)\.ffn_(gate|up|down)\.weight$`)
)

func computeGolden(t *testing.T, f *gguf.File, shape modelgen.Shape) golden {
	t.Helper()
	g := golden{expertBytes: make([]int64, shape.Layers), layerRead: make([]int64, shape.Layers), types: map[string]int{}}
	var expertParams int64
	for _, ti := range f.Tensors {
		n := int64(1)
		for _, d := range ti.Dims {
			n *= d
		}
		// Bytes from rows: every row is ne0/blocksize blocks of typesize bytes.
		rows := n / ti.Dims[0]
		bytes := rows * ti.Type.RowSize(ti.Dims[0])
		g.params += n
		g.tensorBytes += bytes
		g.types[ti.Type.String()]++
		if m := goldenExpertRE.FindStringSubmatch(ti.Name); m != nil && shape.IsMoE() {
			layer, _ := strconv.Atoi(m[1])
			if len(ti.Dims) != 3 || ti.Dims[2] != int64(shape.Experts) {
				t.Fatalf("%s: dims %v, want %d experts", ti.Name, ti.Dims, shape.Experts)
			}
			g.expertBytes[layer] += ti.Dims[1] * ti.Type.RowSize(ti.Dims[0])
			g.streamed += bytes
			expertParams += n
		}
		if m := goldenDenseRE.FindStringSubmatch(ti.Name); m != nil && !shape.IsMoE() {
			layer, _ := strconv.Atoi(m[1])
			g.layerRead[layer] += bytes
			g.streamed += bytes
		}
	}
	g.active = g.params
	if shape.IsMoE() {
		g.active = g.params - expertParams + expertParams/int64(shape.Experts)*int64(shape.ExpertsUsed)
		for l := range g.layerRead {
			g.layerRead[l] = g.expertBytes[l] * int64(shape.ExpertsUsed)
		}
	}
	attn := shape.Layers
	if shape.FullAttnInterval > 0 {
		attn = shape.Layers / shape.FullAttnInterval
	}
	g.kvF16Per1K = int64(attn) * int64(shape.KVHeads) * int64(2*shape.HeadDim) * 2 * 1024
	return g
}

func TestInspectEveryGeneratedModel(t *testing.T) {
	for _, name := range testmodels.Names() {
		t.Run(name, func(t *testing.T) {
			path := testmodels.Path(t, name)
			arch, _, _ := testmodels.Parse(name)
			shape, err := modelgen.Tiny(arch)
			if err != nil {
				t.Fatal(err)
			}
			f, err := gguf.Open(path)
			if err != nil {
				t.Fatal(err)
			}
			g := computeGolden(t, f, shape)
			m, err := Open(path)
			if err != nil {
				t.Fatal(err)
			}
			check := func(what string, got, want any) {
				t.Helper()
				if fmt.Sprint(got) != fmt.Sprint(want) {
					t.Errorf("%s = %v, want %v", what, got, want)
				}
			}
			check("architecture", m.Architecture, arch)
			check("layers", m.Layers, shape.Layers)
			check("context length", m.ContextLength, shape.Context)
			check("parameters", m.Parameters, g.params)
			check("active parameters", m.ActiveParameters, g.active)
			check("tensor bytes", m.TensorBytes, g.tensorBytes)
			check("streamed bytes", m.StreamedBytes, g.streamed)
			check("pinned bytes", m.PinnedBytes, g.tensorBytes-g.streamed)
			check("layer read bytes", m.LayerStreamBytes, g.layerRead)
			check("chat template", m.ChatTemplate, true)
			check("MoE", m.MoE, shape.IsMoE())
			check("experts", m.Experts, shape.Experts)
			check("experts used", m.ExpertsUsed, shape.ExpertsUsed)
			check("shared experts", m.SharedExperts, shape.SharedFF > 0)
			check("fused gate_up", m.FusedGateUp, arch == modelgen.ArchQwen35MoE)
			if shape.IsMoE() {
				check("bytes per expert", m.ExpertBytes, g.expertBytes)
			} else if len(m.ExpertBytes) != 0 {
				t.Errorf("dense model reports expert bytes %v", m.ExpertBytes)
			}
			types := map[string]int{}
			for _, tc := range m.Types {
				types[tc.Type] = tc.Tensors
			}
			check("type histogram", types, g.types)
			// Tensor data plus header and alignment padding make up the file.
			if pad := m.FileSize - f.DataOffset - g.tensorBytes; pad < 0 || pad > int64(len(f.Tensors))*f.Alignment {
				t.Errorf("file size %d, data offset %d, tensor bytes %d: %d bytes unaccounted", m.FileSize, f.DataOffset, g.tensorBytes, pad)
			}
			kv, err := KVCacheBytes(m, 1024, "f16", "f16")
			check("KV cache f16 1024 tokens", kv, g.kvF16Per1K)
			if err != nil {
				t.Fatal(err)
			}
			// q4_0 is 18 bytes per 32 values against f16's 64.
			kvq, _ := KVCacheBytes(m, 1024, "q4_0", "q4_0")
			check("KV cache q4_0 1024 tokens", kvq, g.kvF16Per1K*18/64)

			// The numbers the sniper actually reads.
			mode := sniper.ModeDense
			if shape.IsMoE() {
				mode = sniper.ModeExperts
			}
			idx, err := sniper.IndexGGUF(path, f, mode)
			if err != nil {
				t.Fatal(err)
			}
			for l := 0; l < shape.Layers; l++ {
				per := idx.ExpertBytes(l)
				if shape.IsMoE() {
					check(fmt.Sprintf("sniper bytes per expert, layer %d", l), per, m.ExpertBytes[l])
				} else {
					check(fmt.Sprintf("sniper FFN bytes, layer %d", l), per, m.LayerStreamBytes[l])
				}
			}
			check("sniper streamed bytes", idx.StreamedBytes(), m.StreamedBytes)
		})
	}
}

func TestPlanModes(t *testing.T) {
	path := testmodels.Path(t, "qwen3moe-q8_0")
	m, err := Open(path)
	if err != nil {
		t.Fatal(err)
	}
	base := Options{Context: 2048, KVType: "f16", DiskBytesPerSec: 2e9, DiskSource: "test", RAMSource: "test"}

	// Plenty of RAM: in RAM, nothing read per token.
	o := base
	o.RAM = 1 << 40
	p, err := Make(m, o)
	if err != nil {
		t.Fatal(err)
	}
	if p.Mode != "ram" || p.Flags != "--mode ram" || p.ExpectedReadBytes != 0 {
		t.Fatalf("big budget: mode %q flags %q read %d", p.Mode, p.Flags, p.ExpectedReadBytes)
	}
	kv, _ := KVCacheBytes(m, 2048, "f16", "f16")
	if p.InRAMBytes != m.TensorBytes+kv+p.ComputeBytes || p.StreamingMinBytes != m.PinnedBytes+kv+p.ComputeBytes+m.MaxLayerBytes()+p.StagingBytes {
		t.Fatalf("in RAM %d / streaming %d do not add up", p.InRAMBytes, p.StreamingMinBytes)
	}
	if m.MaxLayerBytes() != m.ExpertBytes[0]*int64(m.Experts) {
		t.Fatalf("layer working set %d, want all %d experts of a layer", m.MaxLayerBytes(), m.Experts)
	}

	// A budget that leaves room for a quarter of the experts: sniper with that cache.
	quarter := m.StreamedBytes / 4
	o.RAM = p.StreamingMinBytes + quarter
	p, err = Make(m, o)
	if err != nil {
		t.Fatal(err)
	}
	if p.Mode != "sniper" || p.CacheBytes != quarter {
		t.Fatalf("quarter budget: mode %q cache %d, want sniper %d", p.Mode, p.CacheBytes, quarter)
	}
	wantRead := int64(m.Layers*m.ExpertsUsed) * m.ExpertBytes[0]
	if p.TokenReadBytes != wantRead {
		t.Fatalf("read per token %d, want layers×used×bytes per expert = %d", p.TokenReadBytes, wantRead)
	}
	if lo := 2e9 / float64(wantRead); p.TokPerSecLow != lo {
		t.Fatalf("tok/s low %g, want %g", p.TokPerSecLow, lo)
	}
	if p.TokPerSecHigh <= p.TokPerSecLow || p.ExpectedReadBytes >= p.TokenReadBytes {
		t.Fatalf("a cache must make the high estimate better: %+v", p)
	}
	// The flags round down and parse back to no more than the plan; the cache follows from --ram.
	ram := flagValue(t, p.Flags, "--ram")
	if ram > o.RAM || ram < o.RAM-(1<<20) || strings.Contains(p.Flags, "--cache") {
		t.Fatalf("flags %q: ram %d (plan %d)", p.Flags, ram, o.RAM)
	}

	// Too small even for streaming: refused with the number that would work.
	o.RAM = p.StreamingMinBytes - 1
	p, err = Make(m, o)
	if err != nil {
		t.Fatal(err)
	}
	var text bytes.Buffer
	if err := (Report{Model: m, Plan: p}).WriteText(&text); err != nil {
		t.Fatal(err)
	}
	if p.Mode != "none" || !strings.Contains(text.String(), "does not fit; give at least --ram") {
		t.Fatalf("tiny budget: mode %q\n%s", p.Mode, text.String())
	}
	// A quantized KV cache shrinks what is needed.
	o.KVType = "q4_0"
	p2, _ := Make(m, o)
	if p2.KVCacheBytes*64 != p.KVCacheBytes*18 {
		t.Fatalf("q4_0 KV %d vs f16 %d", p2.KVCacheBytes, p.KVCacheBytes)
	}
	if _, err := Make(m, Options{RAM: 1 << 30, KVType: "q3_x"}); err == nil || !strings.Contains(err.Error(), `"q3_x"`) {
		t.Fatalf("bad KV type: %v", err)
	}
	if _, err := Make(m, Options{RAM: 0}); err == nil {
		t.Fatal("zero budget accepted")
	}
}

func TestPlanDenseModelStreams(t *testing.T) {
	m, err := Open(testmodels.Path(t, "qwen3-q8_0"))
	if err != nil {
		t.Fatal(err)
	}
	p, err := Make(m, Options{RAM: 1 << 40})
	if err != nil {
		t.Fatal(err)
	}
	// A little more than the minimum (two of the four layers' FFNs and the rest), less than all of it.
	o := Options{RAM: p.StreamingMinBytes + 1<<18, DiskBytesPerSec: 1e9}
	p, err = Make(m, o)
	if err != nil {
		t.Fatal(err)
	}
	if p.Mode != "stream" || !strings.HasPrefix(p.Flags, "--mode stream --ram ") {
		t.Fatalf("dense: mode %q flags %q", p.Mode, p.Flags)
	}
	var sum int64
	for _, b := range m.LayerStreamBytes {
		sum += b
	}
	if p.TokenReadBytes != sum || sum != m.StreamedBytes {
		t.Fatalf("dense reads %d per token, FFNs are %d, streamed %d", p.TokenReadBytes, sum, m.StreamedBytes)
	}
}

func TestPlanQwen35RecurrentState(t *testing.T) {
	m, err := Open(testmodels.Path(t, "qwen35moe-q8_0"))
	if err != nil {
		t.Fatal(err)
	}
	s, _ := modelgen.Tiny(modelgen.ArchQwen35MoE)
	recurrentLayers := s.Layers - s.Layers/s.FullAttnInterval
	conv := (s.SSMConvKernel - 1) * (2*s.SSMStateSize*s.SSMGroups + s.SSMInner())
	state := s.SSMStateSize * s.SSMInner()
	if want := int64(recurrentLayers*(conv+state)) * 4; m.RecurrentStateBytes != want || m.AttentionLayers != s.Layers/s.FullAttnInterval {
		t.Fatalf("recurrent state %d (want %d), attention layers %d", m.RecurrentStateBytes, want, m.AttentionLayers)
	}
	// Each sequence has a state, and each context checkpoint holds another; both count.
	one, err := Make(m, Options{RAM: 8 << 30})
	if err != nil {
		t.Fatal(err)
	}
	four, err := Make(m, Options{RAM: 8 << 30, Sequences: 4, Checkpoints: 2})
	if err != nil {
		t.Fatal(err)
	}
	r := m.RecurrentStateBytes
	if one.RecurrentStateBytes != r || one.CheckpointBytes != 0 || four.RecurrentStateBytes != 4*r || four.CheckpointBytes != 8*r ||
		four.InRAMBytes-one.InRAMBytes != 11*r {
		t.Fatalf("recurrent state %d per sequence: 1 sequence plans %d + %d of checkpoints, 4 with 2 checkpoints each %d + %d (in RAM %d more)",
			r, one.RecurrentStateBytes, one.CheckpointBytes, four.RecurrentStateBytes, four.CheckpointBytes, four.InRAMBytes-one.InRAMBytes)
	}
}

// TestPlanCountsReadStaging: streamed Q4_0/Q4_K experts are read into bounce buffers and converted to
// llama.cpp's repacked layout when they are converted (--repack, or a cache for every streamed weight),
// so the plan then counts that staging; otherwise, and for Q8_0 experts (no repacked kernels), they
// are read in place.
func TestPlanCountsReadStaging(t *testing.T) {
	var m4 *Model
	plan := func(name string, noRepack bool) *Plan {
		m, err := Open(testmodels.Path(t, name))
		if err != nil {
			t.Fatal(err)
		}
		m4 = m
		p, err := Make(m, Options{RAM: 8 << 30, DiskBytesPerSec: 2e9, DiskSource: "test", Repack: !noRepack})
		if err != nil {
			t.Fatal(err)
		}
		return p
	}
	q8, plain, q4 := plan("qwen3moe-q8_0", false), plan("qwen3moe-q4_0", true), plan("qwen3moe-q4_0", false)
	if q4.StagingBytes != min(sniper.StagingBytes(sniper.DefaultReaders), 2*m4.MaxLayerBytes()) || q4.StagingBytes == 0 ||
		q4.StreamingMinBytes != plain.StreamingMinBytes+q4.StagingBytes {
		t.Fatalf("Q4_0: staging %d, streaming needs %d (%d with --no-repack)", q4.StagingBytes, q4.StreamingMinBytes, plain.StreamingMinBytes)
	}
	if plain.StagingBytes != 0 || q8.StagingBytes != 0 {
		t.Fatalf("staging %d with --no-repack, %d for Q8_0: want 0", plain.StagingBytes, q8.StagingBytes)
	}
	var text strings.Builder
	if err := (Report{Model: m4, Plan: q4}).WriteText(&text); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(text.String(), "read staging") {
		t.Fatalf("the report does not show the staging:\n%s", text.String())
	}
}

func TestReportJSONFieldsAreStable(t *testing.T) {
	m, err := Open(testmodels.Path(t, "olmoe-q4_0"))
	if err != nil {
		t.Fatal(err)
	}
	p, err := Make(m, Options{RAM: 8 << 30, DiskBytesPerSec: 2e9, DiskSource: "test"})
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(Report{Model: m, Plan: p})
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]map[string]any
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	for _, k := range []string{"architecture", "parameters", "active_parameters", "layers", "expert_count", "expert_used_count",
		"expert_bytes_per_layer", "types", "context_length", "chat_template", "pinned_bytes", "streamed_bytes"} {
		if _, ok := got["model"][k]; !ok {
			t.Errorf("model.%s missing", k)
		}
	}
	for _, k := range []string{"ram_budget", "mode", "flags", "pinned_bytes", "kv_cache_bytes", "cache_bytes",
		"token_read_bytes", "disk_bytes_per_sec", "tok_per_sec_low", "tok_per_sec_high", "notes", "staging_bytes"} {
		if _, ok := got["plan"][k]; !ok {
			t.Errorf("plan.%s missing", k)
		}
	}
}

func TestWriteTextNamesWhatMatters(t *testing.T) {
	m, err := Open(testmodels.Path(t, "qwen35moe-q4_0"))
	if err != nil {
		t.Fatal(err)
	}
	p, err := Make(m, Options{RAM: 1 << 40})
	if err != nil {
		t.Fatal(err)
	}
	// (No read staging, the default for a cache smaller than the experts; TestPlanCountsReadStaging
	// covers the staging.)
	p, err = Make(m, Options{RAM: p.StreamingMinBytes + m.StreamedBytes/2, DiskBytesPerSec: 2e9, DiskSource: "test", RAMSource: "--ram"})
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := (Report{Model: m, Plan: p}).WriteText(&buf); err != nil {
		t.Fatal(err)
	}
	out := buf.String()
	for _, want := range []string{"qwen35moe\n", "active per token", "8 per layer, 2 used per token + shared expert",
		fmt.Sprintf("(%d bytes) per layer", m.ExpertBytes[0]), "gate+up are read as one fused slice", "Q4_0 ×",
		"chat template", "KV cache", "recurrent state", "read per token", "cache for experts", "50.0% of the streamable bytes",
		"recommended        --mode sniper --ram "} {
		if !strings.Contains(out, want) {
			t.Errorf("output lacks %q:\n%s", want, out)
		}
	}
}

func flagValue(t *testing.T, flags, name string) int64 {
	t.Helper()
	f := strings.Fields(flags)
	for i := range f {
		if f[i] == name && i+1 < len(f) {
			n, err := ParseSize(f[i+1])
			if err != nil {
				t.Fatal(err)
			}
			return n
		}
	}
	t.Fatalf("no %s in %q", name, flags)
	return 0
}

func TestParseAndFlagSize(t *testing.T) {
	for in, want := range map[string]int64{"8MiB": 8 << 20, "4GiB": 4 << 30, "16G": 16 << 30, "1.5GB": 1.5e9,
		"4096": 4096, " 2 gib ": 2 << 30, "512k": 512 << 10, "1TB": 1e12} {
		got, err := ParseSize(in)
		if err != nil || got != want {
			t.Errorf("ParseSize(%q) = %d, %v; want %d", in, got, err, want)
		}
	}
	for _, bad := range []string{"", "GiB", "12XB", "-1G", "1e400"} {
		if _, err := ParseSize(bad); err == nil {
			t.Errorf("ParseSize(%q) accepted", bad)
		}
	}
	for n, want := range map[int64]string{12 << 30: "12GiB", 12<<30 + 512<<20 + 5: "12800MiB", 100 << 20: "100MiB"} {
		if got := FlagSize(n); got != want {
			t.Errorf("FlagSize(%d) = %q, want %q", n, got, want)
		}
	}
}

func TestMemoryParsers(t *testing.T) {
	mi := "MemTotal:       24589012 kB\nMemFree:         1234567 kB\nMemAvailable:   20000000 kB\n"
	if n, err := parseMeminfo(mi); err != nil || n != 20000000<<10 {
		t.Errorf("parseMeminfo = %d, %v", n, err)
	}
	if _, err := parseMeminfo("MemTotal: 1 kB\n"); err == nil {
		t.Error("meminfo without MemAvailable accepted")
	}
	vm := `Mach Virtual Memory Statistics: (page size of 16384 bytes)
Pages free:                               10000.
Pages active:                            300000.
Pages inactive:                          200000.
Pages speculative:                         5000.
Pages throttled:                              0.
Pages wired down:                        150000.
Pages purgeable:                           1000.
`
	if n, err := parseVMStat(vm); err != nil || n != (10000+200000+5000+1000)*16384 {
		t.Errorf("parseVMStat = %d, %v", n, err)
	}
	if _, err := parseVMStat("Pages free: 1.\n"); err == nil {
		t.Error("vm_stat without page size accepted")
	}
	n, source, err := AvailableRAM()
	if err != nil || n <= 0 || source == "" {
		t.Errorf("AvailableRAM = %d, %q, %v", n, source, err)
	}
}

// fakeDirect serves reads at a fixed simulated speed.
type fakeDirect struct {
	size   int64
	delay  time.Duration
	fail   error
	served atomic.Int64 // bytes read
}

func (f *fakeDirect) ReadAt(buf []byte, off int64) (int, error) {
	if f.fail != nil {
		return 0, f.fail
	}
	if off%4096 != 0 || len(buf)%4096 != 0 || off+int64(len(buf)) > f.size {
		return 0, fmt.Errorf("unaligned or out-of-range read %d+%d", off, len(buf))
	}
	time.Sleep(f.delay)
	f.served.Add(int64(len(buf)))
	return len(buf), nil
}
func (f *fakeDirect) Size() int64                      { return f.size }
func (f *fakeDirect) NewBuffer(n int) ([]byte, func()) { return make([]byte, n), func() {} }
func (f *fakeDirect) Close() error                     { return nil }

func TestProbe(t *testing.T) {
	// 1 MiB per 2 ms per reader, 2 readers: at most about 1 GB/s (sleep overshoots, by much on a
	// loaded machine, so no lower bound on speed). The probe divides the bytes it read by the time
	// it read for, which is at least its duration and at most the time the call took.
	r := &fakeDirect{size: 1 << 30, delay: 2 * time.Millisecond}
	const duration = 100 * time.Millisecond
	start := time.Now()
	bps, err := probe(context.Background(), r, ProbeOptions{ReadSize: 1<<20 - 100, Duration: duration, Readers: 2})
	took := time.Since(start)
	if err != nil {
		t.Fatal(err)
	}
	served := float64(r.served.Load())
	if bps > 1.1*float64(2<<20)/0.002 || bps > served/duration.Seconds() || bps < served/took.Seconds() {
		t.Errorf("probe measured %.0f B/s for a simulated ~1 GB/s disk that served %.0f bytes in %v (call took %v)", bps, served, duration, took)
	}
	// MaxBytes stops early: at most one read per reader past it.
	r.served.Store(0)
	if _, err := probe(context.Background(), r, ProbeOptions{ReadSize: 1 << 20, Duration: 10 * time.Second, MaxBytes: 8 << 20, Readers: 2}); err != nil || r.served.Load() > 8<<20+2<<20 {
		t.Errorf("MaxBytes did not stop the probe: %d bytes read, %v", r.served.Load(), err)
	}
	// A read outlasting the whole duration (a loaded machine) is measured, not lost.
	slow := &fakeDirect{size: 1 << 30, delay: 200 * time.Millisecond}
	if bps, err := probe(context.Background(), slow, ProbeOptions{ReadSize: 1 << 20, Duration: time.Nanosecond, Readers: 2}); err != nil || bps <= 0 {
		t.Errorf("probe whose reads outlast it: %g B/s, %v", bps, err)
	}
	cancelled, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := probe(cancelled, r, ProbeOptions{ReadSize: 4096}); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled probe: %v", err)
	}
	eio := errors.New("input/output error")
	if _, err := probe(context.Background(), &fakeDirect{size: 1 << 20, fail: eio}, ProbeOptions{ReadSize: 4096}); !errors.Is(err, eio) {
		t.Errorf("probe error = %v, want the read error", err)
	}
	if _, err := probe(context.Background(), &fakeDirect{size: 100}, ProbeOptions{ReadSize: 4096}); err == nil {
		t.Error("probe of a 100-byte file succeeded")
	}
	// The real probe on a model file: a speed, or a clear "no direct I/O" where the filesystem refuses.
	path := testmodels.Path(t, "qwen3moe-q4_0")
	bps, err = ProbeDisk(context.Background(), path, ProbeOptions{ReadSize: 1 << 20, Duration: 50 * time.Millisecond, Readers: 2})
	if err != nil && !errors.Is(err, ErrNoDirectIO) {
		t.Fatalf("ProbeDisk: %v", err)
	}
	if err == nil && bps <= 0 {
		t.Fatalf("ProbeDisk measured %g", bps)
	}
	t.Logf("direct-read probe of %s: %.2f GB/s (err %v)", path, bps/1e9, err)
}

func TestAnalyzeRejectsBrokenModels(t *testing.T) {
	if _, err := Open("/does/not/exist.gguf"); err == nil || !strings.Contains(err.Error(), "exist.gguf") {
		t.Errorf("missing file: %v", err)
	}
}

// TestAnalyzeRejectsInconsistentModels: metadata and tensors that disagree are refused before any
// load, naming what disagrees (a streamed load would otherwise fail mid-decode, crash in llama.cpp,
// or compute with a stand-in for the missing tensor).
func TestAnalyzeRejectsInconsistentModels(t *testing.T) {
	cases := []struct {
		name string
		edit testmodels.Edit
		want string
	}{
		{"more layers than tensors", testmodels.SetUint32("qwen3moe.block_count", 8), "block_count is 8 but the file has no tensors for layer 4"},
		{"fewer layers than tensors", testmodels.SetUint32("qwen3moe.block_count", 3), "belongs to layer 3, but block_count is 3"},
		{"no router", testmodels.RenameTensor("blk.1.ffn_gate_inp.weight", "blk.1.ffn_gate_inx.weight"), "layer 1 has expert tensors but no router (blk.1.ffn_gate_inp.weight)"},
		{"zero heads", testmodels.SetUint32("qwen3moe.attention.head_count", 0), "qwen3moe.attention.head_count is 0"},
		{"more experts than tensors hold", testmodels.SetUint32("qwen3moe.expert_count", 16), "expert_count is 16 but the expert tensors hold 8"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			path := testmodels.Patched(t, "qwen3moe-q8_0", c.edit)
			_, err := Open(path)
			if err == nil || !strings.Contains(err.Error(), c.want) || !strings.Contains(err.Error(), path) {
				t.Fatalf("Open: %v\nwant an error naming %s and saying %q", err, path, c.want)
			}
		})
	}
}
