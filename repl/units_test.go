package repl

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/expertsniper/expertsniper/agentmode/scripted"
	"github.com/expertsniper/expertsniper/engine"
	"github.com/expertsniper/expertsniper/gguf"
)

func TestAnswerDocumentLongerThanTheContext(t *testing.T) {
	var doc strings.Builder
	for i := 0; i < 200; i++ {
		if i == 137 {
			doc.WriteString("Note: the launch code is 4242.\n")
			continue
		}
		doc.WriteString("Filler line about nothing in particular, number ")
		doc.WriteString(strings.Repeat("x", i%7))
		doc.WriteString(".\n")
	}
	eng := &scripted.Engine{ModelInfo: engine.ModelInfo{Context: 700}}
	eng.Reply = func(req engine.Request) string {
		switch {
		case strings.Contains(req.Prompt, "Write short notes"):
			if strings.Contains(req.Prompt, "launch code is 4242") {
				return "The launch code is 4242."
			}
			return "NOTHING RELEVANT"
		case strings.Contains(req.Prompt, "Answer the question from the document"):
			if strings.Contains(req.Prompt, "4242") {
				return "It is 4242."
			}
			return "Not in the document."
		}
		return "?"
	}
	var progress []int
	var streamed strings.Builder
	ans, err := AnswerDocument(context.Background(), eng, "What is the launch code?", doc.String(), DocOptions{
		NotesTokens: 64, AnswerTokens: 64,
		Progress: func(round, page, pages int) { progress = append(progress, page) },
		Token:    func(s string) error { streamed.WriteString(s); return nil },
	})
	if err != nil {
		t.Fatal(err)
	}
	if ans.Text != "It is 4242." || streamed.String() != ans.Text {
		t.Fatalf("answer %+v, streamed %q", ans, streamed.String())
	}
	if ans.Pages < 10 || len(progress) != ans.Pages {
		t.Fatalf("pages %d, progress %v: a %d-byte document in a 700-token context needs many pages", ans.Pages, progress, doc.Len())
	}
	for i, req := range eng.Requests() {
		if len(req.Prompt)+req.MaxTokens > 700 {
			t.Fatalf("call %d: prompt %d + answer %d tokens exceeds the context", i, len(req.Prompt), req.MaxTokens)
		}
	}
	// Every line of the document was read exactly once, in order.
	var seen strings.Builder
	for _, req := range eng.Requests()[:ans.Pages] {
		p := req.Prompt
		start := strings.Index(p, "Document:\n") + len("Document:\n")
		end := strings.LastIndex(p, "\n\nQuestion: ")
		seen.WriteString(p[start:end])
	}
	if seen.String() != doc.String() {
		t.Fatal("the pages do not add up to the document")
	}
}

func TestAnswerDocumentShortDocIsOneCall(t *testing.T) {
	eng := &scripted.Engine{Reply: func(engine.Request) string { return "short answer" }}
	ans, err := AnswerDocument(context.Background(), eng, "q?", "a short doc", DocOptions{})
	if err != nil || ans.Pages != 1 || ans.Rounds != 0 || len(eng.Requests()) != 1 || ans.Text != "short answer" {
		t.Fatalf("%+v, %v, %d calls", ans, err, len(eng.Requests()))
	}
}

func TestAnswerDocumentSplitsOverlongLines(t *testing.T) {
	eng := &scripted.Engine{ModelInfo: engine.ModelInfo{Context: 600}, Reply: func(engine.Request) string { return "NOTHING RELEVANT" }}
	doc := strings.Repeat("y", 3000) // one line, five times the context
	ans, err := AnswerDocument(context.Background(), eng, "q?", doc, DocOptions{NotesTokens: 32, AnswerTokens: 32})
	if err != nil {
		t.Fatal(err)
	}
	if ans.Pages < 6 {
		t.Fatalf("pages %d", ans.Pages)
	}
	last := eng.Requests()[len(eng.Requests())-1].Prompt
	if !strings.Contains(last, "No part of the document said anything relevant") {
		t.Fatalf("final prompt:\n%s", last)
	}
}

func TestAnswerDocumentErrors(t *testing.T) {
	eng := &scripted.Engine{ModelInfo: engine.ModelInfo{Context: 200}}
	if _, err := AnswerDocument(context.Background(), eng, "", "doc", DocOptions{}); err == nil {
		t.Error("empty question accepted")
	}
	if _, err := AnswerDocument(context.Background(), eng, "q", " \n", DocOptions{}); err == nil {
		t.Error("empty document accepted")
	}
	_, err := AnswerDocument(context.Background(), eng, strings.Repeat("long question ", 20), strings.Repeat("d", 5000), DocOptions{NotesTokens: 32})
	if err == nil || !strings.Contains(err.Error(), "no room for a page") {
		t.Errorf("tiny context: err = %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	eng2 := &scripted.Engine{ModelInfo: engine.ModelInfo{Context: 600}, Reply: func(engine.Request) string { return "x" }}
	if _, err := AnswerDocument(ctx, eng2, "q", strings.Repeat("d\n", 3000), DocOptions{NotesTokens: 32}); !errors.Is(err, context.Canceled) {
		t.Errorf("cancelled: err = %v", err)
	}
}

// writeShapeModel writes a GGUF with only the metadata the KV size depends on.
func writeShapeModel(t *testing.T, kvs map[string]any) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "shape.gguf")
	f, err := os.Create(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	w := gguf.NewWriter(f)
	for k, v := range kvs {
		if err := w.AddKV(k, v); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Write(context.Background()); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestKVCacheSizeQwen3MoEShape(t *testing.T) {
	// Qwen3-30B-A3B: 48 layers, 32 query / 4 KV heads of 128.
	path := writeShapeModel(t, map[string]any{
		"general.architecture":             "qwen3moe",
		"qwen3moe.block_count":             uint32(48),
		"qwen3moe.embedding_length":        uint32(2048),
		"qwen3moe.attention.head_count":    uint32(32),
		"qwen3moe.attention.head_count_kv": uint32(4),
		"qwen3moe.attention.key_length":    uint32(128),
		"qwen3moe.attention.value_length":  uint32(128),
	})
	shape, err := ReadKVShape(path)
	if err != nil {
		t.Fatal(err)
	}
	f16, err := shape.Bytes(65536, "f16", "f16")
	if err != nil {
		t.Fatal(err)
	}
	if want := int64(48 * 2 * 512 * 2 * 65536); f16 != want { // 6 GiB
		t.Fatalf("f16 KV = %d, want %d", f16, want)
	}
	q4, err := shape.Bytes(65536, "q4_0", "q4_0")
	if err != nil {
		t.Fatal(err)
	}
	if want := int64(48 * 2 * (512 / 32 * 18) * 65536); q4 != want { // 1.69 GiB
		t.Fatalf("q4_0 KV = %d, want %d", q4, want)
	}
	msg, err := KVReport(shape, 65536, "q4_0", "q4_0")
	if err != nil || !strings.Contains(msg, "KV cache 1.7 GiB for 65536 tokens (q4_0/q4_0, 48 attention layers), saves 4.3 GiB against f16 (6.0 GiB)") {
		t.Fatalf("report %q, %v", msg, err)
	}
	if _, err := shape.Bytes(10, "q3_bogus", "f16"); err == nil {
		t.Fatal("an unknown cache type was accepted")
	}
}

func TestKVCacheSizeSkipsRecurrentLayers(t *testing.T) {
	// qwen35moe: full attention every 4th layer, the rest have no KV cache.
	path := writeShapeModel(t, map[string]any{
		"general.architecture":              "qwen35moe",
		"qwen35moe.block_count":             uint32(40),
		"qwen35moe.embedding_length":        uint32(2048),
		"qwen35moe.attention.head_count":    uint32(16),
		"qwen35moe.attention.head_count_kv": uint32(2),
		"qwen35moe.attention.key_length":    uint32(256),
		"qwen35moe.attention.value_length":  uint32(256),
		"qwen35moe.full_attention_interval": uint32(4),
	})
	shape, err := ReadKVShape(path)
	if err != nil {
		t.Fatal(err)
	}
	if shape.AttentionLayers != 10 {
		t.Fatalf("attention layers %d, want 10", shape.AttentionLayers)
	}
	got, _ := shape.Bytes(1000, "q8_0", "f16")
	if want := int64(10 * (512/32*34 + 512*2) * 1000); got != want {
		t.Fatalf("bytes %d, want %d", got, want)
	}
}

func TestReadKVShapeBadFile(t *testing.T) {
	if _, err := ReadKVShape(filepath.Join(t.TempDir(), "missing.gguf")); err == nil {
		t.Fatal("missing file accepted")
	}
	path := writeShapeModel(t, map[string]any{"general.architecture": "qwen3moe"})
	if _, err := ReadKVShape(path); err == nil || !strings.Contains(err.Error(), "block_count") {
		t.Fatalf("err = %v", err)
	}
}

func TestLoadConfig(t *testing.T) {
	dir := t.TempDir()
	c, err := LoadConfig(filepath.Join(dir, "missing.json"))
	if err != nil || c.Mode != "agent" || c.Prices.OutputPerMillion == 0 {
		t.Fatalf("defaults: %+v, %v", c, err)
	}
	good := `{"models": {"9b": {"path": "/m/9b.gguf", "mode": "ram", "context": 32768},
		"35b": {"path": "/m/35b.gguf", "mode": "sniper", "ram": "8GiB", "context": 65536, "cache_type_k": "q4_0", "cache_type_v": "q4_0"}},
		"default_model": "35b", "prices": {"label": "X", "input_per_million": 1.25, "output_per_million": 10}}`
	p := filepath.Join(dir, "config.json")
	os.WriteFile(p, []byte(good), 0o644)
	c, err = LoadConfig(p)
	if err != nil {
		t.Fatal(err)
	}
	m, err := c.ResolveModel("35b")
	if err != nil || m.Name != "35b" || m.Context != 65536 || m.CacheTypeV != "q4_0" || c.Prices.InputPerMillion != 1.25 || c.MaxTokens != 1024 {
		t.Fatalf("%+v %+v %v", c, m, err)
	}
	for name, bad := range map[string]string{
		"syntax":        `{"models": `,
		"unknown field": `{"modle": 1}`,
		"mode":          `{"mode": "turbo"}`,
		"model mode":    `{"models": {"a": {"path": "x", "mode": "fast"}}}`,
		"no path":       `{"models": {"a": {}}}`,
		"cache type":    `{"models": {"a": {"path": "x", "cache_type_k": "q3"}}}`,
		"default":       `{"default_model": "zzz"}`,
	} {
		os.WriteFile(p, []byte(bad), 0o644)
		if _, err := LoadConfig(p); err == nil || !strings.Contains(err.Error(), p) {
			t.Errorf("%s: err = %v, want an error naming the file", name, err)
		}
	}
}

func TestResolveModelExpandsHome(t *testing.T) {
	home := t.TempDir()
	t.Setenv("HOME", home)
	os.WriteFile(filepath.Join(home, "m.gguf"), []byte("x"), 0o644)
	c := Config{Models: map[string]ModelConfig{"m": {Path: "~/m.gguf"}}}
	for _, arg := range []string{"m", "~/m.gguf"} {
		m, err := c.ResolveModel(arg)
		if err != nil || m.Path != filepath.Join(home, "m.gguf") {
			t.Errorf("ResolveModel(%q) = %+v, %v", arg, m, err)
		}
	}
}

func TestDefaultDirsFollowXDG(t *testing.T) {
	t.Setenv("XDG_CONFIG_HOME", "/x/config")
	t.Setenv("XDG_DATA_HOME", "/x/data")
	t.Setenv("XDG_STATE_HOME", "relative/is/ignored")
	t.Setenv("HOME", "/home/u")
	d, err := DefaultDirs()
	if err != nil {
		t.Fatal(err)
	}
	if d.Config != "/x/config/expertsniper" || d.Data != "/x/data/expertsniper" || d.State != "/home/u/.local/state/expertsniper" {
		t.Fatalf("%+v", d)
	}
}

func TestReadInputJoinsLines(t *testing.T) {
	cases := map[string]string{
		"one\n":                       "one",
		"a \\\nb \\\nc\n":             "a \nb \nc",
		"\"\"\"\nx\n\ny\n\"\"\"\n":    "x\n\ny",
		"\"\"\"first\nsecond\"\"\"\n": "first\nsecond",
		"\"\"\"inline\"\"\"\n":        "inline",
	}
	for in, want := range cases {
		got, err := readInput(NewPlainReader(strings.NewReader(in), nil), "", "")
		if err != nil || got != want {
			t.Errorf("readInput(%q) = %q, %v; want %q", in, got, err, want)
		}
	}
	if _, err := readInput(NewPlainReader(strings.NewReader("\"\"\"\nunterminated\n"), nil), "", ""); err == nil {
		t.Error("an unterminated block at end of input must be an error (EOF)")
	}
}
