package repl

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/fatih/color"

	"github.com/expertsniper/expertsniper/agentmode"
	"github.com/expertsniper/expertsniper/engine"
	"github.com/expertsniper/expertsniper/remote"
	"github.com/expertsniper/expertsniper/tools"
	"github.com/expertsniper/expertsniper/websearch"
)

// Opener loads a model. The REPL calls it at start and on /model, after closing the previous engine.
type Opener func(ctx context.Context, m ModelConfig) (engine.Engine, error)

// Options configure a REPL. In/Out/ErrOut and Open are required.
type Options struct {
	In          io.Reader
	Out, ErrOut io.Writer
	// Lines reads input; nil means plain lines from In (no editing).
	Lines  LineReader
	Config Config
	Dirs   Dirs
	// Model is loaded first.
	Model ModelConfig
	Open  Opener
	// Searcher serves search requests; nil disables web search (agent mode says so when asked).
	Searcher websearch.Searcher
	// Workdir is where file tools and shell commands work ("" = the current directory).
	Workdir string
	// Interrupts delivers Ctrl-C (SIGINT) while a model call runs; each one cancels the running call.
	Interrupts <-chan os.Signal
	// Remote is where /push and /pull move saved conversations (--remote); nil when none is set.
	Remote *remote.Remote
	// KVShape reads a model's KV cache shape for the memory report; nil means ReadKVShape.
	KVShape func(path string) (KVShape, error)
}

// REPL is one interactive session.
type REPL struct {
	opts     Options
	out, err io.Writer
	lines    LineReader
	cfg      Config

	eng   engine.Engine
	model ModelConfig
	agent *agentmode.Agent
	ws    *tools.Workspace
	mode  string // "agent" or "raw"

	history []engine.Message
	last    *lastTurn
	totals  Totals

	sessions   SessionStore
	gradesPath string
}

type lastTurn struct {
	request string
	reply   agentmode.Reply
}

var (
	dim    = color.New(color.Faint).SprintFunc()
	accent = color.New(color.FgCyan, color.Bold).SprintFunc()
	warn   = color.New(color.FgYellow).SprintFunc()
	failed = color.New(color.FgRed).SprintFunc()
)

// New loads the first model and prepares a session; Close releases it.
func New(ctx context.Context, opts Options) (*REPL, error) {
	if opts.Open == nil || opts.Out == nil || opts.ErrOut == nil {
		return nil, errors.New("repl: Open, Out and ErrOut are required")
	}
	r := &REPL{opts: opts, out: opts.Out, err: opts.ErrOut, lines: opts.Lines, cfg: opts.Config}
	if r.lines == nil {
		in := opts.In
		if in == nil {
			in = strings.NewReader("")
		}
		r.lines = NewPlainReader(in, nil)
	}
	r.mode = r.cfg.Mode
	if r.mode == "" {
		r.mode = "agent"
	}
	r.sessions = SessionStore{Dir: filepath.Join(opts.Dirs.Data, "sessions")}
	r.gradesPath = filepath.Join(opts.Dirs.Config, "grades.jsonl")
	wd := opts.Workdir
	if wd == "" {
		wd = "."
	}
	ws, err := tools.OpenWorkspace(wd, tools.ConfirmFunc(r.confirm))
	if err != nil {
		return nil, err
	}
	r.ws = ws
	r.agent = &agentmode.Agent{
		Searcher:      opts.Searcher,
		Files:         ws,
		System:        r.cfg.System,
		MaxTokens:     r.cfg.MaxTokens,
		Sampling:      engine.Sampling{Temperature: r.cfg.Temperature, Seed: r.cfg.Seed},
		SearchResults: r.cfg.Search.Results,
	}
	if !r.cfg.Shell.Disabled {
		r.agent.Shell = &tools.Shell{
			Dir:       ws.Dir(),
			Confirm:   tools.ConfirmFunc(r.confirm),
			Timeout:   time.Duration(r.cfg.Shell.TimeoutSeconds) * time.Second,
			MaxOutput: r.cfg.Shell.MaxOutputBytes,
		}
	}
	if err := r.load(ctx, opts.Model); err != nil {
		ws.Close()
		return nil, err
	}
	return r, nil
}

// Close releases the model and the workspace.
func (r *REPL) Close() error {
	var errs []error
	if r.eng != nil {
		errs = append(errs, r.eng.Close())
		r.eng = nil
	}
	errs = append(errs, r.ws.Close(), r.lines.Close())
	return errors.Join(errs...)
}

// readRequest reads the next request, giving up when ctx ends (SIGTERM while the REPL waits at the
// prompt): the read goes on in a goroutine, which Close or the end of the process finishes.
func (r *REPL) readRequest(ctx context.Context) (string, error) {
	type read struct {
		input string
		err   error
	}
	done := make(chan read, 1)
	go func() {
		input, err := readInput(r.lines, r.prompt(), dim("... "))
		done <- read{input, err}
	}()
	select {
	case <-ctx.Done():
		return "", ctx.Err()
	case got := <-done:
		return got.input, got.err
	}
}

// Run reads and answers until /quit or end of input (Ctrl-D).
func (r *REPL) Run(ctx context.Context) error {
	fmt.Fprintln(r.err, dim("Type a question, / for commands, Ctrl-C stops an answer, Ctrl-D quits."))
	for {
		if err := ctx.Err(); err != nil {
			return err
		}
		input, err := r.readRequest(ctx)
		switch {
		case errors.Is(err, io.EOF):
			fmt.Fprintln(r.err, dim("bye"))
			return nil
		case errors.Is(err, ErrInterrupted):
			continue // Ctrl-C at the prompt drops the line, as in a shell
		case err != nil && ctx.Err() != nil:
			return ctx.Err()
		case err != nil:
			return fmt.Errorf("read input: %w", err)
		}
		input = strings.TrimSpace(input)
		if input == "" {
			continue
		}
		if strings.HasPrefix(input, "/") {
			quit, err := r.command(ctx, input)
			if err != nil {
				r.reportError(err)
			}
			if quit {
				return nil
			}
			continue
		}
		if err := r.ask(ctx, input); err != nil {
			r.reportError(err)
		}
	}
}

func (r *REPL) prompt() string {
	name := strings.TrimSuffix(r.model.Name, ".gguf")
	return accent(r.mode) + dim("@"+name) + accent("> ")
}

func (r *REPL) reportError(err error) {
	if errors.Is(err, context.Canceled) {
		fmt.Fprintln(r.err, warn("stopped"))
		return
	}
	fmt.Fprintf(r.err, "%s %v\n", failed("error:"), err)
}

// confirm asks a y/N question on the REPL's input. Only y or yes is a yes.
func (r *REPL) confirm(ctx context.Context, question string) (bool, error) {
	if err := ctx.Err(); err != nil {
		return false, err
	}
	prompt := warn(question) + " [y/N] "
	if p, ok := r.lines.(*plainReader); ok && p.out == nil {
		// Piped input shows no prompts, but a question must always be seen before it is answered.
		fmt.Fprintln(r.err, prompt)
		prompt = ""
	}
	answer, err := r.lines.ReadLine(prompt)
	if err != nil {
		if errors.Is(err, ErrInterrupted) || errors.Is(err, io.EOF) {
			return false, nil
		}
		return false, err
	}
	switch strings.ToLower(strings.TrimSpace(answer)) {
	case "y", "yes":
		return true, nil
	}
	return false, nil
}

// op runs fn with a context that Ctrl-C cancels: the call stops, the REPL goes on.
func (r *REPL) op(ctx context.Context, fn func(ctx context.Context) error) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if r.opts.Interrupts != nil {
	drain: // a Ctrl-C pressed before this call started is not meant for it
		for {
			select {
			case <-r.opts.Interrupts:
			default:
				break drain
			}
		}
		var wg sync.WaitGroup
		done := make(chan struct{})
		wg.Add(1)
		go func() {
			defer wg.Done()
			select {
			case <-r.opts.Interrupts:
				cancel()
			case <-done:
			}
		}()
		defer wg.Wait()
		defer close(done)
	}
	return fn(ctx)
}

// load opens m, replacing the current model. If m fails to load, the previous model is loaded again.
func (r *REPL) load(ctx context.Context, m ModelConfig) error {
	if strings.TrimSpace(m.Path) == "" {
		return errors.New("no model: give one with -m PATH (or a name from config.json)")
	}
	prev := r.model
	if r.eng != nil {
		// Two big models rarely fit at once on a 16 GB machine: free the old one first.
		r.eng.Close()
		r.eng = nil
	}
	fmt.Fprintf(r.err, "%s %s %s\n", dim("loading"), m.Name, dim("("+m.Path+")"))
	start := time.Now()
	var eng engine.Engine
	err := r.op(ctx, func(ctx context.Context) error {
		var err error
		eng, err = r.opts.Open(ctx, m)
		return err
	})
	if err != nil {
		err = fmt.Errorf("load model %q: %w", m.Name, err)
		if prev.Path != "" && prev.Path != m.Path {
			fmt.Fprintf(r.err, "%s %v\n%s %s\n", failed("error:"), err, dim("going back to"), prev.Name)
			if perr := r.load(ctx, prev); perr != nil {
				return errors.Join(err, perr)
			}
			return nil
		}
		return err
	}
	r.eng, r.model = eng, m
	r.agent.Engine = eng
	info := eng.Info()
	r.agent.Slot = 0
	fmt.Fprintf(r.err, "%s %s · %s · %s mode · context %d · loaded in %.1fs\n", accent("model"), info.Name,
		info.Architecture, info.Mode, info.Context, time.Since(start).Seconds())
	if kv := r.kvReport(); kv != "" {
		fmt.Fprintln(r.err, dim(kv))
	}
	return nil
}

func (r *REPL) kvReport() string {
	shapeOf := r.opts.KVShape
	if shapeOf == nil {
		shapeOf = ReadKVShape
	}
	shape, err := shapeOf(r.model.Path)
	if err != nil {
		return ""
	}
	msg, err := KVReport(shape, r.eng.Info().Context, r.model.CacheTypeK, r.model.CacheTypeV)
	if err != nil {
		return ""
	}
	return msg
}

// attachment matches @path words; the file's content is appended to the request.
var attachment = regexp.MustCompile(`(?:^|\s)@([^\s]+)`)

func (r *REPL) expandAttachments(input string) (string, error) {
	matches := attachment.FindAllStringSubmatch(input, -1)
	if len(matches) == 0 {
		return input, nil
	}
	var b strings.Builder
	b.WriteString(input)
	for _, m := range matches {
		content, truncated, err := r.ws.ReadFile(m[1])
		if err != nil {
			return "", fmt.Errorf("attach @%s: %w", m[1], err)
		}
		note := ""
		if truncated {
			note = " (truncated)"
		}
		fmt.Fprintf(r.err, "%s %s, %d bytes%s\n", dim("attached"), m[1], len(content), note)
		fmt.Fprintf(&b, "\n\nContents of %s%s:\n```\n%s\n```", m[1], note, content)
	}
	return b.String(), nil
}

// fitHistory drops the oldest turns until the conversation plus the request leaves room for an answer.
func (r *REPL) fitHistory(request string) {
	nCtx := r.eng.Info().Context
	room := r.cfg.MaxTokens
	if room <= 0 || room > nCtx/2 {
		room = nCtx / 4
	}
	for len(r.history) > 0 {
		msgs := append(append([]engine.Message{{Role: "system", Content: r.cfg.System}}, r.history...),
			engine.Message{Role: "user", Content: request})
		prompt, err := r.eng.ApplyTemplate(msgs, true)
		if err != nil {
			return
		}
		toks, err := r.eng.Tokenize(prompt, true, true)
		if err != nil || len(toks)+room <= nCtx {
			return
		}
		drop := 2 // a user message and its answer
		if len(r.history) < drop {
			drop = len(r.history)
		}
		r.history = r.history[drop:]
		fmt.Fprintln(r.err, dim("(the oldest turn was dropped to fit the context)"))
	}
}

// ask answers one request in the current mode and prints the status line.
func (r *REPL) ask(ctx context.Context, input string) error {
	request, err := r.expandAttachments(input)
	if err != nil {
		return err
	}
	return r.turn(ctx, input, request, func(ctx context.Context, h agentmode.Hooks) (agentmode.Reply, error) {
		if r.mode == "raw" {
			return r.agent.Chat(ctx, r.history, request, h)
		}
		return r.agent.Respond(ctx, r.history, request, h)
	})
}

// turn runs one answer (fn), streams it, keeps it in the conversation and prints the status line.
func (r *REPL) turn(ctx context.Context, input, request string, fn func(context.Context, agentmode.Hooks) (agentmode.Reply, error)) error {
	r.fitHistory(request)
	before := r.eng.Stats()
	start := time.Now()
	var streamed strings.Builder
	hooks := agentmode.Hooks{
		Route:  func(rt agentmode.Route) { fmt.Fprintf(r.err, "%s\n", accent("["+string(rt)+"]")) },
		Status: func(s string) { fmt.Fprintf(r.err, "%s\n", dim("  · "+s)) },
		Token: func(s string) error {
			streamed.WriteString(s)
			_, err := io.WriteString(r.out, s)
			return err
		},
	}
	var reply agentmode.Reply
	err := r.op(ctx, func(ctx context.Context) error {
		var err error
		reply, err = fn(ctx, hooks)
		return err
	})
	if s := streamed.String(); s != "" && !strings.HasSuffix(s, "\n") {
		fmt.Fprintln(r.out)
	}
	if len(reply.Results) > 0 {
		fmt.Fprintln(r.err, dim("Sources:"))
		for i, res := range reply.Results {
			fmt.Fprintf(r.err, "%s %s %s\n", dim(fmt.Sprintf("  [%d]", i+1)), res.Title, dim(res.URL))
		}
	}
	r.totals.Add(reply.Usage)
	stopped := errors.Is(err, context.Canceled) && ctx.Err() == nil
	if err != nil && !stopped {
		return err
	}
	if reply.Text != "" {
		r.history = append(r.history,
			engine.Message{Role: "user", Content: request},
			engine.Message{Role: "assistant", Content: reply.Text})
		r.last = &lastTurn{request: input, reply: reply}
	}
	fmt.Fprintln(r.err, statusLine(reply, time.Since(start), before, r.eng.Stats(), r.eng.Info().Mode, stopped))
	return nil
}
