package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/expertsniper/expertsniper/bytesize"
	"github.com/expertsniper/expertsniper/diskspace"
	"github.com/expertsniper/expertsniper/gguf"
	"github.com/expertsniper/expertsniper/modelgen"
)

func init() { register(mkmodelCommand) }

type mkmodelOptions struct {
	Arch         string
	Type         string
	Seed         uint64
	Shape        string
	Layers       int
	Experts      int
	ExpertsUsed  int
	Vocab        int
	Output       string
	RandomQuants string // auto, yes, no
	Skew         float64
	Threads      int
	ChatTemplate string
}

func mkmodelCommand(io *IOStreams) *cli.Command {
	opts := &mkmodelOptions{}
	return &cli.Command{
		Name:  "mkmodel",
		Usage: "generate a GGUF model with random weights (tests, demos and benchmarks; no download)",
		Description: "Writes a real model llama.cpp loads, deterministic from --seed. Shapes: tiny (any --arch),\n" +
			"qwen3-30b-a3b, qwen35-35b-a3b and the dense qwen3-32b (published shapes, ~17-20 GB at q4_0, written\n" +
			"with real bytes).\n" +
			"Types f32, f16, q8_0, q4_0 are written directly; others (q4_k_m, q6_k, ...) go through llama-quantize.",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "arch", Usage: "architecture: " + strings.Join(modelgen.Archs, ", ") + " (default: the shape's, or qwen3moe)", Destination: &opts.Arch},
			&cli.StringFlag{Name: "type", Value: "q8_0", Usage: "weight type: f32, f16, q8_0, q4_0, or a llama-quantize type such as q4_k_m", Destination: &opts.Type},
			&cli.Uint64Flag{Name: "seed", Value: 1, Usage: "random seed: the same seed gives identical bytes", Destination: &opts.Seed},
			&cli.StringFlag{Name: "shape", Value: "tiny", Usage: "tiny, " + strings.Join(modelgen.ShapeNames(), ", "), Destination: &opts.Shape},
			&cli.IntFlag{Name: "layers", Usage: "override the number of layers", Destination: &opts.Layers},
			&cli.IntFlag{Name: "experts", Usage: "override the number of experts", Destination: &opts.Experts},
			&cli.IntFlag{Name: "experts-used", Usage: "override the number of experts used per token", Destination: &opts.ExpertsUsed},
			&cli.IntFlag{Name: "vocab", Usage: "pad the vocabulary to N tokens (published shapes default to their real size)", Destination: &opts.Vocab},
			&cli.StringFlag{Name: "output", Aliases: []string{"o"}, Usage: "output `FILE` (required)", Destination: &opts.Output},
			&cli.StringFlag{Name: "random-quants", Value: "auto", Usage: "q4_0/q8_0 as random blocks rather than quantized Gaussians: auto (yes for big shapes), yes, no", Destination: &opts.RandomQuants},
			&cli.Float64Flag{Name: "skew", Usage: "router skew (e.g. 4): a few experts per layer win the top-k much more often", Destination: &opts.Skew},
			&cli.IntFlag{Name: "threads", Usage: "generator goroutines (default: all CPUs)", Destination: &opts.Threads},
			&cli.StringFlag{Name: "chat-template", Value: "chatml", Usage: "the chat template the file carries, a family's real one: " + strings.Join(modelgen.TemplateFamilies(), ", "), Destination: &opts.ChatTemplate},
		},
		Action: func(c *cli.Context) error {
			if c.NArg() > 0 {
				return usagef("mkmodel takes no arguments, got %q", c.Args().Slice())
			}
			return runMkmodel(c.Context, io, opts)
		},
	}
}

func runMkmodel(ctx context.Context, streams *IOStreams, o *mkmodelOptions) error {
	if o.Output == "" {
		return usagef("mkmodel: --output FILE is required")
	}
	shape, err := modelgen.Named(o.Shape, o.Arch)
	if err != nil {
		return usageError{err}
	}
	if o.Layers > 0 {
		shape.Layers = o.Layers
	}
	if o.Experts > 0 {
		shape.Experts = o.Experts
	}
	if o.ExpertsUsed > 0 {
		shape.ExpertsUsed = o.ExpertsUsed
	}
	if o.Vocab > 0 {
		shape.Vocab = o.Vocab
	}
	if o.Layers < 0 || o.Experts < 0 || o.ExpertsUsed < 0 || o.Vocab < 0 || o.Skew < 0 {
		return usagef("mkmodel: --layers, --experts, --experts-used, --vocab and --skew must not be negative")
	}
	if err := shape.Validate(); err != nil {
		return usageError{err}
	}
	big := shape.Name != "tiny"
	var randomQuants bool
	switch strings.ToLower(o.RandomQuants) {
	case "auto":
		randomQuants = big
	case "yes", "true", "1":
		randomQuants = true
	case "no", "false", "0":
	default:
		return usagef("mkmodel: --random-quants must be auto, yes or no, not %q", o.RandomQuants)
	}
	typeName := strings.ToLower(o.Type)
	if err := modelgen.CheckTypeName(typeName); err != nil {
		return usageError{err}
	}
	quantizeTo := ""
	genType := gguf.TypeF32
	if modelgen.IsKQuant(typeName) {
		quantizeTo = typeName
		if big {
			genType = gguf.TypeF16 // halves the intermediate file of a big model
		}
	} else if genType, err = gguf.ParseType(typeName); err != nil {
		return usageError{err}
	}

	if _, err := modelgen.ChatTemplateOf(o.ChatTemplate); err != nil {
		return usageError{err}
	}
	opts := modelgen.Options{Shape: shape, Type: genType, Seed: o.Seed, RandomQuants: randomQuants,
		RouterSkew: o.Skew, Workers: o.Threads, ChatTemplate: o.ChatTemplate}
	if err := checkMkmodelSpace(o.Output, opts, quantizeTo != ""); err != nil {
		return err
	}
	fmt.Fprintf(streams.ErrOut, "generating %s, %s, seed %d\n", shape.Describe(), strings.ToUpper(typeName), o.Seed)
	bar := newMkmodelProgress(streams.ErrOut, streams.IsTTY)
	opts.Progress = bar.update
	start := time.Now()

	target := o.Output
	if quantizeTo != "" {
		target = filepath.Join(filepath.Dir(o.Output), "."+filepath.Base(o.Output)+fmt.Sprintf(".%s-%d.gguf", genType, os.Getpid()))
		defer os.Remove(target)
	}
	err = modelgen.Write(ctx, target, opts)
	bar.finish()
	if err != nil {
		return err
	}
	if quantizeTo != "" {
		fmt.Fprintf(streams.ErrOut, "quantizing to %s with llama-quantize\n", strings.ToUpper(quantizeTo))
		threads := o.Threads
		if threads <= 0 {
			threads = runtime.GOMAXPROCS(0)
		}
		if err := modelgen.Quantize(ctx, target, o.Output, quantizeTo, threads); err != nil {
			return err
		}
	}
	st, err := os.Stat(o.Output)
	if err != nil {
		return fmt.Errorf("mkmodel: %w", err)
	}
	fmt.Fprintf(streams.Out, "%s\t%s\t%.1fs\n", o.Output, bytesize.FormatTenths(st.Size()), time.Since(start).Seconds())
	return nil
}

// mkmodelProgress redraws one line on a terminal; elsewhere it prints a line every few seconds.
type mkmodelProgress struct {
	mu       sync.Mutex
	w        io.Writer
	tty      bool
	start    time.Time
	last     time.Time
	done     int64
	total    int64
	printed  bool
	interval time.Duration
}

func newMkmodelProgress(w io.Writer, tty bool) *mkmodelProgress {
	interval := 5 * time.Second
	if tty {
		interval = 200 * time.Millisecond
	}
	return &mkmodelProgress{w: w, tty: tty, start: time.Now(), interval: interval}
}

func (p *mkmodelProgress) update(done, total int64) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.done, p.total = done, total
	if time.Since(p.last) < p.interval || total < 64<<20 || done == 0 {
		return // small models finish before a bar would help
	}
	p.last = time.Now()
	p.draw()
}

func (p *mkmodelProgress) draw() {
	frac := float64(p.done) / float64(max(p.total, 1))
	elapsed := time.Since(p.start).Seconds()
	rate := float64(p.done) / max(elapsed, 1e-9)
	eta := "?"
	if rate > 0 {
		eta = time.Duration(float64(p.total-p.done) / rate * float64(time.Second)).Round(time.Second).String()
	}
	const width = 30
	filled := int(frac * width)
	bar := strings.Repeat("=", filled) + strings.Repeat(" ", width-filled)
	line := fmt.Sprintf("[%s] %5.1f%% %s/%s %s/s ETA %s", bar, 100*frac, bytesize.FormatTenths(p.done), bytesize.FormatTenths(p.total), bytesize.FormatTenths(int64(rate)), eta)
	if p.tty {
		fmt.Fprintf(p.w, "\r%s\033[K", line)
	} else {
		fmt.Fprintln(p.w, line)
	}
	p.printed = true
}

func (p *mkmodelProgress) finish() {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.printed {
		p.draw()
		if p.tty {
			fmt.Fprintln(p.w)
		}
	}
}

// checkMkmodelSpace refuses a model that cannot fit on the output's disk before writing a byte (a
// mistyped --layers would otherwise start a write of hundreds of GiB). When quantizing, the generated
// intermediate and the quantized file exist at once; the quantized one is counted at Q8_0's size, more
// than any llama-quantize type that needs no importance matrix takes.
func checkMkmodelSpace(output string, opts modelgen.Options, quantize bool) error {
	need, err := modelgen.DataSize(opts)
	if err != nil {
		return usageError{err}
	}
	if quantize {
		q8 := opts
		q8.Type = gguf.TypeQ8_0
		out, err := modelgen.DataSize(q8)
		if err != nil {
			return usageError{err}
		}
		need += out
	}
	return diskspace.Check(filepath.Dir(output), need, "mkmodel: "+filepath.Base(output)+" ("+opts.Shape.Describe()+")")
}
