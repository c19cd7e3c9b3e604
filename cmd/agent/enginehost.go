package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"

	"github.com/urfave/cli/v2"

	"github.com/expertsniper/expertsniper/engine"
	"github.com/expertsniper/expertsniper/engine/isolated"
	"github.com/expertsniper/expertsniper/engine/local"
	"github.com/expertsniper/expertsniper/ggmlrpc"
	"github.com/expertsniper/expertsniper/plan"
)

func init() { register(engineHostCommand) }

// engineHostConfig is what the parent tells `agent engine-host` to load.
type engineHostConfig struct {
	Model   string        `json:"model"`
	Options local.Options `json:"options"` // ModelOptions and StatsSource stay unset: they cannot cross
	RPC     []string      `json:"rpc"`
	Weights []float64     `json:"weights"`
}

// engineHostCommand is the child side of engine/isolated: it loads the model (spread over the RPC
// workers) and answers the parent's calls on the pipes the parent made. Internal: started by serve
// and the REPL when --rpc is set, so that a worker lost mid-request kills this child, not them.
func engineHostCommand(streams *IOStreams) *cli.Command {
	return &cli.Command{
		Name:   "engine-host",
		Usage:  "internal: hold a model for a parent process (serve and the REPL with --rpc)",
		Hidden: true,
		Action: func(c *cli.Context) error {
			if c.NArg() != 1 {
				return usagef("engine-host takes one JSON configuration")
			}
			var cfg engineHostConfig
			if err := json.Unmarshal([]byte(c.Args().First()), &cfg); err != nil {
				return usagef("engine-host: configuration: %v", err)
			}
			conn, err := isolated.ChildConn()
			if err != nil {
				return err
			}
			eng, err := openEngineHost(c.Context, cfg)
			if err != nil {
				conn.Close()
				return err
			}
			serveErr := isolated.Serve(eng, conn)
			if err := eng.Close(); err != nil && serveErr == nil {
				serveErr = err
			}
			return serveErr
		},
	}
}

func openEngineHost(ctx context.Context, cfg engineHostConfig) (engine.Engine, error) {
	o := cfg.Options
	if len(cfg.RPC) > 0 {
		pm, err := plan.Open(cfg.Model)
		if err != nil {
			return nil, err
		}
		workers := &rpcSetup{Endpoints: cfg.RPC, Weights: cfg.Weights}
		if err := workers.guardProcess(os.Stderr); err != nil {
			return nil, err
		}
		rp, err := workers.connect(ctx, pm.Layers)
		if err != nil {
			return nil, err
		}
		fmt.Fprintf(os.Stderr, "rpc: %s\n", rp.describe())
		// Spread over the workers, the model runs in RAM mode (local.Decide refuses the others).
		o.ModelOptions, o.Distributed = append(o.ModelOptions, rp.Options...), true
		if o.StatsSource == nil {
			o.StatsSource = deviceStats(rp.engineDevices())
		}
	}
	return local.Open(ctx, cfg.Model, o)
}

// engineHostBinary is the program started as the engine process ("" = this one); tests, whose own
// binary is the test program, point it at a built agent.
var engineHostBinary string

// openIsolated loads the model in an `agent engine-host` child spread over the workers of s. A worker
// lost mid-request then ends the child (llama.cpp's RPC client aborts its process) and fails that
// request with an error naming the worker; the next request starts a new child once the workers
// answer again.
func openIsolated(ctx context.Context, s *rpcSetup, model string, o local.Options, errOut io.Writer, status func(string, ...any)) (engine.Engine, error) {
	if len(o.ModelOptions) > 0 || o.StatsSource != nil {
		return nil, errors.New("internal: model options cannot be passed to an engine process")
	}
	cfg, err := json.Marshal(engineHostConfig{Model: model, Options: o, RPC: s.Endpoints, Weights: s.Weights})
	if err != nil {
		return nil, fmt.Errorf("engine process configuration: %w", err)
	}
	exe := engineHostBinary
	if exe == "" {
		var err error
		if exe, err = os.Executable(); err != nil {
			return nil, fmt.Errorf("find this program to start the engine process: %w", err)
		}
	}
	status("rpc: loading %s in an engine process spread over %d worker(s)", model, len(s.Endpoints))
	return isolated.Open(ctx, isolated.Options{
		Command:  []string{exe, "engine-host", string(cfg)},
		Stderr:   errOut,
		Diagnose: s.probeAll,
	})
}

// probeAll checks every worker; the error names the first that is unreachable or incompatible, or,
// after the engine process crashed, the worker that was lost.
func (s *rpcSetup) probeAll(ctx context.Context, crashed bool) error {
	for _, ep := range s.Endpoints {
		if _, err := ggmlrpc.Probe(ctx, ep); err != nil {
			var we *ggmlrpc.WorkerError
			if crashed && errors.As(err, &we) && we.Kind == "unreachable" {
				return &ggmlrpc.WorkerError{Endpoint: we.Endpoint, Kind: "lost mid-request", Err: we.Err}
			}
			return err
		}
	}
	return nil
}
