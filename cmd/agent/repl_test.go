package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/urfave/cli/v2"

	"github.com/expertsniper/expertsniper/repl"
)

// parseREPLFlags runs the REPL's flag handling over args and returns what it would start with.
func parseREPLFlags(t *testing.T, args ...string) (repl.Config, repl.ModelConfig, error) {
	t.Helper()
	o := &replOptions{}
	var (
		cfg   repl.Config
		model repl.ModelConfig
		err   error
	)
	app := &cli.App{Name: "agent", Flags: o.flags(true), Action: func(c *cli.Context) error {
		cfg, model, _, err = o.settings(c)
		return nil
	}}
	if rerr := app.Run(append([]string{"agent"}, args...)); rerr != nil {
		t.Fatal(rerr)
	}
	return cfg, model, err
}

func TestREPLFlagsAndEnvironmentOverrideConfig(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("XDG_CONFIG_HOME", dir)
	model := filepath.Join(dir, "m.gguf")
	os.WriteFile(model, []byte("x"), 0o644)
	os.MkdirAll(filepath.Join(dir, "expertsniper"), 0o755)
	os.WriteFile(filepath.Join(dir, "expertsniper", "config.json"), []byte(`{"default_model": "35b",
		"models": {"35b": {"path": "`+model+`", "mode": "sniper", "ram": "8GiB", "context": 8192}},
		"prices": {"input_per_million": 1, "output_per_million": 2}}`), 0o644)

	cfg, m, err := parseREPLFlags(t)
	if err != nil || m.Name != "35b" || m.Context != 8192 || m.RAM != "8GiB" || cfg.Mode != "agent" {
		t.Fatalf("config only: %+v %+v %v", cfg, m, err)
	}
	t.Setenv("EXPERTSNIPER_RAM", "4GiB")
	t.Setenv("EXPERTSNIPER_RAW", "true")
	cfg, m, err = parseREPLFlags(t, "-c", "65536", "--cache-type-k", "q4_0", "--ctv", "q4_0", "--price-output", "30")
	if err != nil {
		t.Fatal(err)
	}
	if m.Context != 65536 || m.CacheTypeK != "q4_0" || m.CacheTypeV != "q4_0" || m.RAM != "4GiB" || m.Mode != "sniper" {
		t.Fatalf("model %+v", m)
	}
	if cfg.Mode != "raw" || cfg.Prices.OutputPerMillion != 30 || cfg.Prices.InputPerMillion != 1 {
		t.Fatalf("config %+v", cfg)
	}
	if _, _, err := parseREPLFlags(t, "--cache-type-v", "q2"); err == nil || !strings.Contains(err.Error(), `cache type "q2"`) {
		t.Fatalf("bad cache type: %v", err)
	}
	if _, _, err := parseREPLFlags(t, "-m", "nosuch"); err == nil || !strings.Contains(err.Error(), `unknown model "nosuch"`) {
		t.Fatalf("unknown model: %v", err)
	}
	if _, m, err := parseREPLFlags(t, "-m", model); err != nil || m.Path != model {
		t.Fatalf("model by path: %+v %v", m, err)
	}
}

func TestREPLWithoutModelIsAUsageError(t *testing.T) {
	t.Setenv("XDG_CONFIG_HOME", t.TempDir())
	t.Setenv("EXPERTSNIPER_MODEL", "")
	_, _, err := parseREPLFlags(t)
	var ue usageError
	if err == nil || !strings.Contains(err.Error(), "no model") || !asUsage(err, &ue) {
		t.Fatalf("err = %v", err)
	}
}

func asUsage(err error, target *usageError) bool {
	u, ok := err.(usageError)
	if ok {
		*target = u
	}
	return ok
}
