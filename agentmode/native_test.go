package agentmode

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/expertsniper/expertsniper/agentmode/scripted"
	"github.com/expertsniper/expertsniper/engine"
	"github.com/expertsniper/expertsniper/modelgen"
	"github.com/expertsniper/expertsniper/tools"
	"github.com/expertsniper/expertsniper/websearch"
)

func qwen3Info(t *testing.T) engine.ModelInfo {
	t.Helper()
	src, err := modelgen.ChatTemplateOf("qwen3")
	if err != nil {
		t.Fatal(err)
	}
	return engine.ModelInfo{ChatTemplate: src, EOSText: "<|im_end|>"}
}

// A model whose template takes tools decides itself: it calls web_search in its own format, the
// search runs, and the result goes back as a tool message for the answer. No classifier call.
func TestNativeToolCallSearches(t *testing.T) {
	eng := &scripted.Engine{ModelInfo: qwen3Info(t), Reply: func(req engine.Request) string {
		if strings.Contains(req.Prompt, "<tool_response>") {
			return "Go 1.26 is out [1]."
		}
		return "<tool_call>\n{\"name\": \"web_search\", \"arguments\": {\"query\": \"go 1.26 release\"}}\n</tool_call>"
	}}
	s := &fakeSearcher{results: []websearch.Result{{Title: "Go 1.26 Release Notes", URL: "https://go.dev/doc/go1.26"}}}
	a := &Agent{Engine: eng, Searcher: s}
	var rec recordHooks
	r, err := a.Respond(context.Background(), nil, "what is new in go?", rec.hooks())
	if err != nil {
		t.Fatal(err)
	}
	if r.Route != RouteSearch || r.Query != "go 1.26 release" || len(s.queries) != 1 || s.queries[0] != "go 1.26 release" {
		t.Fatalf("reply %+v, queries %v", r, s.queries)
	}
	if r.Text != "Go 1.26 is out [1]." || rec.streamed.String() != r.Text {
		t.Fatalf("answer %q, streamed %q (the call must not be shown as text)", r.Text, rec.streamed.String())
	}
	reqs := eng.Requests()
	if len(reqs) != 2 || reqs[0].Grammar == "" || len(reqs[0].GrammarTriggers) == 0 {
		t.Fatalf("want a tool round with a lazy grammar, then the answer: %d requests", len(reqs))
	}
	for _, want := range []string{`"name": "web_search"`, "<tool_response>", "Go 1.26 Release Notes"} {
		if !strings.Contains(reqs[1].Prompt, want) {
			t.Fatalf("the answer's prompt lacks %q:\n%s", want, reqs[1].Prompt)
		}
	}
	if len(rec.routes) != 1 || rec.routes[0] != RouteSearch {
		t.Fatalf("routes shown: %v", rec.routes)
	}
}

// read_file reads inside the working directory; a model that answers without a call just answers.
func TestNativeToolCallReadsAFile(t *testing.T) {
	dir := t.TempDir()
	os.WriteFile(filepath.Join(dir, "notes.txt"), []byte("the secret is 42"), 0o600)
	ws, err := tools.OpenWorkspace(dir, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.Close()
	eng := &scripted.Engine{ModelInfo: qwen3Info(t), Reply: func(req engine.Request) string {
		if strings.Contains(req.Prompt, "the secret is 42") {
			return "It is 42."
		}
		return "<tool_call>\n{\"name\": \"read_file\", \"arguments\": {\"path\": \"notes.txt\"}}\n</tool_call>"
	}}
	a := &Agent{Engine: eng, Files: ws}
	r, err := a.Respond(context.Background(), nil, "what does notes.txt say?", Hooks{})
	if err != nil || r.Text != "It is 42." {
		t.Fatalf("reply %+v, %v", r, err)
	}

	plain := &scripted.Engine{ModelInfo: qwen3Info(t), Reply: func(engine.Request) string { return "Just an answer." }}
	a = &Agent{Engine: plain, Files: ws}
	r, err = a.Respond(context.Background(), nil, "hi", Hooks{})
	if err != nil || r.Text != "Just an answer." || r.Route != RouteChat || len(plain.Requests()) != 1 {
		t.Fatalf("reply %+v, %v, %d requests", r, err, len(plain.Requests()))
	}
}
