package main

import (
	"context"
	"fmt"
	"io"
	"os"
	"time"

	"github.com/expertsniper/expertsniper/engine"
	"github.com/expertsniper/expertsniper/engine/local"
	"github.com/expertsniper/expertsniper/repl"
)

// runDocument answers the prompt (a question) about o.Doc, a document that may be longer than the
// context. The engine gets every one of run's engine flags, as a plain run does.
func runDocument(ctx context.Context, streams *IOStreams, o *runOptions, question string) error {
	doc, err := readDocument(streams.In, o.Doc)
	if err != nil {
		return err
	}
	if err := o.engineOptions(o.DocCtx, nil).Validate(); err != nil {
		return err
	}
	eng, err := local.Open(ctx, o.Model, o.engineOptions(o.DocCtx, reportDecision(streams.ErrOut, o.Quiet)))
	if err != nil {
		return fmt.Errorf("load model %q: %w", o.Model, err)
	}
	defer eng.Close()
	status := streams.ErrOut
	if o.Quiet {
		status = io.Discard
	}
	return answerDocument(ctx, eng, question, doc, repl.DocOptions{
		AnswerTokens: o.Tokens,
		// Notes per page: a sixteenth of a small context, so that a page keeps most of the room.
		NotesTokens: notesTokensFor(o.DocCtx),
		Sampling:    engine.Sampling{Temperature: float32(o.Temp), Seed: uint32(o.Seed)},
	}, streams.Out, status)
}

// readDocument reads the document named by a --doc flag ("-" is in).
func readDocument(in io.Reader, name string) (string, error) {
	var data []byte
	var err error
	if name == "-" {
		data, err = io.ReadAll(in)
	} else {
		data, err = os.ReadFile(name)
	}
	if err != nil {
		return "", fmt.Errorf("read the document %q: %w", name, err)
	}
	return string(data), nil
}

// answerDocument runs repl.AnswerDocument (pages, notes, an answer from the notes), streaming the
// answer to out and progress and a closing summary to status. It is what `run --doc` and `ask --doc`
// share.
func answerDocument(ctx context.Context, eng engine.Engine, question, doc string, opts repl.DocOptions, out, status io.Writer) error {
	start := time.Now()
	opts.Token = func(s string) error { _, err := io.WriteString(out, s); return err }
	opts.Progress = func(round, page, pages int) {
		if round > 1 {
			fmt.Fprintf(status, "condensing notes (pass %d): part %d of %d\n", round, page, pages)
			return
		}
		fmt.Fprintf(status, "reading page %d of %d\n", page, pages)
	}
	ans, err := repl.AnswerDocument(ctx, eng, question, doc, opts)
	fmt.Fprintln(out)
	if err != nil {
		return err
	}
	fmt.Fprintf(status, "%d pages, %d model calls, %d prompt tokens, %d generated, %.1fs\n", ans.Pages,
		ans.Usage.Calls, ans.Usage.PromptTokens, ans.Usage.GeneratedTokens, time.Since(start).Seconds())
	return nil
}

// notesTokensFor bounds the notes taken per page for a context of ctx tokens (0: repl's default).
func notesTokensFor(ctx int) int {
	if ctx <= 0 || ctx >= 4096 {
		return 0
	}
	return max(8, ctx/16)
}
