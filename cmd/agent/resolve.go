package main

import (
	"os"
	"path/filepath"

	"github.com/urfave/cli/v2"

	"github.com/expertsniper/expertsniper/repl"
)

// resolveModel finds MODEL the way every command does, the REPL's way: a name from config.json, a
// pulled OWNER/REPO[:QUANT], or a .gguf path; "" takes config.json's default_model. config.json is
// EXPERTSNIPER_CONFIG, else the default place. A model that cannot be found, like a missing -m, is a
// usage error (exit code 2) in every command.
func resolveModel(name string) (repl.ModelConfig, error) {
	path := os.Getenv("EXPERTSNIPER_CONFIG")
	if path == "" {
		dirs, err := repl.DefaultDirs()
		if err != nil {
			return repl.ModelConfig{}, err
		}
		path = filepath.Join(dirs.Config, "config.json")
	}
	cfg, err := repl.LoadConfig(path)
	if err != nil {
		return repl.ModelConfig{}, err
	}
	if name == "" {
		name = cfg.DefaultModel
	}
	if name == "" {
		return repl.ModelConfig{}, usagef("no model: pass -m PATH.gguf (or -m NAME, or set default_model, in %s)", path)
	}
	m, err := cfg.ResolveModel(name)
	if err != nil {
		return m, usagef("%v", err)
	}
	return m, nil
}

// resolveRunModel resolves run's -m, and takes the settings config.json gives the model (mode, RAM,
// cache, threads) where no flag or variable set them, as the REPL does.
func resolveRunModel(c *cli.Context, o *runOptions) error {
	m, err := resolveModel(o.Model)
	if err != nil {
		return err
	}
	o.Model = m.Path
	if m.Mode != "" && !c.IsSet("mode") {
		o.Mode = m.Mode
	}
	if m.RAM != "" && !c.IsSet("ram") {
		o.RAM = m.RAM
	}
	if m.Cache != "" && !c.IsSet("cache") {
		o.Cache = m.Cache
	}
	if m.Threads > 0 && !c.IsSet("threads") {
		o.Threads = m.Threads
	}
	return nil
}
