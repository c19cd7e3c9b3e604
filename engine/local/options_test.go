package local

import (
	"errors"
	"fmt"
	"strings"
	"testing"

	"github.com/expertsniper/expertsniper/modelgen/testmodels"
	"github.com/expertsniper/expertsniper/plan"
)

func planned(t *testing.T, name string) *plan.Model {
	t.Helper()
	pm, err := plan.Open(testmodels.Path(t, name))
	if err != nil {
		t.Fatal(err)
	}
	return pm
}

// TestDecideAutoFollowsTheMemoryPlan: auto picks RAM when the whole plan (weights, KV cache, compute
// buffers) fits --ram, else the sniper (MoE) or dense streaming; the cache is what --ram leaves after
// the streaming minimum, the same figure agent inspect prints.
func TestDecideAutoFollowsTheMemoryPlan(t *testing.T) {
	for _, c := range []struct {
		model  string
		stream Mode
	}{{"qwen3moe-q8_0", ModeSniper}, {"qwen3-q8_0", ModeStream}} {
		pm := planned(t, c.model)
		probe, err := Decide(pm, Options{RAM: "1TiB", Context: 256})
		if err != nil {
			t.Fatal(err)
		}
		p := probe.Plan
		if probe.Mode != ModeRAM || !strings.Contains(probe.Summary, "auto") {
			t.Fatalf("%s with 1TiB: %+v", c.model, probe)
		}
		between := (p.StreamingMinBytes + p.InRAMBytes) / 2
		d, err := Decide(pm, Options{RAM: fmt.Sprint(between), Context: 256})
		if err != nil {
			t.Fatal(err)
		}
		if d.Mode != c.stream || d.CacheBudget != between-p.StreamingMinBytes {
			t.Fatalf("%s with %d: mode %s cache %d, want %s %d", c.model, between, d.Mode, d.CacheBudget, c.stream, between-p.StreamingMinBytes)
		}
		inspect, err := plan.Make(pm, plan.Options{RAM: between, Context: 256})
		if err != nil {
			t.Fatal(err)
		}
		if inspect.CacheBytes != d.CacheBudget || string(inspect.Mode) != string(d.Mode) {
			t.Fatalf("inspect plans %s with a cache of %d, the engine %s with %d", inspect.Mode, inspect.CacheBytes, d.Mode, d.CacheBudget)
		}
		_, err = Decide(pm, Options{RAM: fmt.Sprint(p.StreamingMinBytes - 1), Context: 256})
		var oe *OptionError
		if !errors.As(err, &oe) || oe.Flag != "--ram" || !strings.Contains(err.Error(), "too small") {
			t.Fatalf("%s below the streaming minimum: %v", c.model, err)
		}
	}
}

// TestDecideWarnsAboutOptionsTheModeIgnores: one rule for every knob that does not apply to the mode
// that runs, whether the user or auto chose it: a warning naming the flag, and the run goes on.
func TestDecideWarnsAboutOptionsTheModeIgnores(t *testing.T) {
	pm := planned(t, "qwen3moe-q8_0")
	d, err := Decide(pm, Options{RAM: "1TiB", Cache: "1GiB", Policy: "lru", Readers: 4, NoRecycle: true, NoPrefetch: true, Repack: true})
	if err != nil {
		t.Fatal(err)
	}
	if d.Mode != ModeRAM {
		t.Fatalf("mode %s", d.Mode)
	}
	for _, flag := range []string{"--cache", "--policy", "--readers", "--no-recycle", "--prefetch=false", "--repack"} {
		if !strings.Contains(strings.Join(d.Warnings, "\n"), flag+" applies to sniper and stream modes") {
			t.Errorf("no warning about %s in %q", flag, d.Warnings)
		}
	}
	d, err = Decide(pm, Options{Mode: ModeSniper, Cache: "0", NoRepack: true})
	if err != nil {
		t.Fatal(err)
	}
	if len(d.Warnings) != 0 {
		t.Fatalf("--no-repack --mode sniper (it applies to every mode): warnings %q", d.Warnings)
	}
	if d, err := Decide(pm, Options{Mode: ModeSniper, Cache: "0"}); err != nil || len(d.Warnings) != 0 || d.CacheBudget != 0 {
		t.Fatalf("plain sniper: %+v, %v", d, err)
	}
}

// TestDecideRefusesWhatAnExplicitBudgetCannotHold: --ram is a promise: an explicit budget that cannot
// hold the model in RAM mode, or the cache asked for, is a usage error naming the size that would.
func TestDecideRefusesWhatAnExplicitBudgetCannotHold(t *testing.T) {
	pm := planned(t, "qwen3moe-q8_0")
	var oe *OptionError
	_, err := Decide(pm, Options{Mode: ModeRAM, RAM: "1MiB"})
	if !errors.As(err, &oe) || oe.Flag != "--ram" || !strings.Contains(err.Error(), "cannot hold the model in RAM mode") {
		t.Fatalf("--mode ram --ram 1MiB: %v", err)
	}
	_, err = Decide(pm, Options{Mode: ModeSniper, RAM: "1GiB", Cache: "2GiB"})
	if !errors.As(err, &oe) || oe.Flag != "--ram" {
		t.Fatalf("a cache larger than --ram: %v", err)
	}
	_, err = Decide(pm, Options{Mode: ModeSniper, RAM: "1GiB", Cache: "unlimited"})
	if !errors.As(err, &oe) || oe.Flag != "--cache" {
		t.Fatalf("--cache unlimited under --ram: %v", err)
	}
	if d, err := Decide(pm, Options{Mode: ModeSniper, Cache: "unlimited"}); err != nil || d.CacheBudget != Unlimited {
		t.Fatalf("--cache unlimited: %+v, %v", d, err)
	}
	if d, err := Decide(pm, Options{Mode: ModeSniper, RAM: "unlimited"}); err != nil || d.CacheBudget != Unlimited {
		t.Fatalf("--ram unlimited: %+v, %v", d, err)
	}
	_, err = Decide(pm, Options{Mode: ModeStream})
	if !errors.As(err, &oe) || oe.Flag != "--mode" {
		t.Fatalf("--mode stream on a MoE model: %v", err)
	}
}

// TestValidateSpellsSizesOneWay: --ram and --cache take a size or "unlimited"; a negative size is
// refused however it is written (-1 was unlimited for --cache while -1MiB was an error), and --ram 0
// (which meant unlimited in run while --cache 0 meant none) is refused.
func TestValidateSpellsSizesOneWay(t *testing.T) {
	for _, c := range []struct {
		o    Options
		flag string
	}{
		{Options{Cache: "-1"}, "--cache"}, {Options{Cache: "-1MiB"}, "--cache"}, {Options{RAM: "-1"}, "--ram"},
		{Options{RAM: "0"}, "--ram"}, {Options{Mode: "warp"}, "--mode"}, {Options{Policy: "fifo"}, "--policy"},
		{Options{Readers: -1}, "--readers"}, {Options{CacheTypeK: "q9"}, "--cache-type-k"},
		{Options{FlashAttn: "sometimes"}, "--flash-attn"}, {Options{Context: -1}, "--ctx-size"},
	} {
		var oe *OptionError
		if err := c.o.Validate(); !errors.As(err, &oe) || oe.Flag != c.flag {
			t.Errorf("%+v: %v, want an error about %s", c.o, err, c.flag)
		}
	}
	for _, o := range []Options{{Cache: "0"}, {Cache: "unlimited"}, {Cache: "UNLIMITED"}, {RAM: "8GiB"}, {RAM: "unlimited"},
		{Mode: "SNIPER"}, {CacheTypeK: "Q8_0", CacheTypeV: "q5_1"}, {FlashAttn: "on"}} {
		if err := o.Validate(); err != nil {
			t.Errorf("%+v: %v", o, err)
		}
	}
}

// TestDecideRepacksStreamedWeightsOnlyWhenTheCacheHoldsThemAll: converting a streamed read into
// llama.cpp's repacked layout pays off only if it is done once; a smaller cache rereads (and would
// reconvert) experts every few tokens, so by default it keeps the file's layout and says so. --repack
// and --no-repack override it; together they are a usage error.
func TestDecideRepacksStreamedWeightsOnlyWhenTheCacheHoldsThemAll(t *testing.T) {
	pm := planned(t, "qwen3moe-q4_0")
	if !pm.RepackStreamed {
		t.Fatal("the Q4_0 test model has no streamed tensors llama.cpp repacks")
	}
	all := fmt.Sprint(pm.StreamedBytes)
	for _, c := range []struct {
		o    Options
		want bool
	}{
		{Options{Mode: ModeRAM}, true},
		{Options{Mode: ModeRAM, NoRepack: true}, false},
		{Options{Mode: ModeSniper, Cache: "0"}, false},
		{Options{Mode: ModeSniper, Cache: "256KiB"}, false},
		{Options{Mode: ModeSniper, Cache: all}, true},
		{Options{Mode: ModeSniper, Cache: "unlimited"}, true},
		{Options{Mode: ModeSniper, Cache: "0", Repack: true}, true},
		{Options{Mode: ModeSniper, Cache: "unlimited", NoRepack: true}, false},
	} {
		d, err := Decide(pm, c.o)
		if err != nil {
			t.Fatalf("%+v: %v", c.o, err)
		}
		if d.Repack != c.want {
			t.Errorf("%+v: repack %v, want %v", c.o, d.Repack, c.want)
		}
		says := strings.Contains(d.Summary, "file's layout")
		if wantSays := !c.want && c.o.Mode == ModeSniper && !c.o.NoRepack; says != wantSays {
			t.Errorf("%+v: summary %q (should say it keeps the file's layout: %v)", c.o, d.Summary, wantSays)
		}
	}
	var oe *OptionError
	if _, err := Decide(pm, Options{Mode: ModeSniper, Repack: true, NoRepack: true}); !errors.As(err, &oe) || oe.Flag != "--repack" {
		t.Fatalf("--repack --no-repack: %v", err)
	}
}
