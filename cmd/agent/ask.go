package main

import (
	"fmt"
	"io"
	"strings"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/expertsniper/expertsniper/engine"
	"github.com/expertsniper/expertsniper/repl"
)

func init() { register(askCommand) }

type askOptions struct {
	replOptions
	Doc          string
	NotesTokens  int
	AnswerTokens int
}

func askCommand(streams *IOStreams) *cli.Command {
	opts := &askOptions{}
	return &cli.Command{
		Name:      "ask",
		Usage:     "answer one question, optionally about a document longer than the context (--doc)",
		ArgsUsage: "QUESTION",
		Description: "With --doc FILE (or --doc - for stdin) the document is read in pages that fit the context,\n" +
			"the model takes notes on each page that bear on the question, then answers from the notes.",
		Flags: append(opts.flags(false),
			&cli.StringFlag{Name: "doc", Usage: "document `FILE` to answer about (- = stdin)", EnvVars: env("DOC"), Destination: &opts.Doc},
			&cli.IntFlag{Name: "notes-tokens", Value: 256, Usage: "most tokens of notes per page", EnvVars: env("NOTES_TOKENS"), Destination: &opts.NotesTokens},
		),
		Action: func(c *cli.Context) error {
			question := strings.TrimSpace(strings.Join(c.Args().Slice(), " "))
			if question == "" {
				return usagef("ask needs a QUESTION")
			}
			if opts.NotesTokens < 1 {
				return usagef("--notes-tokens must be at least 1, got %d", opts.NotesTokens)
			}
			return askRun(c, streams, opts, question)
		},
	}
}

func askRun(c *cli.Context, streams *IOStreams, o *askOptions, question string) error {
	cfg, model, _, err := o.settings(c)
	if err != nil {
		return err
	}
	var doc string
	if o.Doc != "" {
		if doc, err = readDocument(streams.In, o.Doc); err != nil {
			return err
		}
	}
	eng, err := modelOpener(streams.ErrOut)(c.Context, model)
	if err != nil {
		return fmt.Errorf("load model %q: %w", model.Name, err)
	}
	defer eng.Close()

	sampling := engine.Sampling{Temperature: cfg.Temperature, Seed: cfg.Seed}
	token := func(s string) error { _, err := io.WriteString(streams.Out, s); return err }
	start := time.Now()
	if o.Doc == "" {
		prompt, err := eng.ApplyTemplate(systemAnd(cfg.System, question), true)
		if err != nil {
			return fmt.Errorf("apply the chat template: %w", err)
		}
		res, err := eng.Complete(c.Context, engine.Request{Prompt: prompt, MaxTokens: cfg.MaxTokens, Sampling: sampling},
			func(t engine.Token) error { return token(t.Text) })
		fmt.Fprintln(streams.Out)
		if err != nil {
			return err
		}
		fmt.Fprintf(streams.ErrOut, "%d tokens, %.1f tok/s, %.1fs\n", res.Timings.PredictedTokens,
			res.Timings.PredictedPerSecond, time.Since(start).Seconds())
		return nil
	}
	return answerDocument(c.Context, eng, question, doc, repl.DocOptions{
		NotesTokens: o.NotesTokens, AnswerTokens: cfg.MaxTokens, Sampling: sampling}, streams.Out, streams.ErrOut)
}

func systemAnd(system, question string) []engine.Message {
	var msgs []engine.Message
	if system != "" {
		msgs = append(msgs, engine.Message{Role: "system", Content: system})
	}
	return append(msgs, engine.Message{Role: "user", Content: question})
}
