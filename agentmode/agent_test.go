package agentmode

import (
	"context"
	"errors"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/expertsniper/expertsniper/agentmode/scripted"
	"github.com/expertsniper/expertsniper/engine"
	"github.com/expertsniper/expertsniper/tools"
	"github.com/expertsniper/expertsniper/websearch"
)

func TestParseRoute(t *testing.T) {
	cases := map[string]Route{
		"search":                      RouteSearch,
		"Search.":                     RouteSearch,
		"  SEARCH: latest news":       RouteSearch,
		"shell":                       RouteShell,
		"Shell\n":                     RouteShell,
		"**shell**":                   RouteShell,
		"<think>hmm</think>\nsearch":  RouteSearch,
		"chat":                        RouteChat,
		"":                            RouteChat,
		"I think this needs a search": RouteChat, // only the first word counts
		"searching":                   RouteChat,
		"42":                          RouteChat,
		"Ｓｅａｒｃｈ":                      RouteChat,
		"<think>unfinished search":    RouteChat,
	}
	for in, want := range cases {
		if got := ParseRoute(in); got != want {
			t.Errorf("ParseRoute(%q) = %q, want %q", in, got, want)
		}
	}
}

func TestExtractCommand(t *testing.T) {
	cases := map[string]string{
		"ls -la":                             "ls -la",
		"```sh\ndf -h\n```":                  "df -h",
		"$ uname -a\nthis prints the kernel": "uname -a",
		"`du -sh .`":                         "du -sh .",
		"<think>x</think>\n\n  pwd  ":        "pwd",
		"\n\n":                               "",
	}
	for in, want := range cases {
		if got := ExtractCommand(in); got != want {
			t.Errorf("ExtractCommand(%q) = %q, want %q", in, got, want)
		}
	}
}

// script answers each kind of call by the system prompt it carries.
func script(classify, rewrite, command, answer string) func(engine.Request) string {
	return func(req engine.Request) string {
		switch {
		case strings.HasSuffix(req.Prompt, "chat - anything else (explanations, writing, code, conversation).<|im_end|>\n<|im_start|>assistant\n"):
			return classify
		case strings.HasSuffix(req.Prompt, "Reply with the query only.<|im_end|>\n<|im_start|>assistant\n"):
			return rewrite
		case strings.HasSuffix(req.Prompt, "Prefer read-only commands.<|im_end|>\n<|im_start|>assistant\n"):
			return command
		}
		return answer
	}
}

type recordHooks struct {
	routes   []Route
	statuses []string
	streamed strings.Builder
}

func (r *recordHooks) hooks() Hooks {
	return Hooks{
		Route:  func(rt Route) { r.routes = append(r.routes, rt) },
		Status: func(s string) { r.statuses = append(r.statuses, s) },
		Token:  func(s string) error { r.streamed.WriteString(s); return nil },
	}
}

type fakeSearcher struct {
	queries []string
	results []websearch.Result
	err     error
}

func (f *fakeSearcher) Name() string { return "fake" }
func (f *fakeSearcher) Search(_ context.Context, q string, max int) ([]websearch.Result, error) {
	f.queries = append(f.queries, q)
	if f.err != nil {
		return nil, f.err
	}
	return f.results, nil
}

func TestChatRouteStreamsTheAnswer(t *testing.T) {
	eng := &scripted.Engine{Reply: script("Chat", "", "", "Hello there, friend.")}
	a := &Agent{Engine: eng, Slot: 2, System: "be brief"}
	var rec recordHooks
	history := []engine.Message{{Role: "user", Content: "earlier"}, {Role: "assistant", Content: "reply"}}
	r, err := a.Respond(context.Background(), history, "say hi", rec.hooks())
	if err != nil {
		t.Fatal(err)
	}
	if r.Route != RouteChat || r.Text != "Hello there, friend." || rec.streamed.String() != r.Text {
		t.Fatalf("reply %+v, streamed %q", r, rec.streamed.String())
	}
	if len(rec.routes) != 1 || rec.routes[0] != RouteChat {
		t.Fatalf("routes shown: %v", rec.routes)
	}
	reqs := eng.Requests()
	if len(reqs) != 2 || reqs[0].Slot != 2 || reqs[1].Slot != 2 {
		t.Fatalf("want a classify call then the answer, both on the conversation's slot: %+v", reqs)
	}
	want := "<|im_start|>system\nbe brief<|im_end|>\n<|im_start|>user\nearlier<|im_end|>\n<|im_start|>assistant\nreply<|im_end|>\n<|im_start|>user\nsay hi<|im_end|>\n<|im_start|>assistant\n"
	if reqs[1].Prompt != want {
		t.Fatalf("answer prompt:\n%q\nwant\n%q", reqs[1].Prompt, want)
	}
	// The classify call ran over the same conversation, so the answer reuses all of it but its last line.
	shared := strings.TrimSuffix(want, "<|im_start|>assistant\n")
	if !strings.HasPrefix(reqs[0].Prompt, shared) {
		t.Fatalf("the classify prompt does not start with the conversation:\n%q", reqs[0].Prompt)
	}
	// It asks for a checkpoint where the answer's prompt parts from it (a hybrid model resumes there).
	if keep := shared + "<|im_start|>"; reqs[0].KeepPrefix != keep || reqs[1].KeepPrefix != "" {
		t.Fatalf("the classify call keeps a checkpoint after %q, the answer after %q: want %q and none", reqs[0].KeepPrefix, reqs[1].KeepPrefix, keep)
	}
	if r.Usage.Calls != 2 || r.Usage.GeneratedTokens != 3+1 {
		t.Fatalf("usage %+v", r.Usage)
	}
}

func TestSearchRouteRewritesSearchesAndCites(t *testing.T) {
	eng := &scripted.Engine{Reply: script("search", "\"go 1.26 release notes\"\nextra line", "", "Go 1.26 is out [1].")}
	s := &fakeSearcher{results: []websearch.Result{
		{Title: "Go 1.26 Release Notes", URL: "https://go.dev/doc/go1.26", Snippet: "The latest Go release."},
		{Title: "Go blog", URL: "https://go.dev/blog"},
	}}
	a := &Agent{Engine: eng, Searcher: s}
	var rec recordHooks
	r, err := a.Respond(context.Background(), nil, "what is new in the latest Go?", rec.hooks())
	if err != nil {
		t.Fatal(err)
	}
	if r.Route != RouteSearch || r.Query != "go 1.26 release notes" || len(r.Results) != 2 {
		t.Fatalf("reply %+v", r)
	}
	if len(s.queries) != 1 || s.queries[0] != "go 1.26 release notes" {
		t.Fatalf("searched for %q", s.queries)
	}
	reqs := eng.Requests()
	answer := reqs[len(reqs)-1].Prompt
	for _, want := range []string{"[1] Go 1.26 Release Notes (https://go.dev/doc/go1.26)", "The latest Go release.",
		"[2] Go blog (https://go.dev/blog)", "cite them by number", "what is new in the latest Go?"} {
		if !strings.Contains(answer, want) {
			t.Errorf("answer prompt lacks %q:\n%s", want, answer)
		}
	}
	if rec.streamed.String() != "Go 1.26 is out [1]." {
		t.Fatalf("streamed %q", rec.streamed.String())
	}
}

func TestSearchNetworkFailureStillAnswers(t *testing.T) {
	srv := httptest.NewServer(http.NotFoundHandler())
	base := srv.URL + "/html/"
	srv.Close()
	eng := &scripted.Engine{Reply: script("search", "weather", "", "I could not look it up.")}
	a := &Agent{Engine: eng, Searcher: &websearch.DuckDuckGo{BaseURL: base}}
	var rec recordHooks
	r, err := a.Respond(context.Background(), nil, "weather in Paris?", rec.hooks())
	if err != nil {
		t.Fatalf("a network failure must not fail the turn: %v", err)
	}
	if r.SearchErr == nil || r.Text != "I could not look it up." {
		t.Fatalf("reply %+v", r)
	}
	joined := strings.Join(rec.statuses, "\n")
	if !strings.Contains(joined, "search failed: network error") {
		t.Fatalf("statuses %q lack a clear network message", rec.statuses)
	}
	reqs := eng.Requests()
	if !strings.Contains(reqs[len(reqs)-1].Prompt, "web search for this failed") {
		t.Fatal("the model was not told the search failed")
	}
}

func TestDirectSearchSkipsClassifyAndRewrite(t *testing.T) {
	eng := &scripted.Engine{Reply: script("chat", "unused", "", "answer")}
	s := &fakeSearcher{}
	a := &Agent{Engine: eng, Searcher: s}
	r, err := a.Search(context.Background(), nil, "llama.cpp b11669", "llama.cpp b11669", Hooks{})
	if err != nil {
		t.Fatal(err)
	}
	if len(eng.Requests()) != 1 || s.queries[0] != "llama.cpp b11669" || r.Route != RouteSearch {
		t.Fatalf("requests %d, queries %q, reply %+v", len(eng.Requests()), s.queries, r)
	}
	if !strings.Contains(eng.Requests()[0].Prompt, "found nothing") {
		t.Fatal("an empty result list must be stated to the model")
	}
}

type answerer struct {
	answer bool
	asked  []string
}

func (a *answerer) Confirm(_ context.Context, q string) (bool, error) {
	a.asked = append(a.asked, q)
	return a.answer, nil
}

func TestShellRouteDeclinedRunsNothing(t *testing.T) {
	dir := t.TempDir()
	marker := filepath.Join(dir, "marker")
	eng := &scripted.Engine{Reply: script("shell", "", "```\ntouch "+marker+"\n```", "done")}
	conf := &answerer{answer: false}
	a := &Agent{Engine: eng, Shell: &tools.Shell{Dir: dir, Confirm: conf}}
	var rec recordHooks
	r, err := a.Respond(context.Background(), nil, "create a marker file", rec.hooks())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(marker); err == nil {
		t.Fatal("a declined command ran")
	}
	if r.Route != RouteShell || r.Command != "touch "+marker || r.Shell != nil {
		t.Fatalf("reply %+v", r)
	}
	if len(conf.asked) != 1 || !strings.Contains(conf.asked[0], "touch "+marker) {
		t.Fatalf("asked %q", conf.asked)
	}
	if len(eng.Requests()) != 2 {
		t.Fatalf("a declined command needs no answer call; got %d calls", len(eng.Requests()))
	}
	if !strings.Contains(strings.Join(rec.statuses, "\n"), "command: touch "+marker) {
		t.Fatalf("the command was not shown: %q", rec.statuses)
	}
}

func TestShellRouteConfirmedFeedsOutputBack(t *testing.T) {
	eng := &scripted.Engine{Reply: script("shell", "", "echo hello-from-the-shell", "It printed a greeting.")}
	a := &Agent{Engine: eng, Shell: &tools.Shell{Dir: t.TempDir(), Confirm: &answerer{answer: true}}}
	r, err := a.Respond(context.Background(), nil, "say hello in the shell", Hooks{})
	if err != nil {
		t.Fatal(err)
	}
	if r.Shell == nil || r.Shell.ExitCode != 0 || r.Shell.Output != "hello-from-the-shell\n" {
		t.Fatalf("shell result %+v", r.Shell)
	}
	reqs := eng.Requests()
	last := reqs[len(reqs)-1].Prompt
	if !strings.Contains(last, "exited with status 0") || !strings.Contains(last, "hello-from-the-shell") {
		t.Fatalf("the output did not go back to the model:\n%s", last)
	}
	if r.Text != "It printed a greeting." {
		t.Fatalf("text %q", r.Text)
	}
}

func TestShellRouteWithoutShellFallsBackToChat(t *testing.T) {
	eng := &scripted.Engine{Reply: script("shell", "", "rm -rf /", "I can't run commands here.")}
	a := &Agent{Engine: eng}
	var rec recordHooks
	r, err := a.Respond(context.Background(), nil, "delete everything", rec.hooks())
	if err != nil || r.Text != "I can't run commands here." || r.Command != "" {
		t.Fatalf("reply %+v, %v", r, err)
	}
}

func TestCancelStopsTheAnswer(t *testing.T) {
	eng := &scripted.Engine{Reply: script("chat", "", "", strings.Repeat("word ", 1000)), TokenDelay: 2 * time.Millisecond}
	a := &Agent{Engine: eng}
	ctx, cancel := context.WithCancel(context.Background())
	n := 0
	_, err := a.Respond(ctx, nil, "talk", Hooks{Token: func(string) error {
		if n++; n == 5 {
			cancel()
		}
		return nil
	}})
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v", err)
	}
	if n > 7 {
		t.Fatalf("%d tokens after cancel", n)
	}
}

func TestRawChatDoesNotClassify(t *testing.T) {
	eng := &scripted.Engine{Reply: script("search", "", "", "plain")}
	r, err := (&Agent{Engine: eng}).Chat(context.Background(), nil, "hi", Hooks{})
	if err != nil || r.Route != RouteRaw || r.Text != "plain" || len(eng.Requests()) != 1 {
		t.Fatalf("reply %+v, err %v, calls %d", r, err, len(eng.Requests()))
	}
}
