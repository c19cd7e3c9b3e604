package repl

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/expertsniper/expertsniper/agentmode"
	"github.com/expertsniper/expertsniper/bytesize"
	"github.com/expertsniper/expertsniper/engine"
)

type command struct {
	name, args, help string
	run              func(r *REPL, ctx context.Context, arg string) (quit bool, err error)
}

// commandList is every slash command in the order /help shows them.
func commandList() []command {
	return []command{
		{"agent", "", "agent mode: the model routes each request to search, shell or chat (default)", (*REPL).cmdAgent},
		{"raw", "", "plain chat with the model, no routing and no tools", (*REPL).cmdRaw},
		{"model", "[NAME]", "list the configured models, or switch to NAME (a name from config.json or a .gguf path)", (*REPL).cmdModel},
		{"search", "QUERY", "search the web for QUERY and answer from the results", (*REPL).cmdSearch},
		{"bench", "", "measure prompt and generation speed of the loaded model", (*REPL).cmdBench},
		{"stats", "", "model, memory, disk and cache statistics, and this session's totals", (*REPL).cmdStats},
		{"cost", "", "what this session's tokens would have cost at the configured cloud prices", (*REPL).cmdCost},
		{"good", "[NOTE]", "grade the last answer as good", (*REPL).cmdGood},
		{"bad", "[NOTE]", "grade the last answer as bad", (*REPL).cmdBad},
		{"improve", "", "grading statistics by route, and what to try", (*REPL).cmdImprove},
		{"save", "NAME", "save the conversation and its KV cache", (*REPL).cmdSave},
		{"load", "[NAME]", "list saved conversations, or load NAME", (*REPL).cmdLoad},
		{"push", "NAME", "upload the saved conversation NAME to the remote (--remote)", (*REPL).cmdPush},
		{"pull", "NAME", "download the conversation NAME from the remote; /load NAME then resumes it", (*REPL).cmdPull},
		{"ls-remote", "", "list the conversations in the remote", (*REPL).cmdListRemote},
		{"ls", "[DIR]", "list a directory of the working directory", (*REPL).cmdList},
		{"write", "FILE", "write the last answer to FILE in the working directory (asks first)", (*REPL).cmdWrite},
		{"clear", "", "forget the conversation", (*REPL).cmdClear},
		{"help", "", "this list (also: /); @FILE in a message attaches that file", (*REPL).cmdHelp},
		{"quit", "", "leave (also: Ctrl-D)", (*REPL).cmdQuit},
	}
}

// command runs one slash command line.
func (r *REPL) command(ctx context.Context, line string) (bool, error) {
	name, arg, _ := strings.Cut(strings.TrimPrefix(line, "/"), " ")
	name, arg = strings.ToLower(strings.TrimSpace(name)), strings.TrimSpace(arg)
	if name == "" {
		return r.cmdHelp(ctx, "")
	}
	if name == "exit" || name == "q" {
		name = "quit"
	}
	for _, c := range commandList() {
		if c.name == name {
			return c.run(r, ctx, arg)
		}
	}
	return false, fmt.Errorf("unknown command /%s (type / for the list)", name)
}

func (r *REPL) cmdHelp(context.Context, string) (bool, error) {
	tw := tabwriter.NewWriter(r.err, 0, 4, 2, ' ', 0)
	for _, c := range commandList() {
		fmt.Fprintf(tw, "  %s\t%s\n", accent("/"+c.name)+" "+c.args, c.help)
	}
	tw.Flush()
	fmt.Fprintln(r.err, dim(`  End a line with \ to continue it; """ on its own line starts and ends a block.`))
	return false, nil
}

func (r *REPL) cmdQuit(context.Context, string) (bool, error) { return true, nil }

func (r *REPL) cmdAgent(context.Context, string) (bool, error) {
	r.mode = "agent"
	fmt.Fprintln(r.err, dim("agent mode: the model routes each request (search, shell or chat)"))
	return false, nil
}

func (r *REPL) cmdRaw(context.Context, string) (bool, error) {
	r.mode = "raw"
	fmt.Fprintln(r.err, dim("raw mode: plain chat, no tools"))
	return false, nil
}

func (r *REPL) cmdModel(ctx context.Context, arg string) (bool, error) {
	if arg == "" {
		fmt.Fprintf(r.err, "current: %s %s\n", accent(r.model.Name), dim(r.model.Path))
		names := r.cfg.ModelNames()
		if len(names) == 0 {
			fmt.Fprintln(r.err, dim("no models in config.json; /model PATH.gguf switches to a file"))
			return false, nil
		}
		tw := tabwriter.NewWriter(r.err, 0, 4, 2, ' ', 0)
		for _, n := range names {
			m := r.cfg.Models[n]
			mark := " "
			if n == r.model.Name {
				mark = "*"
			}
			fmt.Fprintf(tw, "%s %s\t%s\t%s\n", mark, n, m.Path, describeModelConfig(m))
		}
		tw.Flush()
		return false, nil
	}
	m, err := r.cfg.ResolveModel(arg)
	if err != nil {
		return false, err
	}
	if m.Name == r.model.Name && m.Path == r.model.Path {
		fmt.Fprintf(r.err, "%s is already loaded\n", m.Name)
		return false, nil
	}
	return false, r.load(ctx, m)
}

func describeModelConfig(m ModelConfig) string {
	var parts []string
	if m.Mode != "" {
		parts = append(parts, "mode "+m.Mode)
	}
	if m.RAM != "" {
		parts = append(parts, "ram "+m.RAM)
	}
	if m.Cache != "" {
		parts = append(parts, "cache "+m.Cache)
	}
	if m.Context > 0 {
		parts = append(parts, fmt.Sprintf("ctx %d", m.Context))
	}
	if m.CacheTypeK != "" || m.CacheTypeV != "" {
		parts = append(parts, "kv "+defaultType(m.CacheTypeK)+"/"+defaultType(m.CacheTypeV))
	}
	return strings.Join(parts, ", ")
}

func (r *REPL) cmdSearch(ctx context.Context, arg string) (bool, error) {
	if arg == "" {
		return false, errors.New("usage: /search QUERY")
	}
	// The answer goes through the same path as any question, with the route fixed to search.
	return false, r.turn(ctx, arg, arg, func(ctx context.Context, h agentmode.Hooks) (agentmode.Reply, error) {
		return r.agent.Search(ctx, r.history, arg, arg, h)
	})
}

func (r *REPL) cmdBench(ctx context.Context, _ string) (bool, error) {
	const promptTokens, genTokens = 128, 64
	// A fresh prefix each time so that the slot's KV cache cannot serve the prompt.
	var b strings.Builder
	fmt.Fprintf(&b, "Benchmark run %d. ", time.Now().UnixNano())
	words := strings.Fields("the quick brown fox jumps over the lazy dog while seven wizards quietly judge boxing matches")
	for i := 0; ; i++ {
		toks, err := r.eng.Tokenize(b.String(), true, false)
		if err != nil {
			return false, fmt.Errorf("bench: tokenize: %w", err)
		}
		if len(toks) >= promptTokens || len(toks) >= r.eng.Info().Context/2 {
			break
		}
		b.WriteString(words[i%len(words)])
		b.WriteByte(' ')
	}
	fmt.Fprintf(r.err, "%s\n", dim(fmt.Sprintf("bench: ~%d prompt tokens, up to %d generated, greedy (Ctrl-C stops)", promptTokens, genTokens)))
	before := r.eng.Stats()
	// The reads up to the first token are the prompt's; the rest are decode's.
	atFirst, first := before, true
	var res engine.Result
	err := r.op(ctx, func(ctx context.Context) error {
		var err error
		res, err = r.eng.Complete(ctx, engine.Request{Prompt: b.String(), MaxTokens: genTokens, Slot: -1},
			func(engine.Token) error {
				if first {
					atFirst, first = r.eng.Stats(), false
				}
				return nil
			})
		return err
	})
	if err != nil {
		return false, fmt.Errorf("bench: %w", err)
	}
	after := r.eng.Stats()
	t := res.Timings
	fmt.Fprintf(r.err, "prefill  %5d tokens  %8.1f tok/s\n", t.PromptTokens, t.PromptPerSecond)
	fmt.Fprintf(r.err, "decode   %5d tokens  %8.1f tok/s\n", t.PredictedTokens, t.PredictedPerSecond)
	if info := r.eng.Info(); info.Mode == "sniper" || info.Mode == "stream" {
		// Each phase's bytes over its own tokens: the prompt's over the prompt tokens, decode's over
		// the tokens decode evaluated (the last generated token is sampled, never evaluated).
		prefillRead, decodeRead := atFirst.BytesRead-before.BytesRead, after.BytesRead-atFirst.BytesRead
		decoded := int64(t.PredictedTokens)
		if res.FinishReason == "length" && decoded > 0 {
			decoded--
		}
		fmt.Fprintf(r.err, "disk     prefill %s read (%s per prompt token), decode %s read", bytesize.FormatTenths(prefillRead),
			bytesize.FormatTenths(prefillRead/max(int64(t.PromptTokens), 1)), bytesize.FormatTenths(decodeRead))
		if decoded > 0 {
			fmt.Fprintf(r.err, " (%s per generated token)", bytesize.FormatTenths(decodeRead/decoded))
		}
		fmt.Fprintln(r.err)
		if parts := streamingParts(before, after, info.Mode); len(parts) > 0 {
			fmt.Fprintln(r.err, dim(strings.Join(parts, " · ")))
		}
	}
	return false, nil
}

func (r *REPL) cmdStats(context.Context, string) (bool, error) {
	fmt.Fprintln(r.err, statsReport(r.eng.Info(), r.eng.Stats(), r.totals, r.kvReport()))
	return false, nil
}

func (r *REPL) cmdCost(context.Context, string) (bool, error) {
	fmt.Fprintln(r.err, r.totals.CostReport(r.cfg.Prices))
	return false, nil
}

func (r *REPL) cmdGood(_ context.Context, note string) (bool, error) {
	return false, r.grade("good", note)
}
func (r *REPL) cmdBad(_ context.Context, note string) (bool, error) {
	return false, r.grade("bad", note)
}

func (r *REPL) grade(grade, note string) error {
	if r.last == nil {
		return errors.New("nothing to grade yet: ask something first")
	}
	g := Grade{Time: time.Now().UTC(), Grade: grade, Route: string(r.last.reply.Route), Model: r.model.Name,
		Request: r.last.request, Answer: r.last.reply.Text, Note: note, Tokens: r.last.reply.Answer.PredictedTokens}
	if err := AppendGrade(r.gradesPath, g); err != nil {
		return err
	}
	fmt.Fprintf(r.err, "%s %s answer graded %s %s\n", dim("noted:"), g.Route, grade, dim("("+r.gradesPath+")"))
	return nil
}

func (r *REPL) cmdImprove(context.Context, string) (bool, error) {
	grades, bad, err := ReadGrades(r.gradesPath)
	if err != nil {
		return false, err
	}
	fmt.Fprintln(r.err, ImproveReport(grades, bad))
	return false, nil
}

func (r *REPL) cmdSave(ctx context.Context, name string) (bool, error) {
	if name == "" {
		return false, errors.New("usage: /save NAME")
	}
	var sess Session
	err := r.op(ctx, func(ctx context.Context) error {
		var err error
		sess, err = r.sessions.Save(ctx, r.eng, r.agent.Slot, Session{Name: name, Model: r.model.Name,
			ModelFingerprint: r.eng.Info().Fingerprint, Mode: r.mode, Messages: r.history})
		return err
	})
	if err != nil {
		return false, err
	}
	fmt.Fprintf(r.err, "saved %s: %d messages, KV state of %d tokens %s\n", name, len(sess.Messages), sess.Tokens,
		dim("("+r.sessions.Dir+")"))
	return false, nil
}

func (r *REPL) cmdLoad(ctx context.Context, name string) (bool, error) {
	if name == "" {
		names, err := r.sessions.List()
		if err != nil {
			return false, err
		}
		if len(names) == 0 {
			fmt.Fprintln(r.err, "no saved conversations yet (/save NAME)")
			return false, nil
		}
		fmt.Fprintln(r.err, strings.Join(names, "\n"))
		return false, nil
	}
	var (
		sess  Session
		kvErr error
	)
	err := r.op(ctx, func(ctx context.Context) error {
		var err error
		sess, kvErr, err = r.sessions.Load(ctx, r.eng, r.agent.Slot, name, r.model.Name)
		return err
	})
	if err != nil {
		return false, err
	}
	r.history = sess.Messages
	r.last = nil
	if sess.Mode == "agent" || sess.Mode == "raw" {
		r.mode = sess.Mode
	}
	msg := fmt.Sprintf("loaded %s: %d messages", name, len(sess.Messages))
	if kvErr != nil {
		msg += fmt.Sprintf("; KV state not restored (%v): the next answer re-reads the conversation", kvErr)
	} else if sess.Tokens > 0 {
		msg += fmt.Sprintf(", KV state of %d tokens restored", sess.Tokens)
	}
	fmt.Fprintln(r.err, msg)
	for _, m := range sess.Messages {
		fmt.Fprintf(r.err, "%s %s\n", dim(m.Role+":"), firstLineOf(m.Content, 100))
	}
	return false, nil
}

func firstLineOf(s string, n int) string {
	s, _, _ = strings.Cut(strings.TrimSpace(s), "\n")
	if len(s) > n {
		return s[:n] + "…"
	}
	return s
}

func (r *REPL) cmdList(_ context.Context, dir string) (bool, error) {
	entries, err := r.ws.List(dir)
	if err != nil {
		return false, err
	}
	for _, e := range entries {
		switch {
		case e.Dir:
			fmt.Fprintf(r.out, "%s/\n", e.Name)
		case e.Link:
			fmt.Fprintf(r.out, "%s@\n", e.Name)
		default:
			fmt.Fprintf(r.out, "%s  %s\n", e.Name, dim(bytesize.FormatTenths(e.Bytes)))
		}
	}
	return false, nil
}

func (r *REPL) cmdWrite(ctx context.Context, file string) (bool, error) {
	if file == "" {
		return false, errors.New("usage: /write FILE")
	}
	if r.last == nil {
		return false, errors.New("no answer to write yet")
	}
	if err := r.ws.WriteFile(ctx, file, r.last.reply.Text); err != nil {
		return false, err
	}
	fmt.Fprintf(r.err, "wrote %s\n", file)
	return false, nil
}

func (r *REPL) cmdClear(context.Context, string) (bool, error) {
	r.history, r.last = nil, nil
	fmt.Fprintln(r.err, dim("conversation cleared"))
	return false, nil
}
