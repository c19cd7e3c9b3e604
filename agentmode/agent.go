// Package agentmode lets the model route each request itself. When the model's chat template takes
// tools (native.go), the model is offered web_search, run_shell and read_file and calls them in its
// own format. Otherwise one short call classifies the request as search, shell or chat; search
// rewrites the request into a query, searches the web and answers citing the results; shell has the
// model write one command, which runs only after the user says yes, and answers from its output;
// chat just answers. Everything goes through engine.Engine, so the logic is
// tested against a scripted engine.
package agentmode

import (
	"context"
	"errors"
	"fmt"
	"strings"
	"unicode"
	"unicode/utf8"

	"github.com/expertsniper/expertsniper/engine"
	"github.com/expertsniper/expertsniper/tools"
	"github.com/expertsniper/expertsniper/websearch"
)

// Route is how a request is handled.
type Route string

const (
	RouteChat   Route = "chat"
	RouteSearch Route = "search"
	RouteShell  Route = "shell"
	// RouteRaw is plain chat chosen by the user (/raw), with no classification call.
	RouteRaw Route = "raw"
)

// ParseRoute reads the classifier's answer: its first word, in any case and with any punctuation,
// decides; anything that is not "search" or "shell" means chat.
func ParseRoute(answer string) Route {
	answer = stripThinking(answer)
	word := strings.FieldsFunc(answer, func(r rune) bool { return !unicode.IsLetter(r) })
	if len(word) == 0 {
		return RouteChat
	}
	switch strings.ToLower(word[0]) {
	case "search":
		return RouteSearch
	case "shell":
		return RouteShell
	}
	return RouteChat
}

// stripThinking drops a leading <think>...</think> block that reasoning models emit.
func stripThinking(s string) string {
	if i := strings.Index(s, "</think>"); i >= 0 && strings.Contains(s[:i], "<think>") {
		return s[i+len("</think>"):]
	}
	return s
}

// Hooks let the caller show what happens while a request is handled. Nil fields are skipped.
type Hooks struct {
	// Route is called once the route is known, before anything else happens on it.
	Route func(Route)
	// Status reports a step or a recoverable failure ("query: …", "search failed: …").
	Status func(string)
	// Token receives the answer as it streams; an error stops generation.
	Token func(string) error
}

func (h Hooks) route(r Route) {
	if h.Route != nil {
		h.Route(r)
	}
}

func (h Hooks) status(format string, args ...any) {
	if h.Status != nil {
		h.Status(fmt.Sprintf(format, args...))
	}
}

// Usage sums the timings of every engine call a reply made (classification, rewriting, answer).
type Usage struct {
	Calls           int
	PromptTokens    int
	CachedTokens    int
	GeneratedTokens int
	PromptMS        float64
	GeneratedMS     float64
}

// Add counts one engine call.
func (u *Usage) Add(t engine.Timings) {
	u.Calls++
	u.PromptTokens += t.PromptTokens
	u.CachedTokens += t.CachedTokens
	u.GeneratedTokens += t.PredictedTokens
	u.PromptMS += t.PromptMS
	u.GeneratedMS += t.PredictedMS
}

// Reply is the outcome of one request.
type Reply struct {
	Route   Route
	Query   string             // search: the rewritten query
	Results []websearch.Result // search: what the answer may cite
	// SearchErr is set when the search failed; the answer was then made without results.
	SearchErr error
	Command   string             // shell: the command the model wrote
	Shell     *tools.ShellResult // shell: what it did, nil when it did not run
	Text      string             // the answer as streamed
	Finish    string             // the answer's finish reason
	Answer    engine.Timings     // the answer call alone, for tok/s
	Usage     Usage              // all calls together
}

// Agent handles requests. Set Engine; the rest has defaults.
type Agent struct {
	Engine   engine.Engine
	Searcher websearch.Searcher // nil: search requests are answered as chat, with a note
	Shell    *tools.Shell       // nil: shell requests are answered as chat, with a note
	Files    *tools.Workspace   // nil: no read_file tool (native tool calls only)
	// System is the system prompt of answers ("" = none).
	System string
	// Sampling and MaxTokens apply to answers; the short routing calls are always greedy.
	Sampling  engine.Sampling
	MaxTokens int
	// Slot holds the conversation; its KV cache is reused turn to turn and between the routing calls
	// and the answer.
	Slot int
	// SearchResults is how many results go into the prompt (0 = 5).
	SearchResults int
}

// The routing instructions follow the conversation as one more user message, so that a routing call
// and the answer after it share the conversation's prefix in the slot's KV cache: the answer then only
// evaluates its last message, not the whole history again.
const classifyPrompt = `How should my last request be handled? Reply with exactly one word:
search - it needs current facts from the web (news, prices, versions, weather, "look up").
shell - it needs a command run on this computer (files, processes, disk, git, system info).
chat - anything else (explanations, writing, code, conversation).`

const rewritePrompt = `Rewrite my last request as a short web search query of a few keywords. Reply with the query only.`

const commandPrompt = `Write one POSIX shell command that does what my last request asks on this computer. Reply with the command only, on one line, no explanation and no code fences. Prefer read-only commands.`

// Classify asks the model for the route of request, which follows history.
func (a *Agent) Classify(ctx context.Context, history []engine.Message, request string, usage *Usage) (Route, error) {
	answer, err := a.short(ctx, history, request, classifyPrompt, 8, usage)
	if err != nil {
		return RouteChat, fmt.Errorf("classify the request: %w", err)
	}
	return ParseRoute(answer), nil
}

// Respond routes request and answers it. history holds earlier turns (without the system prompt).
func (a *Agent) Respond(ctx context.Context, history []engine.Message, request string, h Hooks) (Reply, error) {
	if tmpl := a.nativeTemplate(); tmpl != nil && len(a.availableTools()) > 0 {
		return a.respondNative(ctx, tmpl, history, request, h)
	}
	var r Reply
	route, err := a.Classify(ctx, history, request, &r.Usage)
	if err != nil {
		return r, err
	}
	switch route {
	case RouteSearch:
		return a.search(ctx, history, request, "", h, r)
	case RouteShell:
		return a.shell(ctx, history, request, h, r)
	default:
		r.Route = RouteChat
		h.route(RouteChat)
		return a.answer(ctx, a.messages(history, request), h, r)
	}
}

// Chat answers without routing (the REPL's /raw mode).
func (a *Agent) Chat(ctx context.Context, history []engine.Message, request string, h Hooks) (Reply, error) {
	r := Reply{Route: RouteRaw}
	h.route(RouteRaw)
	return a.answer(ctx, a.messages(history, request), h, r)
}

// Search answers request from a web search for query, skipping classification (and, when query is not
// empty, the rewriting call). The REPL's /search uses it.
func (a *Agent) Search(ctx context.Context, history []engine.Message, request, query string, h Hooks) (Reply, error) {
	return a.search(ctx, history, request, query, h, Reply{})
}

func (a *Agent) search(ctx context.Context, history []engine.Message, request, query string, h Hooks, r Reply) (Reply, error) {
	r.Route = RouteSearch
	h.route(RouteSearch)
	if a.Searcher == nil {
		h.status("no search provider is configured; answering from the model alone")
		return a.answer(ctx, a.messages(history, request), h, r)
	}
	if strings.TrimSpace(query) == "" {
		rewritten, err := a.short(ctx, history, request, rewritePrompt, 32, &r.Usage)
		if err != nil {
			return r, fmt.Errorf("rewrite the request as a query: %w", err)
		}
		query = firstLine(rewritten)
		query = strings.Trim(query, "\"'` ")
		if query == "" {
			query = request
		}
	}
	r.Query = query
	h.status("query: %s", query)
	results, err := a.Searcher.Search(ctx, query, a.searchResults())
	if err != nil {
		if ctx.Err() != nil {
			return r, ctx.Err()
		}
		r.SearchErr = err
		h.status("search failed: %v; answering without web results", describeSearchError(err))
		msgs := a.messages(history, request)
		msgs[len(msgs)-1].Content += "\n\n(A web search for this failed, so answer from what you know and say that it may be out of date.)"
		return a.answer(ctx, msgs, h, r)
	}
	r.Results = results
	if len(results) == 0 {
		h.status("no results for %q", query)
	} else {
		h.status("%d results from %s", len(results), a.Searcher.Name())
	}
	msgs := a.messages(history, searchRequest(request, query, results))
	return a.answer(ctx, msgs, h, r)
}

// searchResults is how many results a search asks for.
func (a *Agent) searchResults() int {
	if a.SearchResults <= 0 {
		return 5
	}
	return a.SearchResults
}

func describeSearchError(err error) string {
	switch {
	case errors.Is(err, websearch.ErrBlocked):
		return "the provider refused the request (rate limit); try again later"
	case websearch.IsNetworkError(err):
		return fmt.Sprintf("network error (%v)", err)
	}
	return err.Error()
}

// searchRequest puts numbered results in front of the request so that the answer can cite [n].
func searchRequest(request, query string, results []websearch.Result) string {
	var b strings.Builder
	if len(results) == 0 {
		fmt.Fprintf(&b, "A web search for %q found nothing. Say so, then answer from what you know.\n\n", query)
	} else {
		fmt.Fprintf(&b, "Web search results for %q:\n", query)
		for i, res := range results {
			fmt.Fprintf(&b, "[%d] %s (%s)\n", i+1, res.Title, res.URL)
			if res.Snippet != "" {
				fmt.Fprintf(&b, "    %s\n", res.Snippet)
			}
		}
		b.WriteString("\nAnswer using these results and cite them by number, like [1].\n\n")
	}
	b.WriteString("Request: ")
	b.WriteString(request)
	return b.String()
}

func (a *Agent) shell(ctx context.Context, history []engine.Message, request string, h Hooks, r Reply) (Reply, error) {
	r.Route = RouteShell
	h.route(RouteShell)
	if a.Shell == nil {
		h.status("shell commands are disabled; answering from the model alone")
		return a.answer(ctx, a.messages(history, request), h, r)
	}
	written, err := a.short(ctx, history, request, commandPrompt, 64, &r.Usage)
	if err != nil {
		return r, fmt.Errorf("write a command: %w", err)
	}
	r.Command = ExtractCommand(written)
	if r.Command == "" {
		h.status("the model wrote no command; answering as chat")
		return a.answer(ctx, a.messages(history, request), h, r)
	}
	h.status("command: %s", tools.ShowExactly(r.Command))
	res, err := a.Shell.Run(ctx, r.Command)
	switch {
	case errors.Is(err, tools.ErrDeclined):
		h.status("not run")
		r.Text = "(command not run)"
		return r, nil
	case err != nil:
		return r, err
	}
	r.Shell = &res
	switch {
	case res.TimedOut:
		h.status("timed out after %s", res.Elapsed.Round(1e6))
	default:
		h.status("exit status %d, %d bytes of output", res.ExitCode, len(res.Output)+int(res.Dropped))
	}
	msgs := a.messages(history, request)
	msgs = append(msgs,
		engine.Message{Role: "assistant", Content: "I ran: " + r.Command},
		engine.Message{Role: "user", Content: shellReport(res, request)})
	return a.answer(ctx, msgs, h, r)
}

func shellReport(res tools.ShellResult, request string) string {
	var b strings.Builder
	switch {
	case res.TimedOut:
		fmt.Fprintf(&b, "The command was killed after %s. ", res.Elapsed.Round(1e6))
	default:
		fmt.Fprintf(&b, "The command exited with status %d. ", res.ExitCode)
	}
	b.WriteString("Its output:\n```\n")
	b.WriteString(res.Output)
	if res.Dropped > 0 {
		fmt.Fprintf(&b, "\n[... %d more bytes cut]", res.Dropped)
	}
	b.WriteString("\n```\nUsing this output, answer: ")
	b.WriteString(request)
	return b.String()
}

// ExtractCommand takes the command out of the model's answer: code fences, a "$ " prompt, surrounding
// backticks and thinking blocks are removed, and only the first non-empty line is kept.
func ExtractCommand(answer string) string {
	answer = stripThinking(answer)
	for _, line := range strings.Split(answer, "\n") {
		line = strings.TrimSpace(line)
		if line == "" || strings.HasPrefix(line, "```") {
			continue
		}
		line = strings.TrimPrefix(line, "$ ")
		line = strings.TrimSpace(strings.Trim(line, "`"))
		if line != "" {
			return line
		}
	}
	return ""
}

func firstLine(s string) string {
	s = stripThinking(s)
	for _, line := range strings.Split(s, "\n") {
		if line = strings.TrimSpace(line); line != "" {
			return line
		}
	}
	return ""
}

func (a *Agent) messages(history []engine.Message, request string) []engine.Message {
	msgs := make([]engine.Message, 0, len(history)+2)
	if a.System != "" {
		msgs = append(msgs, engine.Message{Role: "system", Content: a.System})
	}
	msgs = append(msgs, history...)
	return append(msgs, engine.Message{Role: "user", Content: request})
}

// answer streams the model's answer to msgs.
func (a *Agent) answer(ctx context.Context, msgs []engine.Message, h Hooks, r Reply) (Reply, error) {
	prompt, err := a.Engine.ApplyTemplate(msgs, true)
	if err != nil {
		return r, fmt.Errorf("apply the chat template: %w", err)
	}
	var text strings.Builder
	res, err := a.Engine.Complete(ctx, engine.Request{
		Prompt: prompt, MaxTokens: a.MaxTokens, Sampling: a.Sampling, Slot: a.Slot,
	}, func(t engine.Token) error {
		text.WriteString(t.Text)
		if h.Token != nil {
			return h.Token(t.Text)
		}
		return nil
	})
	r.Text = text.String()
	r.Finish = res.FinishReason
	r.Answer = res.Timings
	r.Usage.Add(res.Timings)
	if err != nil {
		return r, fmt.Errorf("answer: %w", err)
	}
	return r, nil
}

// short runs a greedy call of at most maxTokens for a routing step: the conversation, the request,
// then the instruction. It returns the generated text.
func (a *Agent) short(ctx context.Context, history []engine.Message, request, instruction string, maxTokens int, usage *Usage) (string, error) {
	msgs := append(a.messages(history, request), engine.Message{Role: "user", Content: instruction})
	prompt, err := a.Engine.ApplyTemplate(msgs, true)
	if err != nil {
		// A template that insists on alternating roles: ask with the request alone.
		prompt, err = a.Engine.ApplyTemplate([]engine.Message{{Role: "user", Content: request + "\n\n" + instruction}}, true)
		if err != nil {
			return "", fmt.Errorf("apply the chat template: %w", err)
		}
	}
	// The answer that follows renders the conversation and the request without the instruction: on
	// a hybrid model a checkpoint where the two prompts part lets it resume there.
	var keep string
	if base, err := a.Engine.ApplyTemplate(a.messages(history, request), true); err == nil {
		keep = prompt[:commonPrefixLen(prompt, base)]
	}
	res, err := a.Engine.Complete(ctx, engine.Request{Prompt: prompt, MaxTokens: maxTokens, Slot: a.Slot, KeepPrefix: keep},
		func(engine.Token) error { return nil })
	usage.Add(res.Timings)
	if err != nil {
		return "", err
	}
	return res.Text, nil
}

// commonPrefixLen is the length in bytes of the longest common prefix of a and b, cut back to a
// whole UTF-8 character.
func commonPrefixLen(a, b string) int {
	n := 0
	for n < len(a) && n < len(b) && a[n] == b[n] {
		n++
	}
	for n > 0 && n < len(a) && !utf8.RuneStart(a[n]) {
		n--
	}
	return n
}
