package repl

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/expertsniper/expertsniper/agentmode/scripted"
	"github.com/expertsniper/expertsniper/bytesize"
	"github.com/expertsniper/expertsniper/engine"
	"github.com/expertsniper/expertsniper/websearch"
)

// syncBuffer is a bytes.Buffer safe to read while the REPL writes.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// replies answers the routing calls by their system prompt and everything else with answer(prompt).
func replies(route, command string, answer func(prompt string) string) func(engine.Request) string {
	return func(req engine.Request) string {
		switch {
		case strings.HasSuffix(req.Prompt, "conversation).<|im_end|>\n<|im_start|>assistant\n"):
			return route
		case strings.HasSuffix(req.Prompt, "Reply with the query only.<|im_end|>\n<|im_start|>assistant\n"):
			return "rewritten query"
		case strings.HasSuffix(req.Prompt, "Prefer read-only commands.<|im_end|>\n<|im_start|>assistant\n"):
			return command
		}
		return answer(req.Prompt)
	}
}

type harness struct {
	t       *testing.T
	opts    Options
	out     *syncBuffer
	errOut  *syncBuffer
	engines []*scripted.Engine
	opened  []ModelConfig
	newEng  func(m ModelConfig) (*scripted.Engine, error)
}

func newHarness(t *testing.T, input io.Reader, newEng func(m ModelConfig) (*scripted.Engine, error)) *harness {
	t.Helper()
	h := &harness{t: t, out: &syncBuffer{}, errOut: &syncBuffer{}, newEng: newEng}
	base := t.TempDir()
	cfg := DefaultConfig()
	cfg.Models = map[string]ModelConfig{
		"small": {Path: "/models/small.gguf", Mode: "ram", Context: 4096},
		"big":   {Path: "/models/big.gguf", Mode: "sniper", RAM: "8GiB", Context: 65536, CacheTypeK: "q4_0", CacheTypeV: "q4_0"},
	}
	h.opts = Options{
		In: input, Out: h.out, ErrOut: h.errOut, Config: cfg,
		Dirs:    Dirs{Config: filepath.Join(base, "config"), Data: filepath.Join(base, "data"), State: filepath.Join(base, "state")},
		Model:   ModelConfig{Name: "small", Path: "/models/small.gguf", Mode: "ram", Context: 4096},
		Workdir: filepath.Join(base, "work"),
		KVShape: func(string) (KVShape, error) { return KVShape{}, errors.New("no file") },
	}
	if err := os.MkdirAll(h.opts.Workdir, 0o755); err != nil {
		t.Fatal(err)
	}
	h.opts.Open = func(ctx context.Context, m ModelConfig) (engine.Engine, error) {
		e, err := h.newEng(m)
		if err != nil {
			return nil, err
		}
		h.engines = append(h.engines, e)
		h.opened = append(h.opened, m)
		return e, nil
	}
	return h
}

func (h *harness) run() error {
	h.t.Helper()
	r, err := New(context.Background(), h.opts)
	if err != nil {
		return err
	}
	defer r.Close()
	return r.Run(context.Background())
}

func echoEngine(m ModelConfig) (*scripted.Engine, error) {
	return &scripted.Engine{
		ModelInfo: engine.ModelInfo{Name: m.Name, Mode: m.Mode, Context: 4096, Architecture: "qwen3moe"},
		Reply: replies("chat", "", func(p string) string {
			i := strings.LastIndex(p, "<|im_start|>user\n")
			q := strings.TrimSuffix(p[i+len("<|im_start|>user\n"):], "<|im_end|>\n<|im_start|>assistant\n")
			return "You said: " + q
		}),
	}, nil
}

func TestRawQuestionStreamsAnswerAndStatusLine(t *testing.T) {
	h := newHarness(t, strings.NewReader("/raw\nhello there\n/quit\n"), echoEngine)
	if err := h.run(); err != nil {
		t.Fatal(err)
	}
	if got := h.out.String(); got != "You said: hello there\n" {
		t.Fatalf("stdout %q", got)
	}
	errs := h.errOut.String()
	for _, want := range []string{"[raw]", "4 tokens", "tok/s", "prompt"} {
		if !strings.Contains(errs, want) {
			t.Errorf("stderr lacks %q:\n%s", want, errs)
		}
	}
	if reqs := h.engines[0].Requests(); len(reqs) != 1 {
		t.Fatalf("raw mode made %d calls, want 1", len(reqs))
	}
}

func TestConversationCarriesHistory(t *testing.T) {
	h := newHarness(t, strings.NewReader("first\nsecond\n"), echoEngine)
	if err := h.run(); err != nil {
		t.Fatal(err)
	}
	reqs := h.engines[0].Requests()
	last := reqs[len(reqs)-1].Prompt
	if !strings.Contains(last, "first") || !strings.Contains(last, "You said: first") || !strings.Contains(last, "second") {
		t.Fatalf("the second answer did not see the first turn:\n%s", last)
	}
	if !strings.Contains(h.errOut.String(), "bye") {
		t.Fatal("end of input must quit cleanly")
	}
}

type stubSearcher struct{ err error }

func (s stubSearcher) Name() string { return "stub" }
func (s stubSearcher) Search(_ context.Context, q string, _ int) ([]websearch.Result, error) {
	if s.err != nil {
		return nil, s.err
	}
	return []websearch.Result{{Title: "Result for " + q, URL: "https://example.org/1", Snippet: "snippet"}}, nil
}

func TestAgentModeShowsRouteAndSources(t *testing.T) {
	h := newHarness(t, strings.NewReader("latest news?\n/search exact words\n"), func(m ModelConfig) (*scripted.Engine, error) {
		return &scripted.Engine{Reply: replies("Search", "", func(string) string { return "See [1]." })}, nil
	})
	h.opts.Searcher = stubSearcher{}
	if err := h.run(); err != nil {
		t.Fatal(err)
	}
	errs := h.errOut.String()
	for _, want := range []string{"[search]", "query: rewritten query", "Sources:", "[1] Result for rewritten query", "Result for exact words"} {
		if !strings.Contains(errs, want) {
			t.Errorf("stderr lacks %q:\n%s", want, errs)
		}
	}
	if strings.Count(h.out.String(), "See [1].") != 2 {
		t.Fatalf("stdout %q", h.out.String())
	}
}

func TestSearchFailureKeepsTheREPLGoing(t *testing.T) {
	h := newHarness(t, strings.NewReader("weather?\n/raw\nstill here?\n"), func(m ModelConfig) (*scripted.Engine, error) {
		return &scripted.Engine{Reply: replies("search", "", func(string) string { return "answer" })}, nil
	})
	h.opts.Searcher = stubSearcher{err: fmt.Errorf("search stub: %w", websearch.ErrBlocked)}
	if err := h.run(); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(h.errOut.String(), "search failed") || strings.Count(h.out.String(), "answer") != 2 {
		t.Fatalf("stderr:\n%s\nstdout %q", h.errOut.String(), h.out.String())
	}
}

func TestShellCommandNeedsYesOnTheInput(t *testing.T) {
	eng := func(m ModelConfig) (*scripted.Engine, error) {
		return &scripted.Engine{Reply: replies("shell", "touch made-by-shell", func(string) string { return "ok" })}, nil
	}
	h := newHarness(t, strings.NewReader("make a file\n\nmake a file\nmaybe\nmake a file\ny\n"), eng)
	if err := h.run(); err != nil {
		t.Fatal(err)
	}
	marker := filepath.Join(h.opts.Workdir, "made-by-shell")
	if _, err := os.Stat(marker); err != nil {
		t.Fatalf("the confirmed command did not run: %v\n%s", err, h.errOut.String())
	}
	errs := h.errOut.String()
	if strings.Count(errs, "Run `touch made-by-shell`? [y/N]") != 3 || strings.Count(errs, "not run") != 2 {
		t.Fatalf("want three questions and two refusals:\n%s", errs)
	}
}

// TestShellConfirmationShowsControlCharacters reproduces the carriage-return trick: the model's command
// "touch …\rRun `ls -la" would, printed raw, show "Run `ls -la`? [y/N]" on a terminal while `touch`
// is what runs. The question and the status line show it with its escapes instead.
func TestShellConfirmationShowsControlCharacters(t *testing.T) {
	trick := "touch made-by-trick #\rRun `ls -la"
	eng := func(m ModelConfig) (*scripted.Engine, error) {
		return &scripted.Engine{Reply: replies("shell", trick, func(string) string { return "ok" })}, nil
	}
	h := newHarness(t, strings.NewReader("list my files\nn\n"), eng)
	if err := h.run(); err != nil {
		t.Fatal(err)
	}
	errs := h.errOut.String()
	if strings.ContainsAny(errs, "\r\x1b") {
		t.Fatalf("a control character reached the screen raw:\n%q", errs)
	}
	want := `Run "touch made-by-trick #\rRun ` + "`ls -la" + `" (it contains control or invisible characters, shown as escapes)? [y/N]`
	if !strings.Contains(errs, want) {
		t.Fatalf("the question does not show the command exactly; want %q in:\n%s", want, errs)
	}
	if _, err := os.Stat(filepath.Join(h.opts.Workdir, "made-by-trick")); err == nil {
		t.Fatal("a declined command ran")
	}
}

func TestShellDeclinedRunsNothing(t *testing.T) {
	eng := func(m ModelConfig) (*scripted.Engine, error) {
		return &scripted.Engine{Reply: replies("shell", "touch must-not-exist", func(string) string { return "ok" })}, nil
	}
	h := newHarness(t, strings.NewReader("make a file\nn\n"), eng) // and end of input at the next question
	if err := h.run(); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(h.opts.Workdir, "must-not-exist")); err == nil {
		t.Fatal("a declined command ran")
	}
}

func TestModelListAndSwitch(t *testing.T) {
	h := newHarness(t, strings.NewReader("/model\n/model big\n/model nosuch\n/model big\nhi\n"), echoEngine)
	if err := h.run(); err != nil {
		t.Fatal(err)
	}
	errs := h.errOut.String()
	if !strings.Contains(errs, "* small") || !strings.Contains(errs, "mode sniper, ram 8GiB, ctx 65536, kv q4_0/q4_0") {
		t.Fatalf("/model listing:\n%s", errs)
	}
	if len(h.opened) != 2 || h.opened[1].Name != "big" || h.opened[1].Context != 65536 || h.opened[1].CacheTypeK != "q4_0" {
		t.Fatalf("opened %+v", h.opened)
	}
	if !h.engines[0].Closed() {
		t.Fatal("the old model was not closed")
	}
	if !strings.Contains(errs, `unknown model "nosuch": configured models are big, small`) || !strings.Contains(errs, "big is already loaded") {
		t.Fatalf("stderr:\n%s", errs)
	}
	if len(h.engines[1].Requests()) == 0 {
		t.Fatal("the question after the switch did not go to the new model")
	}
}

func TestModelSwitchFailureGoesBack(t *testing.T) {
	h := newHarness(t, strings.NewReader("/model big\n/raw\nhi\n"), nil)
	h.newEng = func(m ModelConfig) (*scripted.Engine, error) {
		if m.Name == "big" {
			return nil, errors.New("not enough memory")
		}
		return echoEngine(m)
	}
	if err := h.run(); err != nil {
		t.Fatal(err)
	}
	if len(h.opened) != 2 || h.opened[1].Name != "small" {
		t.Fatalf("opened %+v", h.opened)
	}
	if !strings.Contains(h.errOut.String(), "not enough memory") || h.out.String() != "You said: hi\n" {
		t.Fatalf("stderr:\n%s\nstdout %q", h.errOut.String(), h.out.String())
	}
}

func TestMultiLineInput(t *testing.T) {
	h := newHarness(t, strings.NewReader("/raw\nline one \\\nline two\n\"\"\"\nblock a\n\nblock b\n\"\"\"\n"), echoEngine)
	if err := h.run(); err != nil {
		t.Fatal(err)
	}
	want := "You said: line one \nline two\nYou said: block a\n\nblock b\n"
	if got := h.out.String(); got != want {
		t.Fatalf("stdout %q, want %q", got, want)
	}
}

func TestSlashListsCommandsAndUnknownIsAnError(t *testing.T) {
	h := newHarness(t, strings.NewReader("/\n/frobnicate\n/help\n"), echoEngine)
	if err := h.run(); err != nil {
		t.Fatal(err)
	}
	errs := h.errOut.String()
	for _, c := range commandList() {
		if strings.Count(errs, "/"+c.name) < 2 {
			t.Errorf("/%s not listed by / and /help", c.name)
		}
	}
	if !strings.Contains(errs, "unknown command /frobnicate") {
		t.Fatalf("stderr:\n%s", errs)
	}
}

func TestSaveClearLoad(t *testing.T) {
	h := newHarness(t, strings.NewReader("/raw\nremember the word zebra\n/save chat-1\n/save ../escape\n/clear\n/load\n/load chat-1\nwhat word?\n/load nosuch\n"), echoEngine)
	if err := h.run(); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(h.opts.Dirs.Data, "sessions")
	if _, err := os.Stat(filepath.Join(dir, "chat-1.json")); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(dir, "chat-1.kv")); err != nil {
		t.Fatal("no KV state was saved beside the conversation")
	}
	errs := h.errOut.String()
	for _, want := range []string{"saved chat-1: 2 messages, KV state of", `session name "../escape"`, "KV state of", "restored",
		`no session named "nosuch"`} {
		if !strings.Contains(errs, want) {
			t.Errorf("stderr lacks %q:\n%s", want, errs)
		}
	}
	reqs := h.engines[0].Requests()
	if last := reqs[len(reqs)-1].Prompt; !strings.Contains(last, "zebra") {
		t.Fatalf("the loaded conversation was not used:\n%s", last)
	}
}

func TestGradesAndImprove(t *testing.T) {
	h := newHarness(t, strings.NewReader("/good\n/raw\nq1\n/bad too short\n/agent\nq2\n/good\n/improve\n"), echoEngine)
	if err := h.run(); err != nil {
		t.Fatal(err)
	}
	grades, malformed, err := ReadGrades(filepath.Join(h.opts.Dirs.Config, "grades.jsonl"))
	if err != nil || malformed != 0 || len(grades) != 2 {
		t.Fatalf("grades %+v, %d, %v", grades, malformed, err)
	}
	if grades[0].Grade != "bad" || grades[0].Route != "raw" || grades[0].Note != "too short" || grades[0].Request != "q1" ||
		grades[1].Grade != "good" || grades[1].Route != "chat" {
		t.Fatalf("grades %+v", grades)
	}
	errs := h.errOut.String()
	if !strings.Contains(errs, "nothing to grade yet") || !strings.Contains(errs, "Weakest route: raw") {
		t.Fatalf("stderr:\n%s", errs)
	}
}

func TestCostUsesConfiguredPrices(t *testing.T) {
	h := newHarness(t, strings.NewReader("/raw\nhello\n/cost\n"), echoEngine)
	h.opts.Config.Prices = Prices{Label: "TestCloud", InputPerMillion: 1e6, OutputPerMillion: 2e6} // $1 / $2 per token
	if err := h.run(); err != nil {
		t.Fatal(err)
	}
	reqs := h.engines[0].Requests()
	in := len(reqs[0].Prompt)
	want := fmt.Sprintf("would have cost $%.4f ($%.4f in + $%.4f out)", float64(in)+2*3, float64(in), 6.0)
	if !strings.Contains(h.errOut.String(), want) {
		t.Fatalf("stderr lacks %q:\n%s", want, h.errOut.String())
	}
}

func TestAttachmentsAndWrite(t *testing.T) {
	h := newHarness(t, strings.NewReader("/raw\nsummarise @notes.md\n/write out/summary.txt\ny\n/ls\nread @../etc/passwd\n"), echoEngine)
	if err := os.WriteFile(filepath.Join(h.opts.Workdir, "notes.md"), []byte("NOTE CONTENT"), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := h.run(); err != nil {
		t.Fatal(err)
	}
	reqs := h.engines[0].Requests()
	if !strings.Contains(reqs[0].Prompt, "NOTE CONTENT") {
		t.Fatal("the attached file did not reach the model")
	}
	data, err := os.ReadFile(filepath.Join(h.opts.Workdir, "out", "summary.txt"))
	if err != nil || !strings.HasPrefix(string(data), "You said: summarise @notes.md") {
		t.Fatalf("written %q, %v", data, err)
	}
	if !strings.Contains(h.out.String(), "notes.md") || !strings.Contains(h.errOut.String(), "outside the working directory") {
		t.Fatalf("stdout %q\nstderr:\n%s", h.out.String(), h.errOut.String())
	}
	if len(reqs) != 1 {
		t.Fatal("a refused attachment must not reach the model")
	}
}

func TestCtrlCStopsTheAnswerNotTheREPL(t *testing.T) {
	inR, inW := io.Pipe()
	interrupts := make(chan os.Signal, 1)
	h := newHarness(t, inR, func(m ModelConfig) (*scripted.Engine, error) {
		return &scripted.Engine{TokenDelay: 5 * time.Millisecond,
			Reply: replies("chat", "", func(string) string { return strings.Repeat("word ", 2000) })}, nil
	})
	h.opts.Interrupts = interrupts
	done := make(chan error, 1)
	go func() { done <- h.run() }()
	fmt.Fprintln(inW, "/raw")
	fmt.Fprintln(inW, "tell me a long story")
	deadline := time.Now().Add(10 * time.Second)
	for strings.Count(h.out.String(), "word") < 10 {
		if time.Now().After(deadline) {
			t.Fatal("no streaming output")
		}
		time.Sleep(5 * time.Millisecond)
	}
	interrupts <- os.Interrupt
	for !strings.Contains(h.errOut.String(), "stopped") {
		if time.Now().After(deadline) {
			t.Fatalf("generation did not stop:\n%s", h.errOut.String())
		}
		time.Sleep(5 * time.Millisecond)
	}
	words := strings.Count(h.out.String(), "word")
	if words > 1000 {
		t.Fatalf("%d words: the answer ran to the end", words)
	}
	fmt.Fprintln(inW, "/stats")
	fmt.Fprintln(inW, "/quit")
	select {
	case err := <-done:
		if err != nil {
			t.Fatal(err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the REPL did not go on after Ctrl-C")
	}
	if !strings.Contains(h.errOut.String(), "session ") {
		t.Fatalf("/stats after Ctrl-C did not run:\n%s", h.errOut.String())
	}
}

func TestStatusLineShowsSniperCounters(t *testing.T) {
	h := newHarness(t, strings.NewReader("/raw\nhi\n/stats\n"), func(m ModelConfig) (*scripted.Engine, error) {
		e, _ := echoEngine(m)
		e.ModelInfo.Mode = "sniper"
		e.StreamStats = engine.Stats{RSSBytes: 3 << 30, BytesRead: 0, CacheHits: 30, CacheMisses: 10, CacheBudget: 4 << 30}
		return e, nil
	})
	if err := h.run(); err != nil {
		t.Fatal(err)
	}
	errs := h.errOut.String()
	for _, want := range []string{"RSS 3.0 GiB", "read 0 B", "cache      0 B of 4.0 GiB, 30 hits, 10 misses (75.0% hit rate)"} {
		if !strings.Contains(errs, want) {
			t.Errorf("stderr lacks %q:\n%s", want, errs)
		}
	}
}

func TestNoModelIsAClearError(t *testing.T) {
	h := newHarness(t, strings.NewReader(""), echoEngine)
	h.opts.Model = ModelConfig{}
	if err := h.run(); err == nil || !strings.Contains(err.Error(), "no model") {
		t.Fatalf("err = %v", err)
	}
}

// TestCostShowsThePriceOnce: the default prices' label named the price and the report named it again.
func TestCostShowsThePriceOnce(t *testing.T) {
	h := newHarness(t, strings.NewReader("/raw\nhello\n/cost\n"), echoEngine)
	h.opts.Config.Prices = DefaultConfig().Prices
	if err := h.run(); err != nil {
		t.Fatal(err)
	}
	errs := h.errOut.String()
	if n := strings.Count(errs, "per 1M tokens"); n != 1 || strings.Count(errs, "$3") != 1 {
		t.Fatalf("the price appears %d times:\n%s", n, errs)
	}
}

// TestCountsAreWrittenWithTheRightPlural: "1 turns" read wrong.
func TestCountsAreWrittenWithTheRightPlural(t *testing.T) {
	h := newHarness(t, strings.NewReader("/raw\nhi\n/stats\n/cost\n"), func(m ModelConfig) (*scripted.Engine, error) {
		e, _ := echoEngine(m)
		e.ModelInfo.Mode = "sniper"
		e.StreamStats = engine.Stats{CacheHits: 1, CacheMisses: 1, Reads: 1, CacheBudget: 1 << 30}
		return e, nil
	})
	if err := h.run(); err != nil {
		t.Fatal(err)
	}
	errs := h.errOut.String()
	for _, want := range []string{"1 turn,", "1 model call,", "1 slot,", "1 hit, 1 miss", "in 1 read"} {
		if !strings.Contains(errs, want) {
			t.Errorf("stderr lacks %q:\n%s", want, errs)
		}
	}
	for _, wrong := range []string{"1 turns", "1 calls", "1 model calls", "1 hits", "1 misses", "1 reads", "slot(s)"} {
		if strings.Contains(errs, wrong) {
			t.Errorf("stderr says %q:\n%s", wrong, errs)
		}
	}
}

// TestBenchAndStatsDivideBytesByTheirOwnTokens: a prompt token and a generated token read very
// different amounts (a prompt's tokens share experts); /bench reports each phase over its own tokens,
// /stats the total over every evaluated token.
func TestBenchAndStatsDivideBytesByTheirOwnTokens(t *testing.T) {
	h := newHarness(t, strings.NewReader("/bench\n/stats\n"), func(m ModelConfig) (*scripted.Engine, error) {
		e, _ := echoEngine(m)
		e.ModelInfo.Mode = "sniper"
		e.PromptReadBytes, e.DecodeReadBytes = 1<<10, 1<<20
		e.Reply = func(engine.Request) string { return "one two three four five six seven eight" }
		return e, nil
	})
	if err := h.run(); err != nil {
		t.Fatal(err)
	}
	errs := h.errOut.String()
	if !strings.Contains(errs, "(1.0 KiB per prompt token)") || !strings.Contains(errs, "decode 8.0 MiB read (1.0 MiB per generated token)") {
		t.Errorf("/bench does not divide each phase's reads by its own tokens:\n%s", errs)
	}
	st := h.engines[0].Stats()
	perToken := bytesize.FormatTenths(st.BytesRead / (st.PromptTokens + st.GeneratedTokens))
	if !strings.Contains(errs, "("+perToken+" per token, prompt and generated)") {
		t.Errorf("/stats lacks %s per token:\n%s", perToken, errs)
	}
}
