package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/fatih/color"
	"github.com/urfave/cli/v2"

	"github.com/expertsniper/expertsniper/gguf"
	"github.com/expertsniper/expertsniper/modelgen"
)

func init() { register(demoCommand) }

// demoShape is a small MoE model: big enough that a small expert cache matters (192 experts of
// ~300 KiB), small enough to generate in seconds. Its router is skewed, as real routers are, so the
// cache has something to find.
func demoShape() (modelgen.Shape, error) {
	s, err := modelgen.Tiny(modelgen.ArchQwen3MoE)
	if err != nil {
		return s, err
	}
	s.Name, s.Layers, s.Experts, s.ExpertsUsed, s.ExpertFF = "demo", 6, 32, 4, 384
	return s, nil
}

const (
	demoPrompt = "Mixture-of-Experts models only use a few experts per token, so"
	demoCache  = "16MiB"
)

type demoOptions struct {
	Dir     string
	Tokens  int
	Threads int
	Cache   string
}

func demoCommand(streams *IOStreams) *cli.Command {
	o := &demoOptions{}
	return &cli.Command{
		Name:  "demo",
		Usage: "generate a small MoE model (once) and run it with the expert sniper, checked against the in-RAM run",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "dir", Usage: "where the demo model is kept (default: the user cache directory)", Destination: &o.Dir},
			&cli.IntFlag{Name: "n", Value: 32, Usage: "tokens to generate", Destination: &o.Tokens},
			&cli.IntFlag{Name: "threads", Aliases: []string{"t"}, Value: runtime.NumCPU(), Destination: &o.Threads},
			&cli.StringFlag{Name: "cache", Value: demoCache, Usage: "expert cache size", Destination: &o.Cache},
		},
		Action: func(c *cli.Context) error { return demoRun(c.Context, streams, o) },
	}
}

// demoModel returns the demo model's path, generating it the first time.
func demoModel(ctx context.Context, streams *IOStreams, dir string) (string, error) {
	if dir == "" {
		cache, err := os.UserCacheDir()
		if err != nil {
			return "", fmt.Errorf("find a directory for the demo model: %w (pass --dir)", err)
		}
		dir = filepath.Join(cache, "expertsniper", "demo")
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("demo model directory: %w", err)
	}
	path := filepath.Join(dir, "demo-qwen3moe-q8_0.v1.gguf")
	if _, err := os.Stat(path); err == nil {
		return path, nil
	}
	shape, err := demoShape()
	if err != nil {
		return "", err
	}
	fmt.Fprintf(streams.ErrOut, "generating the demo model (once): %s, %d layers × %d experts (%d used per token), Q8_0, random weights\n",
		shape.Arch, shape.Layers, shape.Experts, shape.ExpertsUsed)
	tmp := fmt.Sprintf("%s.tmp%d", path, os.Getpid())
	if err := modelgen.Write(ctx, tmp, modelgen.Options{Shape: shape, Type: gguf.TypeQ8_0, Seed: 7, RandomQuants: true, RouterSkew: 3}); err != nil {
		os.Remove(tmp)
		return "", fmt.Errorf("generate the demo model: %w", err)
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return "", fmt.Errorf("generate the demo model: %w", err)
	}
	return path, nil
}

func demoRun(ctx context.Context, streams *IOStreams, o *demoOptions) error {
	model, err := demoModel(ctx, streams, o.Dir)
	if err != nil {
		return err
	}
	work, err := os.MkdirTemp("", "agent-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(work)
	bold := color.New(color.Bold).SprintFunc()
	green := color.New(color.FgGreen, color.Bold).SprintFunc()
	red := color.New(color.FgRed, color.Bold).SprintFunc()
	dim := color.New(color.Faint).SprintFunc()

	st, _ := os.Stat(model)
	fmt.Fprintf(streams.Out, "%s\n", bold("expertsniper demo: a Mixture-of-Experts model whose experts are read from disk as the router picks them"))
	fmt.Fprintf(streams.Out, "  model   %s (%s)\n", model, sizeString(st.Size()))
	fmt.Fprintf(streams.Out, "  prompt  %q\n\n", demoPrompt)

	type outcome struct {
		text   string
		stats  runStats
		logits []byte
	}
	run := func(mode, cache string, noRepack bool) (outcome, error) {
		var out, errOut bytes.Buffer
		ro := runOptions{Model: model, Prompt: demoPrompt, PromptSet: true, Tokens: o.Tokens, Mode: mode, Cache: cache, NoRepack: noRepack,
			Threads: o.Threads, Prefetch: true, Quiet: true,
			LogitsOut: filepath.Join(work, mode+".logits"), StatsJSON: filepath.Join(work, mode+".json")}
		if err := runRun(ctx, &IOStreams{In: strings.NewReader(""), Out: &out, ErrOut: &errOut}, &ro); err != nil {
			return outcome{}, fmt.Errorf("%s run: %w", mode, err)
		}
		var oc outcome
		oc.text = strings.TrimSpace(out.String())
		b, err := os.ReadFile(ro.StatsJSON)
		if err != nil {
			return oc, err
		}
		if err := json.Unmarshal(b, &oc.stats); err != nil {
			return oc, err
		}
		oc.logits, err = os.ReadFile(ro.LogitsOut)
		return oc, err
	}

	sn, err := run("sniper", o.Cache, false)
	if err != nil {
		return err
	}
	s := sn.stats
	fmt.Fprintf(streams.Out, "%s %s\n", bold("sniper mode"), dim(fmt.Sprintf("(expert cache %s; the other weights, %s, stay in RAM)", o.Cache, sizeString(s.PinnedBytes))))
	fmt.Fprintf(streams.Out, "  %s\n", sn.text)
	fmt.Fprintf(streams.Out, "  %s\n\n", dim("(random weights: the words mean nothing; what matters is that they are exactly the in-RAM model's)"))
	fmt.Fprintf(streams.Out, "  speed      prompt %d tokens at %.0f tok/s, generated %d at %.1f tok/s\n", s.PromptTokens, s.PromptPerSec, s.GeneratedTokens, s.DecodePerSec)
	fmt.Fprintf(streams.Out, "  experts    %s streamed in all; read %s per generated token (%d reads, p50 %d µs, p99 %d µs)\n",
		sizeString(s.StreamedBytes), sizeString(int64(s.DecodeBytesPerTk)), s.Reads, s.ReadP50Micros, s.ReadP99Micros)
	fmt.Fprintf(streams.Out, "  cache      hit rate %.1f%% (%d hits, %d misses), at most %s held\n", 100*s.HitRate, s.Hits, s.Misses, sizeString(s.PeakCacheBytes))
	fmt.Fprintf(streams.Out, "  memory     RSS %s\n\n", sizeString(s.RSSBytes))

	// The reference computes with the kernels the sniper run used: a cache too small for every
	// expert keeps the file's layout (engine/local.Decision.Repack).
	ram, err := run("ram", "", sn.stats.RepackedTensors == 0)
	if err != nil {
		return err
	}
	positions := len(sn.logits) / 4
	if len(ram.logits) > 0 && bytes.Equal(ram.logits, sn.logits) && ram.text == sn.text {
		fmt.Fprintf(streams.Out, "%s the logits of all %d evaluated positions are bit-for-bit those of the in-RAM run (%s vocabulary floats)\n",
			green("✓ exact:"), s.PromptTokens+max(s.GeneratedTokens-1, 0), fmt.Sprint(positions))
	} else {
		fmt.Fprintf(streams.Out, "%s sniper and in-RAM runs differ\n", red("✗ mismatch:"))
		return fmt.Errorf("demo: the sniper's logits differ from the in-RAM run's")
	}
	fmt.Fprintf(streams.Out, "\nnext: %s\n", dim("./bin/agent run -m YOUR-MODEL.gguf -p \"...\" --mode sniper --ram 8GiB --stats"))
	return nil
}
