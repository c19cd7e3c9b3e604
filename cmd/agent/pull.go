package main

import (
	"context"
	"fmt"
	"path/filepath"
	"time"

	"github.com/mattn/go-isatty"
	"github.com/urfave/cli/v2"

	"github.com/expertsniper/expertsniper/hub"
)

func init() { register(pullCommand) }

type pullOptions struct {
	Ref       string
	Dir       string
	KeepSplit bool
}

func pullCommand(streams *IOStreams) *cli.Command {
	opts := &pullOptions{}
	return &cli.Command{
		Name:      "pull",
		Usage:     "download a GGUF model from Hugging Face into the models directory",
		ArgsUsage: "OWNER/REPO[:QUANT|FILE]",
		Description: "Examples: agent pull unsloth/Qwen3.5-35B-A3B-GGUF:Q4_K_M\n" +
			"          agent pull Qwen/Qwen3-30B-A3B-GGUF:Qwen3-30B-A3B-Q8_0.gguf\n" +
			"QUANT matches the quantization tag in the file names (any case); split models (-00001-of-0000N)\n" +
			"are downloaded whole and merged into one file. Downloads resume where they stopped, and each file is checked against the\n" +
			"hub's sha256 before it gets its final name. Environment: HF_TOKEN (private or gated repositories),\n" +
			"HF_ENDPOINT (a mirror; default https://huggingface.co), EXPERTSNIPER_MODELS (the models directory).",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "dir", Usage: "models directory (default: $EXPERTSNIPER_MODELS or ~/.local/share/expertsniper/models)", Destination: &opts.Dir},
			&cli.BoolFlag{Name: "keep-split", Usage: "keep a split model as its parts (default: merge them into one file, which sniper and stream modes need)", Destination: &opts.KeepSplit},
		},
		Action: func(c *cli.Context) error {
			args, err := interspersedArgs(c)
			if err != nil {
				return err
			}
			if len(args) != 1 {
				return usagef("pull takes one OWNER/REPO[:QUANT|FILE], got %d arguments", len(args))
			}
			opts.Ref = args[0]
			return runPull(c.Context, streams, opts)
		},
	}
}

// errOutIsTTY reports whether status output goes to a terminal (progress bars redraw in place only then).
func errOutIsTTY(streams *IOStreams) bool {
	f, ok := streams.ErrOut.(interface{ Fd() uintptr })
	return ok && (isatty.IsTerminal(f.Fd()) || isatty.IsCygwinTerminal(f.Fd()))
}

func runPull(ctx context.Context, streams *IOStreams, opts *pullOptions) error {
	ref, err := hub.ParseRef(opts.Ref)
	if err != nil {
		return usagef("%v", err)
	}
	dir := opts.Dir
	if dir == "" {
		if dir, err = hub.ModelsDir(); err != nil {
			return err
		}
	}
	client := hub.NewClientFromEnv()
	if err := hub.CheckEndpoint(client.Endpoint); err != nil {
		return err
	}
	client.OnRetry = func(err error, wait time.Duration) {
		fmt.Fprintf(streams.ErrOut, "retrying in %s: %v\n", wait.Round(100*time.Millisecond), err)
	}
	tty := errOutIsTTY(streams)
	fmt.Fprintf(streams.ErrOut, "pulling %s from %s into %s\n", ref, client.Endpoint, dir)
	paths, err := client.Pull(ctx, ref, dir, func() hub.Progress { return hub.NewProgress(streams.ErrOut, tty) })
	if err != nil {
		return fmt.Errorf("pull %s: %w", ref, err)
	}
	if len(paths) > 1 && !opts.KeepSplit {
		merged := hub.MergedPath(paths[0])
		fmt.Fprintf(streams.ErrOut, "merging %d parts into %s\n", len(paths), merged)
		bar := hub.NewTaskProgress(streams.ErrOut, tty, "merged")
		var shown int64
		started := false
		err := hub.MergeSplit(ctx, paths, merged, func(done, total int64) {
			if !started {
				bar.Start(filepath.Base(merged), total, 0)
				started = true
			}
			bar.Add(done - shown)
			shown = done
		})
		if started {
			bar.Done(err)
		}
		if err != nil {
			return fmt.Errorf("pull %s: the parts are downloaded but could not be merged (rerun pull, or use --keep-split): %w", ref, err)
		}
		if err := hub.RemoveParts(paths); err != nil {
			fmt.Fprintf(streams.ErrOut, "warning: could not remove the parts: %v\n", err)
		}
		paths = []string{merged}
	}
	for _, p := range paths {
		fmt.Fprintln(streams.Out, p)
	}
	name := ref.Repo
	if ref.Quant != "" {
		name += ":" + ref.Quant
	} else if ref.File != "" {
		name += ":" + ref.File
	}
	fmt.Fprintf(streams.ErrOut, "ready: agent inspect %s   (then: agent -m %s)\n", name, name)
	return nil
}
