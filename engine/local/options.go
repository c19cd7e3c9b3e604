package local

import (
	"context"
	"fmt"

	"github.com/expertsniper/expertsniper/binding"
	"github.com/expertsniper/expertsniper/bytesize"
	"github.com/expertsniper/expertsniper/plan"
	"github.com/expertsniper/expertsniper/sniper"
	"github.com/expertsniper/expertsniper/stream"
)

// Mode is plan.Mode: the modes are read (ParseMode) by pure packages too (config.json).
type Mode = plan.Mode

// The modes; "" means ModeAuto.
const (
	ModeAuto   = plan.ModeAuto
	ModeRAM    = plan.ModeRAM
	ModeSniper = plan.ModeSniper
	ModeStream = plan.ModeStream
)

// ParseMode reads a --mode value ("" is auto).
func ParseMode(s string) (Mode, error) {
	m, err := plan.ParseMode(s)
	if err != nil {
		return "", optionErrorf("--mode", "%q: want auto, ram, sniper or stream", s)
	}
	return m, nil
}

// OptionError is an option that cannot be used as given: a usage error naming its flag, which
// commands report as such (exit code 2).
type OptionError struct {
	Flag string // the command-line flag, e.g. "--ram"
	Err  error
}

func (e *OptionError) Error() string { return e.Flag + ": " + e.Err.Error() }
func (e *OptionError) Unwrap() error { return e.Err }

func optionErrorf(flag, format string, args ...any) error {
	return &OptionError{Flag: flag, Err: fmt.Errorf(format, args...)}
}

// Unlimited, as a --ram or --cache size, sets no bound.
const Unlimited = plan.Unlimited

// ParseSize reads a --ram or --cache value (plan.ParseBudget): a size, or "unlimited".
func ParseSize(s string) (int64, error) { return plan.ParseBudget(s) }

// DefaultPolicy and DefaultReaders are what Policy "" and Readers 0 mean.
const (
	DefaultPolicy  = sniper.DefaultPolicy
	DefaultReaders = sniper.DefaultReaders
)

// Validate checks each option on its own, before any model is read: every command validates the same
// way by calling it (Open does too). Errors are *OptionError.
func (o Options) Validate() error {
	if _, err := ParseMode(string(o.Mode)); err != nil {
		return err
	}
	if o.Slots < 0 {
		return optionErrorf("--parallel", "must not be negative, got %d", o.Slots)
	}
	if o.Context < 0 {
		return optionErrorf("--ctx-size", "must not be negative, got %d", o.Context)
	}
	if o.Checkpoints < 0 || o.Checkpoints > maxCheckpoints {
		return optionErrorf("--ctx-checkpoints", "must be between 0 and %d, got %d", maxCheckpoints, o.Checkpoints)
	}
	if o.Threads < 0 || o.BatchThreads < 0 {
		return optionErrorf("--threads", "must be positive, got %d", min(o.Threads, o.BatchThreads))
	}
	if o.RAM != "" {
		ram, err := ParseSize(o.RAM)
		if err != nil {
			return &OptionError{Flag: "--ram", Err: err}
		}
		if ram == 0 {
			return optionErrorf("--ram", "0 leaves no memory for the model: give a size such as 8GiB, or unlimited")
		}
	}
	if o.Cache != "" {
		if _, err := ParseSize(o.Cache); err != nil {
			return &OptionError{Flag: "--cache", Err: err}
		}
	}
	if _, err := sniper.NewPolicy(o.Policy); err != nil {
		return &OptionError{Flag: "--policy", Err: err}
	}
	if o.Repack && o.NoRepack {
		return optionErrorf("--repack", "and --no-repack contradict each other: give one")
	}
	if o.Readers < 0 {
		return optionErrorf("--readers", "must not be negative, got %d", o.Readers)
	}
	for _, kv := range []struct{ flag, v string }{{"--cache-type-k", o.CacheTypeK}, {"--cache-type-v", o.CacheTypeV}} {
		if _, err := plan.ParseKVType(kv.v); err != nil {
			return &OptionError{Flag: kv.flag, Err: err}
		}
	}
	if _, err := binding.ParseFlashAttn(o.FlashAttn); err != nil {
		return optionErrorf("--flash-attn", "%q: want on, off or auto", o.FlashAttn)
	}
	return nil
}

// Decision is how Open runs a model: the outcome of Decide.
type Decision struct {
	Mode Mode
	// RAM is the memory budget and RAMSource where it came from ("--ram", or the safe default's
	// source). RAM is Unlimited for --ram unlimited.
	RAM       int64
	RAMSource string
	// CacheBudget is the sniper's expert (or FFN) cache in bytes, or Unlimited (streamed modes only).
	CacheBudget int64
	// Plan is the memory plan the decision was made from.
	Plan *plan.Plan
	// Repack says whether weights llama.cpp's CPU kernels repack are held in those repacked layouts:
	// in RAM mode unless --no-repack; in streamed modes with --repack, or by default when the cache is
	// to hold every streamed weight (--cache unlimited or at least their size, --ram unlimited), so
	// that each is converted once. The run is bit-exact against --mode ram with the same setting.
	Repack bool
	// Summary is one line saying what was decided and why; Warnings name options that do not apply
	// to the mode and are ignored, or budgets that may not hold.
	Summary  string
	Warnings []string
}

// Decide chooses the mode (auto: in RAM when the memory plan fits the budget, else the sniper for
// MoE models and dense streaming for the others) and the cache budget, and checks every option
// against the model and the mode. It is the one place where these are decided; Open calls it.
//
// The budget (--ram) means the same everywhere: all the memory the model may take — weights held in
// RAM, the expert cache, the KV cache and llama.cpp's compute buffers — as `agent inspect` plans it.
// Without --ram it is plan.DefaultBudget: what the machine (or the memory cgroup) has available,
// less headroom for the rest of the system.
//
// The rule for options that do not apply to the chosen mode (--cache, --policy, --readers,
// --no-recycle or --prefetch=false in RAM mode): a warning, and the
// option is ignored. An explicit --ram that cannot hold what was asked is an error.
func Decide(pm *plan.Model, o Options) (Decision, error) {
	if err := o.Validate(); err != nil {
		return Decision{}, err
	}
	mode, _ := ParseMode(string(o.Mode))
	if mode == ModeSniper && !pm.MoE {
		return Decision{}, optionErrorf("--mode", "sniper needs a Mixture-of-Experts model; %s is dense (use --mode stream)", pm.Name)
	}
	if mode == ModeStream && pm.MoE {
		return Decision{}, optionErrorf("--mode", "stream is for dense models; %s has experts (use --mode sniper)", pm.Name)
	}
	d := Decision{RAMSource: "--ram"}
	explicitRAM := o.RAM != ""
	if explicitRAM {
		d.RAM, _ = ParseSize(o.RAM)
	} else {
		var err error
		if d.RAM, d.RAMSource, err = plan.DefaultBudget(); err != nil {
			return Decision{}, fmt.Errorf("%w (pass --ram)", err)
		}
	}
	cache, cacheSet := int64(0), o.Cache != ""
	if cacheSet {
		cache, _ = ParseSize(o.Cache)
	}
	slots := max(o.Slots, 1)
	ctx := o.Context
	if ctx <= 0 {
		ctx = plan.DefaultContext
		if pm.ContextLength > 0 && pm.ContextLength < ctx {
			ctx = pm.ContextLength
		}
	}
	planRAM := d.RAM
	if planRAM == Unlimited {
		planRAM = 1 << 62
	}
	// Streamed reads are converted into llama.cpp's repacked layout only when the cache is to hold every
	// streamed weight, so that each is converted once (Decision.Repack); then the plan counts the
	// conversion's staging buffers.
	holdsAll := (cacheSet && (cache == Unlimited || cache >= pm.StreamedBytes)) || (!cacheSet && d.RAM == Unlimited)
	streamRepack := o.Repack || (!o.NoRepack && holdsAll)
	p, err := plan.Make(pm, plan.Options{RAM: planRAM, RAMSource: d.RAMSource, Context: ctx * slots,
		Sequences: slots, Checkpoints: o.Checkpoints,
		KVType: o.CacheTypeK, KVTypeV: o.CacheTypeV, Repack: streamRepack})
	if err != nil {
		return Decision{}, err
	}
	d.Plan = p
	streamMode := ModeStream
	if pm.MoE {
		streamMode = ModeSniper
	}
	if o.Distributed {
		if mode != ModeAuto && mode != ModeRAM {
			return Decision{}, optionErrorf("--mode", "%s cannot spread over RPC workers: their streamed weights live in this machine's memory (use --mode ram)", mode)
		}
		d.Mode, d.Repack = ModeRAM, !o.NoRepack
		d.Summary = fmt.Sprintf("ram mode, the layers spread over RPC workers: weights %s in all", bytesize.Format(pm.TensorBytes))
		return d, nil
	}
	if mode == ModeAuto {
		if p.InRAMBytes <= planRAM {
			mode = ModeRAM
		} else {
			mode = streamMode
		}
	}
	d.Mode = mode
	warnf := func(format string, args ...any) { d.Warnings = append(d.Warnings, fmt.Sprintf(format, args...)) }
	why := ""
	if o.Mode == "" || o.Mode == ModeAuto {
		why = fmt.Sprintf(" (auto: the model needs %s in RAM, the budget is %s)", bytesize.Format(p.InRAMBytes), sizeOrUnlimited(d.RAM))
	}

	if mode == ModeRAM {
		d.Repack = !o.NoRepack
		for _, na := range []struct {
			set  bool
			flag string
		}{{cacheSet, "--cache"}, {o.Policy != "", "--policy"}, {o.Readers != 0, "--readers"}, {o.NoRecycle, "--no-recycle"}, {o.NoPrefetch, "--prefetch=false"}, {o.Repack, "--repack"}} {
			if na.set {
				warnf("%s applies to sniper and stream modes, not to ram mode%s: ignored", na.flag, why)
			}
		}
		if p.InRAMBytes > planRAM {
			if explicitRAM {
				return Decision{}, optionErrorf("--ram", "%s cannot hold the model in RAM mode (it needs %s with its KV cache and buffers): use --ram %s, or --mode %s",
					o.RAM, bytesize.Format(p.InRAMBytes), plan.FlagSize(roundUpMiB(p.InRAMBytes)), streamMode)
			}
			warnf("the model needs %s in RAM mode, more than the %s available (%s): expect swapping, or use --mode %s", bytesize.Format(p.InRAMBytes), bytesize.Format(d.RAM), d.RAMSource, streamMode)
		}
		d.Summary = fmt.Sprintf("ram mode%s: weights %s, KV cache %s, compute buffers %s", why,
			bytesize.Format(pm.TensorBytes), bytesize.Format(p.StateBytes()), bytesize.Format(p.ComputeBytes))
		return d, nil
	}

	need := p.StreamingMinBytes // pinned weights + KV + compute + one layer's working set
	switch {
	case cacheSet && cache == Unlimited:
		d.CacheBudget = Unlimited
		if explicitRAM && d.RAM != Unlimited {
			return Decision{}, optionErrorf("--cache", "unlimited lets the cache grow past --ram %s: drop one of them", o.RAM)
		}
	case cacheSet:
		d.CacheBudget = cache
		if total := need + cache; d.RAM != Unlimited && total > d.RAM {
			if explicitRAM {
				return Decision{}, optionErrorf("--ram", "%s cannot hold the pinned weights, KV cache and buffers and one layer's working set (%s) plus a cache of %s: use --ram %s or a smaller --cache",
					o.RAM, bytesize.Format(need), bytesize.Format(cache), plan.FlagSize(roundUpMiB(total)))
			}
			warnf("--cache %s plus the rest of the model (%s) is more than the %s available (%s): expect swapping", o.Cache, bytesize.Format(need), bytesize.Format(d.RAM), d.RAMSource)
		}
	case d.RAM == Unlimited:
		d.CacheBudget = Unlimited
	default:
		if need > d.RAM {
			return Decision{}, optionErrorf("--ram", "a budget of %s (%s) is too small for %s mode: the pinned weights take %s, the KV cache and buffers %s and one layer's working set %s; use --ram %s or more",
				bytesize.Format(d.RAM), d.RAMSource, mode, bytesize.Format(pm.PinnedBytes), bytesize.Format(p.StateBytes()+p.ComputeBytes), bytesize.Format(p.LayerWorkingSet), plan.FlagSize(roundUpMiB(need)))
		}
		d.CacheBudget = d.RAM - need
	}
	// Stream mode caches dense layers' FFN weights, not experts: the line says which.
	cacheName := "expert cache"
	if mode == ModeStream {
		cacheName = "FFN weight cache"
	}
	d.Repack = streamRepack
	layout := ""
	if !d.Repack && !o.NoRepack && pm.RepackStreamed {
		layout = fmt.Sprintf("; streamed weights in the file's layout (the %s is not set to hold them all, and converting each reread into llama.cpp's repacked layout costs more than its kernels save: --repack converts; exact against --mode ram --no-repack)", cacheName)
	}
	d.Summary = fmt.Sprintf("%s mode%s: pinned %s, streamed %s, one layer's working set %s, KV cache and buffers %s, %s %s%s",
		mode, why, bytesize.Format(pm.PinnedBytes), bytesize.Format(pm.StreamedBytes), bytesize.Format(p.LayerWorkingSet),
		bytesize.Format(p.StateBytes()+p.ComputeBytes), cacheName, sizeOrUnlimited(d.CacheBudget), layout)
	return d, nil
}

// loadModel loads path as d decided: llama.cpp's own load in RAM mode, the sniper's otherwise (the
// model owns the streamed weights, nil in RAM mode).
func loadModel(ctx context.Context, path string, o Options, d Decision) (*binding.Model, *stream.Weights, error) {
	if d.Mode == ModeRAM {
		mopts := []binding.ModelOption{}
		if !d.Repack {
			mopts = append(mopts, binding.WithExtraBufts(false))
		}
		m, err := binding.LoadModel(ctx, path, append(mopts, o.ModelOptions...)...)
		return m, nil, err
	}
	// Two contexts may decode at once: the slots' one and the embeddings'.
	so := stream.Options{Mode: sniper.ModeExperts, CacheBudget: d.CacheBudget, Prefetch: !o.NoPrefetch,
		Contexts: 2, Readers: o.Readers, Policy: o.Policy, NoRecycle: o.NoRecycle, FS: o.StreamFS, PredictInline: o.PredictInline,
		NoRepack: !d.Repack}
	if d.Mode == ModeStream {
		so.Mode = sniper.ModeDense // Prefetch: the next layer's FFN is read while this one computes
	}
	w, err := stream.Open(path, so)
	if err != nil {
		return nil, nil, err
	}
	m, err := binding.LoadFromUser(ctx, path, w, o.ModelOptions...) // owns w from here on
	if err != nil {
		return nil, nil, err
	}
	w.DropPageCache()
	return m, w, nil
}

func roundUpMiB(n int64) int64 { return (n + (1<<20 - 1)) &^ (1<<20 - 1) }

func sizeOrUnlimited(n int64) string {
	if n < 0 {
		return "unlimited"
	}
	return bytesize.Format(n)
}
