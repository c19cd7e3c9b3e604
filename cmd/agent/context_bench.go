package main

import (
	"context"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/expertsniper/expertsniper/bytesize"
	"github.com/expertsniper/expertsniper/engine"
	"github.com/expertsniper/expertsniper/plan"
	"github.com/expertsniper/expertsniper/remote"
	"github.com/expertsniper/expertsniper/repl"
)

// `agent context bench` measures what a remote costs: the push and pull throughput of a state of
// --size random bytes, and, with -m, "download + load" of a real saved prompt against evaluating that
// prompt again. It works under PREFIX/bench/ and removes what it pushed.

type contextBenchOptions struct {
	Remote string
	Size   string
	Model  string
	Mode   string
	Tokens int
}

func contextBenchCommand(streams *IOStreams) *cli.Command {
	o := &contextBenchOptions{}
	return &cli.Command{
		Name:  "bench",
		Usage: "measure push and pull throughput, and with -m download + load against evaluating the prompt",
		Flags: []cli.Flag{
			remoteFlag(&o.Remote),
			&cli.StringFlag{Name: "size", Value: "1GiB", Usage: "size of the random state pushed and pulled (0: skip)", Destination: &o.Size},
			&cli.StringFlag{Name: "model", Aliases: []string{"m"}, Usage: "GGUF model `FILE` for the download + load comparison", Destination: &o.Model},
			&cli.StringFlag{Name: "mode", Value: "auto", Usage: "auto, ram, sniper or stream (with -m)", Destination: &o.Mode},
			&cli.IntFlag{Name: "tokens", Value: 2048, Usage: "prompt length in tokens (with -m)", Destination: &o.Tokens},
		},
		Action: func(c *cli.Context) error {
			if c.NArg() > 0 {
				return usagef("agent context bench takes no arguments")
			}
			size, err := plan.ParseSize(o.Size)
			if err != nil || size < 0 {
				return usagef("--size: want a size such as 1GiB, got %q", o.Size)
			}
			if o.Tokens < 1 {
				return usagef("--tokens must be at least 1, got %d", o.Tokens)
			}
			rem, err := openRemote(c.Context, o.Remote, "")
			if err != nil {
				return err
			}
			if rem == nil {
				return usagef("%v", remote.ErrNoRemote)
			}
			return runContextBench(c.Context, streams, rem.Sub("bench"), size, o)
		},
	}
}

func runContextBench(ctx context.Context, streams *IOStreams, rem *remote.Remote, size int64, o *contextBenchOptions) error {
	dir, err := os.MkdirTemp("", "expertsniper-context-bench-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)
	say := func(format string, args ...any) { fmt.Fprintf(streams.Out, format+"\n", args...) }
	say("remote %s", rem)

	if size > 0 {
		state := filepath.Join(dir, "random.state")
		if err := writeRandomFile(state, size); err != nil {
			return err
		}
		push, pull, err := pushPull(ctx, rem, dir, "random", state, remote.Model{Name: "random bytes"}, 0)
		if err != nil {
			return err
		}
		os.Remove(state)
		say("state of %s: push %.1f s (%.0f MB/s), pull %.1f s (%.0f MB/s)", bytesize.Format(size),
			push.Seconds(), float64(size)/1e6/push.Seconds(), pull.Seconds(), float64(size)/1e6/pull.Seconds())
	}
	if o.Model == "" {
		return nil
	}

	eng, err := modelOpener(streams.ErrOut)(ctx, repl.ModelConfig{Name: filepath.Base(o.Model), Path: o.Model, Mode: o.Mode, Context: o.Tokens + 256})
	if err != nil {
		return err
	}
	defer eng.Close()
	prompt, err := promptOfTokens(eng, o.Tokens)
	if err != nil {
		return err
	}
	// Evaluating the prompt is what a pulled context saves; Complete reports its time alone.
	res, err := eng.Complete(ctx, engine.Request{Prompt: prompt, MaxTokens: 1, Slot: 0}, func(engine.Token) error { return nil })
	if err != nil {
		return fmt.Errorf("evaluate the prompt: %w", err)
	}
	evaluate := time.Duration(res.Timings.PromptMS * float64(time.Millisecond))
	state := filepath.Join(dir, "prompt.state")
	saved, err := eng.SaveState(ctx, 0, prompt, state) // the slot holds the prompt: this only writes
	if err != nil {
		return err
	}
	info := eng.Info()
	_, pull, err := pushPull(ctx, rem, dir, "prompt", state, remote.Model{Name: info.Name, Fingerprint: info.Fingerprint}, saved.Tokens)
	if err != nil {
		return err
	}
	start := time.Now()
	if _, err := eng.LoadState(ctx, 0, filepath.Join(dir, "pulled.part")); err != nil {
		return err
	}
	load := time.Since(start)
	st, _ := os.Stat(state)
	say("prompt of %d tokens (%s of state, %s mode): evaluate %.2f s; download %.2f s + load %.2f s = %.2f s (%.1f× faster)",
		saved.Tokens, bytesize.Format(st.Size()), info.Mode, evaluate.Seconds(), pull.Seconds(), load.Seconds(), (pull + load).Seconds(),
		evaluate.Seconds()/(pull+load).Seconds())
	return nil
}

// pushPull pushes a state under name, pulls it back into dir/pulled.part and removes it from the
// remote, timing the push and the pull.
func pushPull(ctx context.Context, rem *remote.Remote, dir, name, state string, model remote.Model, tokens int) (push, pull time.Duration, err error) {
	meta := filepath.Join(dir, name+".json")
	data, _ := json.Marshal(map[string]any{"name": name, "bench": true})
	if err := os.WriteFile(meta, data, 0o600); err != nil {
		return 0, 0, err
	}
	start := time.Now()
	if _, err := rem.Push(ctx, remote.Local{Name: name, Model: model, Tokens: tokens, MetaPath: meta, StatePath: state}, nil); err != nil {
		return 0, 0, err
	}
	push = time.Since(start)
	defer rem.Remove(context.WithoutCancel(ctx), name)
	part := filepath.Join(dir, "pulled.part")
	os.Remove(part)
	start = time.Now()
	if _, err := rem.Pull(ctx, name, model, part, nil); err != nil {
		return 0, 0, err
	}
	return push, time.Since(start), nil
}

// writeRandomFile writes size bytes that no transport can compress.
func writeRandomFile(path string, size int64) error {
	f, err := os.OpenFile(path, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return err
	}
	rng := rand.NewChaCha8([32]byte{1})
	buf := make([]byte, 4<<20)
	for left := size; left > 0; {
		n := min(int64(len(buf)), left)
		rng.Read(buf[:n])
		if _, err := f.Write(buf[:n]); err != nil {
			f.Close()
			return err
		}
		left -= n
	}
	return f.Close()
}

// promptOfTokens builds a plain-text prompt of about n tokens of the model's vocabulary.
func promptOfTokens(eng engine.Engine, n int) (string, error) {
	words := strings.Fields("the report covers revenue costs margins regions products customers risks plans and the outlook for next year")
	var b strings.Builder
	for i := 0; ; i++ {
		b.WriteString(words[i%len(words)])
		b.WriteByte(' ')
		if i%64 == 63 {
			toks, err := eng.Tokenize(b.String(), false, false)
			if err != nil {
				return "", err
			}
			if len(toks) >= n {
				return b.String(), nil
			}
		}
	}
}
