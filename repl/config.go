// Package repl is the interactive terminal front end of expertsniper (`agent`): line editing with
// history, multi-line input, streaming answers, a status line after each answer, slash commands, saved
// sessions, grading and cost accounting. It talks to models only through engine.Engine, and answers
// through agentmode.
package repl

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"

	"github.com/expertsniper/expertsniper/ggmlrpc"
	"github.com/expertsniper/expertsniper/hub"
	"github.com/expertsniper/expertsniper/plan"
	"github.com/expertsniper/expertsniper/remote"
)

// Dirs are where the REPL keeps its files, following the XDG base directory spec on every platform (so
// that a user's dotfiles work the same on macOS and Linux).
type Dirs struct {
	Config string // config.json, grades.jsonl
	Data   string // sessions/
	State  string // history
}

// DefaultDirs reads XDG_CONFIG_HOME, XDG_DATA_HOME and XDG_STATE_HOME, falling back to ~/.config,
// ~/.local/share and ~/.local/state, each with an "expertsniper" subdirectory.
func DefaultDirs() (Dirs, error) {
	home, herr := os.UserHomeDir()
	pick := func(env, fallback string) (string, error) {
		if v := os.Getenv(env); v != "" && filepath.IsAbs(v) {
			return filepath.Join(v, "expertsniper"), nil
		}
		if herr != nil {
			return "", fmt.Errorf("find the home directory for %s: %w", env, herr)
		}
		return filepath.Join(home, fallback, "expertsniper"), nil
	}
	var d Dirs
	var err error
	if d.Config, err = pick("XDG_CONFIG_HOME", ".config"); err != nil {
		return d, err
	}
	if d.Data, err = pick("XDG_DATA_HOME", filepath.Join(".local", "share")); err != nil {
		return d, err
	}
	if d.State, err = pick("XDG_STATE_HOME", filepath.Join(".local", "state")); err != nil {
		return d, err
	}
	return d, nil
}

// ModelConfig is one model the REPL can switch to with /model NAME.
type ModelConfig struct {
	Name       string `json:"-"`
	Path       string `json:"path"`
	Mode       string `json:"mode,omitempty"`         // auto, ram, sniper, stream
	RAM        string `json:"ram,omitempty"`          // whole memory budget, e.g. "8GiB"
	Cache      string `json:"cache,omitempty"`        // expert cache, e.g. "2GiB"
	Context    int    `json:"context,omitempty"`      // context size in tokens
	CacheTypeK string `json:"cache_type_k,omitempty"` // f16, q8_0, q4_0
	CacheTypeV string `json:"cache_type_v,omitempty"`
	Threads    int    `json:"threads,omitempty"`
	// RPC spreads the model over llama.cpp RPC workers ("HOST:PORT,…", agent rpc-server), in RAM mode;
	// TensorSplit weights the layers: this machine's share first, then one per worker ("1,1,1").
	RPC         string `json:"rpc,omitempty"`
	TensorSplit string `json:"tensor_split,omitempty"`
}

// Prices are a cloud model's prices per million tokens, for /cost.
type Prices struct {
	Label            string  `json:"label"`
	InputPerMillion  float64 `json:"input_per_million"`
	OutputPerMillion float64 `json:"output_per_million"`
}

// Config is config.json. Every field also has a flag and an environment variable (cmd/agent).
type Config struct {
	Models       map[string]ModelConfig `json:"models,omitempty"`
	DefaultModel string                 `json:"default_model,omitempty"`
	// Mode is "agent" (the model routes itself; default) or "raw" (plain chat).
	Mode        string  `json:"mode,omitempty"`
	System      string  `json:"system,omitempty"`
	MaxTokens   int     `json:"max_tokens,omitempty"`
	Temperature float32 `json:"temperature,omitempty"`
	Seed        uint32  `json:"seed,omitempty"`
	Prices      Prices  `json:"prices"`
	// Remote is s3://BUCKET[/PREFIX], where /push and /pull move saved conversations.
	Remote string `json:"remote,omitempty"`
	Search struct {
		URL     string `json:"url,omitempty"` // DuckDuckGo-compatible HTML endpoint
		Results int    `json:"results,omitempty"`
	} `json:"search"`
	Shell struct {
		Disabled       bool `json:"disabled,omitempty"`
		TimeoutSeconds int  `json:"timeout_seconds,omitempty"`
		MaxOutputBytes int  `json:"max_output_bytes,omitempty"`
	} `json:"shell"`
}

// DefaultConfig is what a user without a config file gets. Prices default to a typical frontier
// model's list price so that /cost means something out of the box; the label says which.
func DefaultConfig() Config {
	c := Config{Mode: "agent", MaxTokens: 1024}
	c.Prices = Prices{Label: "a frontier cloud model", InputPerMillion: 3, OutputPerMillion: 15}
	c.Search.Results = 5
	c.Shell.TimeoutSeconds = 30
	c.Shell.MaxOutputBytes = 16 << 10
	return c
}

// LoadConfig reads path over DefaultConfig. A missing file is not an error; a malformed one is.
func LoadConfig(path string) (Config, error) {
	c := DefaultConfig()
	data, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) {
		return c, nil
	}
	if err != nil {
		return c, fmt.Errorf("read config %q: %w", path, err)
	}
	dec := json.NewDecoder(strings.NewReader(string(data)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&c); err != nil {
		return c, fmt.Errorf("parse config %q: %w", path, err)
	}
	if err := c.Validate(); err != nil {
		return c, fmt.Errorf("config %q: %w", path, err)
	}
	return c, nil
}

// Validate checks values that would otherwise fail later and far from their source.
func (c *Config) Validate() error {
	switch c.Mode {
	case "", "agent", "raw":
	default:
		return fmt.Errorf("mode %q: want agent or raw", c.Mode)
	}
	for name, m := range c.Models {
		if strings.TrimSpace(m.Path) == "" {
			return fmt.Errorf("model %q has no path", name)
		}
		// The same parsers as the engine's and every command's flags (plan).
		if _, err := plan.ParseMode(m.Mode); err != nil {
			return fmt.Errorf("model %q: %w", name, err)
		}
		for _, t := range []string{m.CacheTypeK, m.CacheTypeV} {
			if _, err := plan.ParseKVType(t); err != nil {
				return fmt.Errorf("model %q: %w", name, err)
			}
		}
		for _, b := range []struct{ key, v string }{{"ram", m.RAM}, {"cache", m.Cache}} {
			if b.v == "" {
				continue
			}
			if n, err := plan.ParseBudget(b.v); err != nil {
				return fmt.Errorf("model %q: %s (--%s): %w", name, b.key, b.key, err)
			} else if n == 0 && b.key == "ram" {
				return fmt.Errorf("model %q: ram (--ram) 0 leaves no memory for the model: give a size such as 8GiB, or unlimited", name)
			}
		}
		if m.Context < 0 {
			return fmt.Errorf("model %q: negative context size", name)
		}
		if m.Threads < 0 {
			return fmt.Errorf("model %q: threads (--threads) must not be negative, got %d", name, m.Threads)
		}
		if err := validateRPC(m); err != nil {
			return fmt.Errorf("model %q: %w", name, err)
		}
	}
	if c.DefaultModel != "" {
		if _, ok := c.Models[c.DefaultModel]; !ok {
			return fmt.Errorf("default_model %q is not among the models", c.DefaultModel)
		}
	}
	if c.Remote != "" {
		if _, _, err := remote.ParseURL(c.Remote); err != nil {
			return err
		}
	}
	if c.MaxTokens < 0 {
		return fmt.Errorf("max_tokens (--max-tokens) must not be negative, got %d", c.MaxTokens)
	}
	if c.Temperature < 0 {
		return fmt.Errorf("temperature (--temp) must not be negative, got %g", c.Temperature)
	}
	if c.Shell.TimeoutSeconds < 0 {
		return fmt.Errorf("shell timeout_seconds (--shell-timeout) must not be negative, got %d", c.Shell.TimeoutSeconds)
	}
	if c.Prices.InputPerMillion < 0 || c.Prices.OutputPerMillion < 0 {
		return errors.New("prices must not be negative")
	}
	return nil
}

// validateRPC checks a model's rpc and tensor_split (--rpc, --tensor-split).
func validateRPC(m ModelConfig) error {
	if strings.TrimSpace(m.RPC) == "" {
		if m.TensorSplit != "" {
			return errors.New("tensor_split (--tensor-split) needs rpc (--rpc)")
		}
		return nil
	}
	eps, err := ggmlrpc.ParseEndpoints(m.RPC)
	if err != nil {
		return fmt.Errorf("rpc (--rpc): %w", err)
	}
	if _, err := ggmlrpc.ParseSplit(m.TensorSplit, len(eps)); err != nil {
		return err
	}
	if m.Mode == "sniper" || m.Mode == "stream" {
		return fmt.Errorf("rpc (--rpc) runs the model in RAM spread over the workers; it cannot be combined with mode %s", m.Mode)
	}
	return nil
}

// ModelNames lists the configured models, sorted.
func (c *Config) ModelNames() []string {
	names := make([]string, 0, len(c.Models))
	for n := range c.Models {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// expandHome turns a leading "~/" into the home directory, as a shell would in config.json paths.
func expandHome(p string) string {
	if rest, ok := strings.CutPrefix(p, "~/"); ok {
		if home, err := os.UserHomeDir(); err == nil {
			return filepath.Join(home, rest)
		}
	}
	return p
}

// ResolveModel finds a model by configured name, or treats arg as a path to a GGUF file.
func (c *Config) ResolveModel(arg string) (ModelConfig, error) {
	if m, ok := c.Models[arg]; ok {
		m.Name = arg
		m.Path = expandHome(m.Path)
		// A configured path may also name a pulled model (OWNER/REPO[:QUANT]).
		if _, err := os.Stat(m.Path); err != nil {
			if p, herr := hub.ResolveModel(m.Path); herr == nil {
				m.Path = p
			}
		}
		return m, nil
	}
	arg = expandHome(arg)
	// Pulled models: OWNER/REPO[:QUANT], REPO[:QUANT] or a file name in the models directory.
	if _, err := os.Stat(arg); err != nil {
		if p, herr := hub.ResolveModel(arg); herr == nil {
			return ModelConfig{Name: arg, Path: p}, nil
		}
	}
	if strings.HasSuffix(strings.ToLower(arg), ".gguf") || strings.ContainsRune(arg, filepath.Separator) {
		st, err := os.Stat(arg)
		if err != nil {
			// The hub's message says where else the name was looked for, as `agent run` does.
			if _, herr := hub.ResolveModel(arg); herr != nil {
				return ModelConfig{}, herr
			}
			return ModelConfig{}, fmt.Errorf("model %q: %w", arg, err)
		}
		if st.IsDir() {
			return ModelConfig{}, fmt.Errorf("model %q is a directory, not a GGUF file", arg)
		}
		return ModelConfig{Name: filepath.Base(arg), Path: arg}, nil
	}
	// NAME:QUANT is a pulled model's name: the hub's message says where it was looked for and how to
	// pull it.
	if strings.Contains(arg, ":") {
		if _, herr := hub.ResolveModel(arg); herr != nil {
			return ModelConfig{}, herr
		}
	}
	if len(c.Models) == 0 {
		return ModelConfig{}, fmt.Errorf("unknown model %q: no models are configured (add them to config.json, or give a path to a .gguf file)", arg)
	}
	return ModelConfig{}, fmt.Errorf("unknown model %q: configured models are %s", arg, strings.Join(c.ModelNames(), ", "))
}
