// Package bench measures one workload (a prompt of P tokens, then N generated) in several
// configurations — the stock llama.cpp peer (llama-bench, mmap), our in-RAM mode and the sniper or
// dense streaming with given cache budgets — each as a child process under the same memory cap that
// includes the page cache (package memcap), and reports them side by side with ratios to the peer and
// the disk-bound ceiling of the model.
package bench

import (
	"cmp"
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"strings"
	"time"

	"github.com/expertsniper/expertsniper/memcap"
	"github.com/expertsniper/expertsniper/plan"
)

// Workload is what every configuration runs.
type Workload struct {
	Model        string `json:"model"`
	PromptTokens int    `json:"prompt_tokens"`
	GenTokens    int    `json:"gen_tokens"`
	Threads      int    `json:"threads"`
	// RPC and TensorSplit are the --rpc workers and --tensor-split weights of the rpc configuration.
	RPC         string `json:"rpc,omitempty"`
	TensorSplit string `json:"tensor_split,omitempty"`
}

// Validate rejects workloads no configuration could run.
func (w Workload) Validate() error {
	switch {
	case w.Model == "":
		return fmt.Errorf("bench: no model given")
	case w.PromptTokens < 1:
		return fmt.Errorf("bench: prompt tokens must be at least 1, got %d", w.PromptTokens)
	case w.GenTokens < 1:
		return fmt.Errorf("bench: generated tokens must be at least 1, got %d", w.GenTokens)
	case w.Threads < 1:
		return fmt.Errorf("bench: threads must be at least 1, got %d", w.Threads)
	case w.TensorSplit != "" && w.RPC == "":
		return fmt.Errorf("bench: a tensor split needs rpc workers")
	}
	return nil
}

// Kind is the engine a configuration runs.
type Kind string

const (
	// KindPeer is stock llama.cpp from the same build: llama-bench, mmap, --repack 0.
	KindPeer Kind = "llama.cpp"
	// KindPeerDefault is stock llama-bench with llama.cpp's defaults (weights repacked for its faster
	// CPU kernels, copied into RAM), always uncapped: the in-RAM speed our streaming is held to.
	KindPeerDefault Kind = "llama.cpp-default"
	// KindRAM is our engine with the whole model in memory.
	KindRAM Kind = "ram"
	// KindSniper streams the routed experts of a MoE model with a byte-budgeted cache.
	KindSniper Kind = "sniper"
	// KindStream streams each layer's FFN of a dense model.
	KindStream Kind = "stream"
	// KindRPC is our engine in RAM with the layers spread over llama.cpp RPC workers (Workload.RPC).
	KindRPC Kind = "rpc"
)

// ParseKind accepts the names of the configuration kinds.
func ParseKind(s string) (Kind, error) {
	switch k := Kind(strings.ToLower(strings.TrimSpace(s))); k {
	case KindPeer, KindPeerDefault, KindRAM, KindSniper, KindStream, KindRPC:
		return k, nil
	case "peer", "llama", "llamacpp":
		return KindPeer, nil
	case "default", "peer-default", "llamacpp-default":
		return KindPeerDefault, nil
	}
	return "", fmt.Errorf("unknown configuration %q (llama.cpp, llama.cpp-default, ram, sniper, stream, rpc)", s)
}

// Config is one configuration: an engine, its expert cache budget (streaming kinds) and the memory cap
// its process runs under.
type Config struct {
	Kind Kind `json:"kind"`
	// Budget is the expert cache for sniper/stream (bytes; memcap.NoLimit = unlimited).
	Budget int64 `json:"budget,omitempty"`
	// Cap limits the process's memory plus page cache (bytes; memcap.NoLimit = uncapped).
	Cap int64 `json:"cap"`
	// Variant names extra `agent run` flags (Flags) of a streaming configuration, e.g. "prefetch".
	Variant string   `json:"variant,omitempty"`
	Flags   []string `json:"flags,omitempty"`
}

// Variant is a named set of extra `agent run` flags for the streaming configurations.
type Variant struct {
	Name  string
	Flags []string
}

// ParseVariants parses "NAME=FLAGS,..." (flags separated by spaces; "plain=" has none), e.g.
// "plain=,prefetch=--prefetch". An empty string is one variant without extra flags.
func ParseVariants(s string) ([]Variant, error) {
	if strings.TrimSpace(s) == "" {
		return []Variant{{}}, nil
	}
	var out []Variant
	seen := map[string]bool{}
	for _, part := range strings.Split(s, ",") {
		name, flags, ok := strings.Cut(part, "=")
		name = strings.TrimSpace(name)
		if !ok || name == "" {
			return nil, fmt.Errorf("variant %q: want NAME=FLAGS (e.g. prefetch=--prefetch, or plain= for none)", part)
		}
		if seen[name] {
			return nil, fmt.Errorf("variant %q given twice", name)
		}
		seen[name] = true
		v := Variant{Name: name, Flags: strings.Fields(flags)}
		if len(v.Flags) > 0 && !strings.HasPrefix(v.Flags[0], "-") {
			return nil, fmt.Errorf("variant %q: %q is not a flag of agent run", name, v.Flags[0])
		}
		out = append(out, v)
	}
	return out, nil
}

// Name is how the configuration appears in the table, e.g. "sniper 2.00 GiB".
func (c Config) Name() string {
	switch c.Kind {
	case KindSniper, KindStream:
		name := string(c.Kind) + " " + FormatSize(c.Budget)
		if c.Budget < 0 {
			name = string(c.Kind) + " unlimited"
		}
		if c.Variant != "" {
			name += " +" + c.Variant
		}
		return name
	case KindPeer:
		return "llama.cpp mmap"
	case KindPeerDefault:
		return "llama.cpp default"
	}
	return "ours " + string(c.Kind)
}

// Measurement is the outcome of one configuration.
type Measurement struct {
	Config
	// Err says why the configuration produced no numbers (OOM kill, failure); the rest is then zero.
	Err string `json:"error,omitempty"`

	PromptTokens int     `json:"prompt_tokens"`
	GenTokens    int     `json:"gen_tokens"`
	PrefillTPS   float64 `json:"prefill_tok_s"`
	DecodeTPS    float64 `json:"decode_tok_s"`
	// PeakRSS is the process's own high-water mark; PeakUsage the cgroup's (RSS + page cache).
	PeakRSS   int64 `json:"peak_rss"`
	PeakUsage int64 `json:"cgroup_peak"`
	// DiskRead is what the process read from the block device over its whole life (load included;
	// page-cache misses, mmap faults and direct reads alike).
	DiskRead int64 `json:"disk_read_bytes"`
	// Streaming kinds only (NaN/absent otherwise): bytes of experts read per decoded token, the disk
	// throughput achieved while decoding, and the expert cache hit rate during decode.
	ReadPerToken Num `json:"read_per_token_bytes"`
	// RPC kind only: bytes on the wire to and from the workers per decoded token, and how fast the
	// weights went to the workers while loading (GB/s).
	WirePerToken Num `json:"rpc_wire_per_token_bytes"`
	WireLoadGBps Num `json:"rpc_load_gb_s"`
	DiskGBps     Num `json:"disk_gb_s"`
	HitRate      Num `json:"hit_rate"`
	// Ratios to the peer under the same cap, to our uncapped in-RAM run, and to stock llama.cpp's
	// default in-RAM run (KindPeerDefault, uncapped) (NaN when missing).
	PrefillVsPeer   Num `json:"prefill_vs_peer"`
	DecodeVsPeer    Num `json:"decode_vs_peer"`
	PrefillVsRAM    Num `json:"prefill_vs_ram"`
	DecodeVsRAM     Num `json:"decode_vs_ram"`
	DecodeVsDefault Num `json:"decode_vs_default"`
	// DecodeVsDisk is decode tok/s over the disk bound of the configuration (dense streaming:
	// DiskBound.Dense of its budget; NaN otherwise).
	DecodeVsDisk Num `json:"decode_vs_disk_bound"`

	Wall time.Duration `json:"wall_ns"`
	// PrefillRuns and DecodeRuns are every round's tok/s when the configuration ran more than once
	// (Runner.Rounds); the fields above are then the median round's.
	PrefillRuns []float64 `json:"prefill_runs,omitempty"`
	DecodeRuns  []float64 `json:"decode_runs,omitempty"`
}

// Median combines the rounds of one configuration: the round with the median decode speed, with
// the median prefill speed and every round's speeds (the lower median for an even count). A configuration that failed in any round is
// reported as failed with that round's error (a crash or an OOM kill is never averaged away).
func Median(ms []Measurement) Measurement {
	if len(ms) == 0 {
		return Measurement{}
	}
	for _, m := range ms {
		if !m.OK() {
			return m
		}
	}
	if len(ms) == 1 {
		return ms[0]
	}
	byDecode := slices.Clone(ms)
	slices.SortStableFunc(byDecode, func(a, b Measurement) int { return cmp.Compare(a.DecodeTPS, b.DecodeTPS) })
	out := byDecode[(len(ms)-1)/2]
	prefill := make([]float64, len(ms))
	out.PrefillRuns, out.DecodeRuns = make([]float64, len(ms)), make([]float64, len(ms))
	for i, m := range ms {
		out.PrefillRuns[i], out.DecodeRuns[i] = m.PrefillTPS, m.DecodeTPS
		prefill[i] = m.PrefillTPS
	}
	slices.Sort(prefill)
	out.PrefillTPS = prefill[(len(ms)-1)/2]
	return out
}

// failed makes the measurement of a configuration that did not complete.
func failed(c Config, err error) Measurement {
	m := Measurement{Config: c, Err: err.Error()}
	m.clearOptional()
	return m
}

func (m *Measurement) clearOptional() {
	nan := Num(math.NaN())
	m.ReadPerToken, m.DiskGBps, m.HitRate = nan, nan, nan
	m.WirePerToken, m.WireLoadGBps = nan, nan
	m.PrefillVsPeer, m.DecodeVsPeer, m.PrefillVsRAM, m.DecodeVsRAM, m.DecodeVsDefault, m.DecodeVsDisk = nan, nan, nan, nan, nan, nan
}

// OK reports whether the configuration produced numbers.
func (m Measurement) OK() bool { return m.Err == "" }

// DiskBound is the decode ceiling the disk allows when no expert is ever cached.
type DiskBound struct {
	// ReadSize is the size of one expert read (one tensor's slice of one expert), ReadsPerToken how many
	// such reads one token needs at 0% hits, MissBytesPerToken their total.
	ReadSize          int64 `json:"read_size_bytes"`
	ReadsPerToken     int   `json:"reads_per_token"`
	MissBytesPerToken int64 `json:"miss_bytes_per_token"`
	// Threads reading in parallel during the probe, and the direct-read throughput they reached.
	Threads int     `json:"threads"`
	GBps    float64 `json:"direct_read_gb_s"`
	Direct  bool    `json:"direct"`
	// TokPerSec = GBps / MissBytesPerToken.
	TokPerSec float64 `json:"tok_s"`
	// LayerBytes are a dense model's FFN bytes per layer (stream mode reads each layer's whole):
	// with a cache, the disk bound counts only the layers it does not keep (Dense).
	LayerBytes []int64 `json:"dense_layer_bytes,omitempty"`
}

// Dense is the disk bound of dense streaming with a cache of budget bytes: stream mode keeps the
// first layers whose FFNs fit (sniper.FixedLayers) and reads the others every token, so the bound is
// the bytes of those others ÷ the measured bandwidth. ok is false for a MoE model.
func (d *DiskBound) Dense(budget int64) (kept int, uncached int64, tokPerSec float64, ok bool) {
	if d == nil || len(d.LayerBytes) == 0 {
		return 0, 0, 0, false
	}
	var held int64
	for _, b := range d.LayerBytes {
		uncached += b
	}
	for _, b := range d.LayerBytes {
		if budget >= 0 && held+b > budget {
			break
		}
		held += b
		kept++
	}
	uncached -= held
	if uncached <= 0 {
		return kept, 0, math.Inf(1), true
	}
	return kept, uncached, d.GBps * 1e9 / float64(uncached), true
}

// Report is everything one bench run produced.
type Report struct {
	Machine   Machine       `json:"machine"`
	Command   string        `json:"command"`
	Workload  Workload      `json:"workload"`
	ModelSize int64         `json:"model_size_bytes"`
	DiskBound *DiskBound    `json:"disk_bound,omitempty"`
	Results   []Measurement `json:"results"`
	// Rounds is how many times every configuration ran (Results hold the medians).
	Rounds  int       `json:"rounds,omitempty"`
	Started time.Time `json:"started"`
}

// ComputeRatios fills every measurement's ratios: to the peer under the same cap, to our uncapped
// in-RAM run and to stock llama.cpp's default (repacked) uncapped run. Missing or failed references
// give NaN.
func (r *Report) ComputeRatios() {
	peer := map[int64]*Measurement{}
	var ram, def *Measurement
	for i := range r.Results {
		m := &r.Results[i]
		if !m.OK() {
			continue
		}
		switch {
		case m.Kind == KindPeer:
			if _, seen := peer[m.Cap]; !seen {
				peer[m.Cap] = m
			}
		case m.Kind == KindRAM && m.Cap < 0 && ram == nil:
			ram = m
		case m.Kind == KindPeerDefault && m.Cap < 0 && def == nil:
			def = m
		}
	}
	for i := range r.Results {
		m := &r.Results[i]
		nan := Num(math.NaN())
		m.PrefillVsPeer, m.DecodeVsPeer, m.PrefillVsRAM, m.DecodeVsRAM, m.DecodeVsDefault, m.DecodeVsDisk = nan, nan, nan, nan, nan, nan
		if !m.OK() {
			continue
		}
		if def != nil && m != def {
			m.DecodeVsDefault = ratio(m.DecodeTPS, def.DecodeTPS)
		}
		if _, uncached, bound, ok := r.DiskBound.Dense(m.Budget); ok && m.Kind == KindStream && uncached > 0 {
			m.DecodeVsDisk = ratio(m.DecodeTPS, bound)
		}
		if p := peer[m.Cap]; p != nil && m.Kind != KindPeer && m.Kind != KindPeerDefault {
			m.PrefillVsPeer, m.DecodeVsPeer = ratio(m.PrefillTPS, p.PrefillTPS), ratio(m.DecodeTPS, p.DecodeTPS)
		}
		if ram != nil && m != ram {
			m.PrefillVsRAM, m.DecodeVsRAM = ratio(m.PrefillTPS, ram.PrefillTPS), ratio(m.DecodeTPS, ram.DecodeTPS)
		}
	}
}

func ratio(a, b float64) Num {
	if b <= 0 || math.IsNaN(a) || math.IsNaN(b) {
		return Num(math.NaN())
	}
	return Num(a / b)
}

// Num is a number that may be missing (NaN), written to JSON as null.
type Num float64

// Missing reports whether there is no value.
func (n Num) Missing() bool { return math.IsNaN(float64(n)) || math.IsInf(float64(n), 0) }

// MarshalJSON writes null for a missing value.
func (n Num) MarshalJSON() ([]byte, error) {
	if n.Missing() {
		return []byte("null"), nil
	}
	return json.Marshal(float64(n))
}

// UnmarshalJSON reads null as a missing value.
func (n *Num) UnmarshalJSON(b []byte) error {
	if string(b) == "null" {
		*n = Num(math.NaN())
		return nil
	}
	var f float64
	if err := json.Unmarshal(b, &f); err != nil {
		return err
	}
	*n = Num(f)
	return nil
}

// FormatSize prints bytes in binary units, "none" for a negative (unlimited) value.
func FormatSize(n int64) string { return memcap.FormatBytes(n) }

// ParseSize parses what plan.ParseSize does ("4GiB", "512MiB", "1.5G", "4096") and also
// "none"/"unlimited" (memcap.NoLimit), for caps and budgets.
func ParseSize(s string) (int64, error) {
	switch strings.ToLower(strings.TrimSpace(s)) {
	case "none", "unlimited", "inf", "max":
		return memcap.NoLimit, nil
	}
	return plan.ParseSize(s)
}

// ParseSizes parses a comma-separated list of sizes, e.g. "4GiB,8GiB,none".
func ParseSizes(s string) ([]int64, error) {
	var out []int64
	for _, part := range strings.Split(s, ",") {
		if strings.TrimSpace(part) == "" {
			continue
		}
		n, err := ParseSize(part)
		if err != nil {
			return nil, err
		}
		out = append(out, n)
	}
	if len(out) == 0 {
		return nil, fmt.Errorf("empty list of sizes %q", s)
	}
	return out, nil
}
