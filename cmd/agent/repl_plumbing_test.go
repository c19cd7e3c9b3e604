package main

import (
	"bytes"
	"context"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"

	"github.com/expertsniper/expertsniper/modelgen/testmodels"
	"github.com/expertsniper/expertsniper/repl"
	"github.com/expertsniper/expertsniper/websearch"
)

// runREPL runs a REPL session on a generated model with piped input and returns stdout and stderr.
func runREPL(t *testing.T, model repl.ModelConfig, cfg repl.Config, searcher websearch.Searcher, input string) (string, string) {
	t.Helper()
	base := t.TempDir()
	var out, errOut bytes.Buffer
	r, err := repl.New(context.Background(), repl.Options{
		In: strings.NewReader(input), Out: &out, ErrOut: &errOut, Config: cfg,
		Dirs:  repl.Dirs{Config: filepath.Join(base, "c"), Data: filepath.Join(base, "d"), State: filepath.Join(base, "s")},
		Model: model, Open: modelOpener(&errOut), Searcher: searcher, Workdir: base,
	})
	if err != nil {
		t.Fatal(err)
	}
	defer r.Close()
	if err := r.Run(context.Background()); err != nil {
		t.Fatalf("Run: %v\nstderr:\n%s", err, errOut.String())
	}
	return out.String(), errOut.String()
}

func tinyModel(t *testing.T, ctx int) repl.ModelConfig {
	path := testmodels.Path(t, "qwen3moe-q8_0")
	return repl.ModelConfig{Name: "tiny", Path: path, Mode: "ram", Context: ctx}
}

func TestPlumbingSaveAndLoadKVStateOnAGeneratedModel(t *testing.T) {
	cfg := repl.DefaultConfig()
	cfg.MaxTokens = 16
	_, errs := runREPL(t, tinyModel(t, 1024), cfg, nil, "/raw\nHello there.\n/save first\n/clear\n/bench\n/load first\nAnd again?\n/stats\n/quit\n")
	if strings.Contains(errs, "error:") {
		t.Fatalf("stderr:\n%s", errs)
	}
	saved := regexp.MustCompile(`saved first: 2 messages, KV state of (\d+) tokens`).FindStringSubmatch(errs)
	restored := regexp.MustCompile(`loaded first: 2 messages, KV state of (\d+) tokens restored`).FindStringSubmatch(errs)
	if saved == nil || restored == nil || saved[1] != restored[1] || saved[1] == "0" {
		t.Fatalf("save/load did not round-trip the KV state:\n%s", errs)
	}
	if strings.Count(errs, " tokens · ") != 2 {
		t.Fatalf("want two answers with status lines:\n%s", errs)
	}
	// /bench overwrote the slot's KV cache; the answer after /load evaluates only its new message, so
	// the restored state served the rest.
	after := errs[strings.Index(errs, "loaded first"):]
	cached := regexp.MustCompile(`\(\+(\d+) cached\)`).FindStringSubmatch(after)
	if cached == nil || atoi(cached[1]) < atoi(saved[1]) {
		t.Fatalf("the restored KV state was not reused (saved %s tokens):\n%s", saved[1], after)
	}
}

func atoi(s string) int {
	n, _ := strconv.Atoi(s)
	return n
}

func TestPlumbingAgentModeOnAGeneratedModel(t *testing.T) {
	page, err := os.ReadFile("../../websearch/testdata/ddg_results.html")
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { w.Write(page) }))
	defer srv.Close()
	cfg := repl.DefaultConfig()
	cfg.MaxTokens = 12
	cfg.Shell.Disabled = true
	// A model with random weights routes at random; whichever route it takes must complete, and /search
	// always goes through the search provider.
	_, errs := runREPL(t, tinyModel(t, 2048), cfg, &websearch.DuckDuckGo{BaseURL: srv.URL + "/html/"},
		"What is the weather?\n/search go generics\n/good\n/improve\n/cost\n")
	if strings.Contains(errs, "error:") {
		t.Fatalf("stderr:\n%s", errs)
	}
	for _, want := range []string{"[search]", "query: go generics", "3 results from duckduckgo", "[1] Tutorial: Getting started with generics",
		"Weakest route", "would have cost $"} {
		if !strings.Contains(errs, want) && !(want == "Weakest route" && strings.Contains(errs, "Every graded answer was good")) {
			t.Errorf("stderr lacks %q:\n%s", want, errs)
		}
	}
	if !regexp.MustCompile(`\[(chat|search|shell)\]`).MatchString(errs) {
		t.Fatalf("no route shown for the first question:\n%s", errs)
	}
}

func TestPlumbingLongContextQuantizedKVReport(t *testing.T) {
	m := tinyModel(t, 65536)
	m.CacheTypeK, m.CacheTypeV = "q4_0", "q4_0"
	cfg := repl.DefaultConfig()
	_, errs := runREPL(t, m, cfg, nil, "/stats\n")
	if !strings.Contains(errs, "context 65536") || !regexp.MustCompile(`KV cache [0-9.]+ [KMG]iB for 65536 tokens \(q4_0/q4_0, \d+ attention layers\), saves`).MatchString(errs) {
		t.Fatalf("stderr:\n%s", errs)
	}
}

func TestPlumbingAskAboutADocumentLongerThanTheContext(t *testing.T) {
	var doc strings.Builder
	for i := 0; i < 40; i++ {
		doc.WriteString("This is line number something of a long and rather dull report about the weather.\n")
	}
	path := filepath.Join(t.TempDir(), "doc.txt")
	os.WriteFile(path, []byte(doc.String()), 0o644)
	model := testmodels.Path(t, "qwen3moe-q8_0")
	var out, errOut bytes.Buffer
	t.Setenv("XDG_CONFIG_HOME", t.TempDir())
	code := run(context.Background(), []string{"agent", "ask", "-m", model, "-c", "512", "-n", "8", "--notes-tokens", "8",
		"--doc", path, "What is the report about?"}, &IOStreams{In: strings.NewReader(""), Out: &out, ErrOut: &errOut})
	if code != exitOK {
		t.Fatalf("exit %d\nstderr:\n%s", code, errOut.String())
	}
	m := regexp.MustCompile(`(\d+) pages, (\d+) model calls`).FindStringSubmatch(errOut.String())
	if m == nil || m[1] == "1" {
		t.Fatalf("a document of ~700 tokens in a 512-token context must take several pages:\n%s", errOut.String())
	}
	if !strings.Contains(errOut.String(), "reading page 2 of") {
		t.Fatalf("no progress shown:\n%s", errOut.String())
	}
}

// TestRunDocAnswersAboutADocumentLongerThanTheContext: agent run --doc pages the document too.
func TestRunDocAnswersAboutADocumentLongerThanTheContext(t *testing.T) {
	var doc strings.Builder
	for i := 0; i < 60; i++ {
		doc.WriteString("This is line number something of a long and rather dull report about the weather.\n")
	}
	path := filepath.Join(t.TempDir(), "doc.txt")
	if err := os.WriteFile(path, []byte(doc.String()), 0o644); err != nil {
		t.Fatal(err)
	}
	model := testmodels.Path(t, "qwen3moe-q8_0")
	var out, errOut bytes.Buffer
	t.Setenv("XDG_CONFIG_HOME", t.TempDir())
	code := run(context.Background(), []string{"agent", "run", "-m", model, "-n", "8", "-c", "512", "--mode", "sniper", "--cache", "0",
		"--doc", path, "-p", "What is the report about?"}, &IOStreams{In: strings.NewReader(""), Out: &out, ErrOut: &errOut})
	if code != exitOK {
		t.Fatalf("exit %d\nstderr:\n%s", code, errOut.String())
	}
	m := regexp.MustCompile(`(\d+) pages, (\d+) model calls`).FindStringSubmatch(errOut.String())
	if m == nil || m[1] == "1" {
		t.Fatalf("a long document must take several pages:\n%s", errOut.String())
	}
	if code := run(context.Background(), []string{"agent", "run", "-m", model, "--doc", path}, &IOStreams{In: strings.NewReader(""), Out: &out, ErrOut: &errOut}); code != exitUsage {
		t.Fatalf("--doc without -p: exit %d, want %d", code, exitUsage)
	}
}
