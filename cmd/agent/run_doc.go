package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"time"

	"github.com/expertsniper/expertsniper/engine"
	"github.com/expertsniper/expertsniper/repl"
)

// runDocument answers the prompt (a question) about o.Doc, a document that may be longer than the
// context: repl.AnswerDocument reads it in pages, takes notes, and answers from the notes. The model is
// opened the way the REPL opens it (mode, budget, cache and threads from run's flags).
func runDocument(ctx context.Context, streams *IOStreams, o *runOptions, question string) error {
	var data []byte
	var err error
	if o.Doc == "-" {
		data, err = io.ReadAll(streams.In)
	} else {
		data, err = os.ReadFile(o.Doc)
	}
	if err != nil {
		return fmt.Errorf("read the document %q: %w", o.Doc, err)
	}
	eng, err := modelOpener(streams.ErrOut)(ctx, repl.ModelConfig{Name: filepath.Base(o.Model), Path: o.Model,
		Mode: o.Mode, RAM: o.RAM, Cache: o.Cache, Threads: o.Threads, Context: o.DocCtx})
	if err != nil {
		return fmt.Errorf("load model %q: %w", o.Model, err)
	}
	defer eng.Close()
	start := time.Now()
	ans, err := repl.AnswerDocument(ctx, eng, question, string(data), repl.DocOptions{
		AnswerTokens: o.Tokens,
		// Notes per page: a sixteenth of a small context, so that a page keeps most of the room.
		NotesTokens: notesTokensFor(o.DocCtx),
		Sampling:    engine.Sampling{Temperature: float32(o.Temp), Seed: uint32(o.Seed)},
		Token:       func(s string) error { _, err := io.WriteString(streams.Out, s); return err },
		Progress: func(round, page, pages int) {
			if !o.Quiet {
				fmt.Fprintf(streams.ErrOut, "reading page %d of %d (pass %d)\n", page, pages, round)
			}
		},
	})
	fmt.Fprintln(streams.Out)
	if err != nil {
		return err
	}
	if !o.Quiet {
		fmt.Fprintf(streams.ErrOut, "%d pages, %d model calls, %d prompt tokens, %d generated, %.1fs\n", ans.Pages,
			ans.Usage.Calls, ans.Usage.PromptTokens, ans.Usage.GeneratedTokens, time.Since(start).Seconds())
	}
	return nil
}

// notesTokensFor bounds the notes taken per page for a context of ctx tokens (0: repl's default).
func notesTokensFor(ctx int) int {
	if ctx <= 0 || ctx >= 4096 {
		return 0
	}
	return max(8, ctx/16)
}
