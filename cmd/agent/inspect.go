package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/expertsniper/expertsniper/bytesize"
	"github.com/expertsniper/expertsniper/plan"
)

func init() { register(inspectCommand) }

type inspectOptions struct {
	Model    string
	RAM      string
	Context  int
	KVTypeK  string
	KVTypeV  string
	DiskGBps float64
	JSON     bool
	rpc      rpcFlagSet
}

func inspectCommand(streams *IOStreams) *cli.Command {
	opts := &inspectOptions{}
	return &cli.Command{
		Name:      "inspect",
		Usage:     "show what a model is made of and plan its memory for a RAM budget",
		ArgsUsage: "MODEL",
		Description: "MODEL is a GGUF path or a name in the models directory (see `agent models`).\n" +
			"Prints architecture, parameters (total and active), experts and their bytes, tensor types, then a\n" +
			"memory plan: pinned weights, KV cache, the expert cache the budget leaves, bytes read per token,\n" +
			"the disk-bound speed range, and the flags to run it with. The disk speed is measured with a short\n" +
			"direct-read probe of the model file unless --disk-gbps is given. With --rpc, it also asks the workers\n" +
			"for their memory and shows what each device would hold of the model spread over them (--tensor-split).",
		Flags: append([]cli.Flag{
			&cli.StringFlag{Name: "ram", Usage: ramUsage, EnvVars: env("RAM"), Destination: &opts.RAM},
			&cli.IntFlag{Name: "ctx-size", Aliases: []string{"c"}, Usage: "context size to plan for (default: min(4096, trained))", Destination: &opts.Context},
			&cli.StringFlag{Name: "cache-type-k", Aliases: []string{"ctk"}, Value: "f16", Usage: "KV cache type of K: f16, q8_0, q4_0", Destination: &opts.KVTypeK},
			&cli.StringFlag{Name: "cache-type-v", Aliases: []string{"ctv"}, Usage: "KV cache type of V (default: as K)", Destination: &opts.KVTypeV},
			&cli.Float64Flag{Name: "disk-gbps", Usage: "disk read speed in GB/s (default: measure it)", Destination: &opts.DiskGBps},
			&cli.BoolFlag{Name: "json", Usage: "print JSON for scripts", Destination: &opts.JSON},
		}, opts.rpc.flags("EXPERTSNIPER_")...),
		Action: func(c *cli.Context) error {
			args, err := interspersedArgs(c)
			if err != nil {
				return err
			}
			if len(args) != 1 {
				return usagef("inspect takes one MODEL, got %d arguments", len(args))
			}
			opts.Model = args[0]
			return runInspect(c.Context, streams, opts)
		},
	}
}

func runInspect(ctx context.Context, streams *IOStreams, opts *inspectOptions) error {
	if opts.Context < 0 {
		return usagef("--ctx-size must not be negative, got %d", opts.Context)
	}
	if opts.DiskGBps < 0 {
		return usagef("--disk-gbps must not be negative, got %g", opts.DiskGBps)
	}
	m, err := resolveModel(opts.Model)
	if err != nil {
		return err
	}
	path := m.Path
	model, err := plan.Open(path)
	if err != nil {
		return fmt.Errorf("inspect: %w", err)
	}
	po := plan.Options{Context: opts.Context, KVType: opts.KVTypeK, KVTypeV: opts.KVTypeV}
	// The budget means what it means for run, serve and the REPL, and has the same default.
	if opts.RAM != "" {
		if po.RAM, err = plan.ParseBudget(opts.RAM); err != nil {
			return usagef("--ram: %v", err)
		}
		if po.RAM == 0 || po.RAM == plan.Unlimited {
			return usagef("--ram: plan for a positive size, e.g. 8GiB")
		}
		po.RAMSource = "--ram"
	} else if po.RAM, po.RAMSource, err = plan.DefaultBudget(); err != nil {
		return fmt.Errorf("%w (pass --ram)", err)
	}
	if opts.DiskGBps > 0 {
		po.DiskBytesPerSec, po.DiskSource = opts.DiskGBps*1e9, "--disk-gbps"
	} else {
		readSize := model.MeanExpertBytes()
		if readSize == 0 {
			readSize = 4 << 20
		}
		bps, err := plan.ProbeDisk(ctx, path, plan.ProbeOptions{ReadSize: readSize, Duration: 400 * time.Millisecond, MaxBytes: 2 << 30, Readers: 2})
		switch {
		case err == nil:
			po.DiskBytesPerSec, po.DiskSource = bps, fmt.Sprintf("measured: direct reads of %s", bytesize.Format(readSize))
		case errors.Is(err, context.Canceled):
			return err
		default:
			po.DiskBytesPerSec = plan.DefaultDiskBytesPerSec
			po.DiskSource = fmt.Sprintf("default; could not measure: %v", err)
		}
	}
	p, err := plan.Make(model, po)
	if err != nil {
		return usagef("%v", err)
	}
	report := plan.Report{Model: model, Plan: p}
	var spread *rpcMemoryPlan
	if workers, err := opts.rpc.parse(); err != nil {
		return err
	} else if workers != nil {
		if spread, err = planRPCMemory(ctx, workers, model, p); err != nil {
			return err
		}
	}
	if opts.JSON {
		enc := json.NewEncoder(streams.Out)
		enc.SetIndent("", "  ")
		if spread != nil {
			return enc.Encode(struct {
				plan.Report
				RPC *rpcMemoryPlan `json:"rpc"`
			}{report, spread})
		}
		return enc.Encode(report)
	}
	if err := report.WriteText(streams.Out); err != nil {
		return err
	}
	if spread != nil {
		spread.writeText(streams.Out)
	}
	return nil
}

// interspersedArgs lets flags follow the positional arguments (`agent inspect MODEL --ram 8GiB`), as
// users type them: urfave/cli stops parsing flags at the first argument, so the rest is parsed here
// into the same destinations, keeping the values of flags given before the arguments.
func interspersedArgs(c *cli.Context) ([]string, error) {
	rest := c.Args().Slice()
	if len(rest) <= 1 {
		return rest, nil
	}
	given := map[string]string{}
	for _, f := range c.Command.Flags {
		name := f.Names()[0]
		if c.IsSet(name) {
			given[name] = fmt.Sprint(c.Value(name))
		}
	}
	fs := flag.NewFlagSet(c.Command.Name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	for _, f := range c.Command.Flags {
		if err := f.Apply(fs); err != nil { // Apply resets each destination to its default...
			return nil, err
		}
	}
	for name, v := range given { // ...so restore what was given before the arguments.
		if err := fs.Set(name, v); err != nil {
			return nil, usagef("--%s: %v", name, err)
		}
	}
	var positional []string
	for len(rest) > 0 {
		if err := fs.Parse(rest); err != nil {
			return nil, usagef("%v", err)
		}
		rest = fs.Args()
		if len(rest) > 0 {
			positional = append(positional, rest[0])
			rest = rest[1:]
		}
	}
	return positional, nil
}
