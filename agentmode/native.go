package agentmode

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"strings"

	"github.com/expertsniper/expertsniper/chatfmt"
	"github.com/expertsniper/expertsniper/engine"
	"github.com/expertsniper/expertsniper/tools"
)

// Native tool calls: when the model's chat template takes tools (chatfmt knows its format), the
// model is offered web_search, run_shell and read_file as tools and decides itself, in its own
// format, instead of the one-word classifier. Each call runs (a shell command only after the user
// says yes) and its result goes back as a tool message, for at most maxToolRounds rounds.

const maxToolRounds = 4

var nativeTools = []chatfmt.Tool{
	{Name: "web_search", Description: "Search the web for current facts (news, prices, versions, weather).",
		Parameters: json.RawMessage(`{"type":"object","properties":{"query":{"type":"string","description":"a few keywords"}},"required":["query"]}`)},
	{Name: "run_shell", Description: "Run one POSIX shell command on this computer (the user confirms it first). Prefer read-only commands.",
		Parameters: json.RawMessage(`{"type":"object","properties":{"command":{"type":"string"}},"required":["command"]}`)},
	{Name: "read_file", Description: "Read a text file in the working directory.",
		Parameters: json.RawMessage(`{"type":"object","properties":{"path":{"type":"string"}},"required":["path"]}`)},
}

// nativeTemplate returns the model's template when it takes tools in a format chatfmt parses.
func (a *Agent) nativeTemplate() *chatfmt.Template {
	info := a.Engine.Info()
	if info.ChatTemplate == "" {
		return nil
	}
	t, err := chatfmt.Parse(info.ChatTemplate, info.BOSText, info.EOSText)
	if err != nil || t.Format() == nil {
		return nil
	}
	return t
}

// respondNative answers with the model's own tool calls.
func (a *Agent) respondNative(ctx context.Context, tmpl *chatfmt.Template, history []engine.Message, request string, h Hooks) (Reply, error) {
	r := Reply{Route: RouteChat}
	routed := false
	msgs := a.messages(history, request)
	tools := a.availableTools()
	for round := 0; ; round++ {
		prompt, err := tmpl.Render(chatfmt.FromEngine(msgs), tools, true)
		if err != nil {
			return r, fmt.Errorf("render the chat template: %w", err)
		}
		req := engine.Request{Prompt: prompt, MaxTokens: a.MaxTokens, Sampling: a.Sampling, Slot: a.Slot}
		if round < maxToolRounds {
			g, triggers, err := tmpl.Format().Grammar(tools, chatfmt.Choice{})
			if err != nil {
				return r, fmt.Errorf("tool grammar: %w", err)
			}
			req.Grammar, req.GrammarTriggers = g, triggers
		} else {
			tools = nil // the last round must answer in words
		}
		hold := chatfmt.NewHoldback(tmpl.Format())
		var text strings.Builder
		res, err := a.Engine.Complete(ctx, req, func(t engine.Token) error {
			piece := hold.Push(t.Text)
			if piece == "" {
				return nil
			}
			if !routed {
				routed = true
				h.route(r.Route)
			}
			text.WriteString(piece)
			if h.Token != nil {
				return h.Token(piece)
			}
			return nil
		})
		r.Usage.Add(res.Timings)
		r.Answer, r.Finish = res.Timings, res.FinishReason
		if err != nil {
			return r, fmt.Errorf("answer: %w", err)
		}
		content, calls, perr := tmpl.Format().Parse(res.Text, tools)
		if perr != nil || len(calls) == 0 || tools == nil {
			if rest := hold.Rest(); rest != "" {
				text.WriteString(rest)
				if h.Token != nil {
					if err := h.Token(rest); err != nil {
						return r, err
					}
				}
			}
			r.Text = text.String()
			if !routed {
				h.route(r.Route)
			}
			return r, nil
		}
		call := calls[0] // one call per round: each needs its result before the next makes sense
		call.ID = fmt.Sprintf("call%d", round)
		result, err := a.runTool(ctx, call, h, &r)
		if err != nil {
			return r, err
		}
		if !routed {
			routed = true
			h.route(r.Route)
		}
		msgs = append(msgs,
			engine.Message{Role: "assistant", Content: content, ToolCalls: []engine.ToolCall{{ID: call.ID, Name: call.Name, Arguments: call.Arguments}}},
			engine.Message{Role: "tool", ToolCallID: call.ID, Name: call.Name, Content: result})
	}
}

// availableTools are the tools this agent can run.
func (a *Agent) availableTools() []chatfmt.Tool {
	var out []chatfmt.Tool
	for _, t := range nativeTools {
		switch {
		case t.Name == "web_search" && a.Searcher == nil, t.Name == "run_shell" && a.Shell == nil, t.Name == "read_file" && a.Files == nil:
			continue
		}
		out = append(out, t)
	}
	return out
}

// runTool runs one call and returns what the model is told.
func (a *Agent) runTool(ctx context.Context, call chatfmt.Call, h Hooks, r *Reply) (string, error) {
	var args map[string]any
	if err := json.Unmarshal([]byte(call.Arguments), &args); err != nil {
		return fmt.Sprintf("error: the arguments are not a JSON object: %v", err), nil
	}
	str := func(k string) string { s, _ := args[k].(string); return strings.TrimSpace(s) }
	switch call.Name {
	case "web_search":
		r.Route, r.Query = RouteSearch, str("query")
		h.status("query: %s", r.Query)
		results, err := a.Searcher.Search(ctx, r.Query, a.searchResults())
		if err != nil {
			if ctx.Err() != nil {
				return "", ctx.Err()
			}
			r.SearchErr = err
			h.status("search failed: %v", describeSearchError(err))
			return "error: the search failed: " + describeSearchError(err), nil
		}
		r.Results = append(r.Results, results...)
		h.status("%d results from %s", len(results), a.Searcher.Name())
		return searchRequest("", r.Query, results), nil
	case "run_shell":
		r.Route, r.Command = RouteShell, str("command")
		h.status("command: %s", r.Command)
		res, err := a.Shell.Run(ctx, r.Command)
		switch {
		case errors.Is(err, tools.ErrDeclined):
			h.status("not run")
			return "The user declined to run this command.", nil
		case err != nil:
			return "", err
		}
		r.Shell = &res
		h.status("exit status %d, %d bytes of output", res.ExitCode, len(res.Output)+int(res.Dropped))
		return shellReport(res, "the request above"), nil
	case "read_file":
		path := str("path")
		h.status("read: %s", path)
		content, truncated, err := a.Files.ReadFile(path)
		if err != nil {
			return "error: " + err.Error(), nil
		}
		if truncated {
			content += "\n[... cut]"
		}
		return content, nil
	}
	return fmt.Sprintf("error: there is no tool %q", call.Name), nil
}
