package binding

import (
	"bytes"
	"context"
	"encoding/binary"
	"errors"
	"math/rand/v2"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

func TestBadModelFiles(t *testing.T) {
	dir := t.TempDir()
	good, err := os.ReadFile(tinyModelPath(t))
	if err != nil {
		t.Fatal(err)
	}
	write := func(name string, b []byte) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, b, 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	header := func(nTensors, nKV uint64) []byte {
		var b bytes.Buffer
		b.WriteString("GGUF")
		binary.Write(&b, binary.LittleEndian, uint32(3))
		binary.Write(&b, binary.LittleEndian, nTensors)
		binary.Write(&b, binary.LittleEndian, nKV)
		b.Write(make([]byte, 64))
		return b.Bytes()
	}
	rnd := make([]byte, 4096)
	r := rand.New(rand.NewPCG(1, 2))
	for i := range rnd {
		rnd[i] = byte(r.Uint32())
	}
	unreadable := write("unreadable.gguf", good[:64])
	os.Chmod(unreadable, 0)
	cases := []struct {
		name, path, want string
	}{
		{"missing", filepath.Join(dir, "nope.gguf"), "no such file"},
		{"directory", dir, "not a regular file"},
		{"empty", write("empty.gguf", nil), "empty"},
		{"random bytes", write("random.gguf", rnd), "wrong magic"},
		{"wrong magic", write("magic.gguf", append([]byte("GGUX"), good[4:]...)), "wrong magic"},
		{"bad version", write("version.gguf", append(append([]byte("GGUF"), 9, 0, 0, 0), good[8:]...)), "version 9"},
		{"header only", write("hdr.gguf", good[:10]), "truncated header"},
		{"absurd tensor count", write("tensors.gguf", header(1<<60, 1)), "tensors"},
		{"absurd kv count", write("kvs.gguf", header(1, 1<<60)), "metadata"},
		{"truncated in metadata", write("trunc-meta.gguf", good[:2000]), "malformed GGUF"},
		{"truncated in data", write("trunc-data.gguf", good[:len(good)/2]), "end of the file"},
		{"truncated by one byte", write("trunc-1.gguf", good[:len(good)-1]), "end of the file"},
	}
	if os.Geteuid() != 0 { // root reads anything
		cases = append(cases, struct{ name, path, want string }{"unreadable", unreadable, "permission denied"})
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) {
			m, err := LoadModel(context.Background(), tc.path)
			if err == nil {
				m.Close()
				t.Fatalf("LoadModel(%s) succeeded", tc.name)
			}
			if !strings.Contains(err.Error(), tc.want) || !strings.Contains(err.Error(), tc.path) {
				t.Fatalf("error %q does not name the file and %q", err, tc.want)
			}
		})
	}
	// A valid GGUF that llama.cpp cannot run (unknown architecture) gets llama.cpp's reason.
	bad := bytes.Replace(good, []byte("qwen3moe"), []byte("qwen9zzz"), -1)
	p := write("arch.gguf", bad)
	if _, err := LoadModel(context.Background(), p); err == nil || !strings.Contains(err.Error(), "qwen9zzz") {
		t.Fatalf("unknown architecture: err = %v, want llama.cpp's reason naming it", err)
	}
}

func TestLoadCancelAndProgress(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	if _, err := LoadModel(ctx, tinyModelPath(t)); !errors.Is(err, context.Canceled) {
		t.Fatalf("load with cancelled ctx: %v", err)
	}
	// Aborting from the progress callback stops the load.
	if _, err := LoadModel(context.Background(), tinyModelPath(t), WithProgress(func(float32) bool { return false })); err == nil {
		t.Fatal("load aborted by the progress callback succeeded")
	}
	var last float32
	m := loadTiny(t, WithProgress(func(p float32) bool { last = p; return true }), WithMMap(false))
	if last != 1 {
		t.Fatalf("last progress %v, want 1", last)
	}
	// KV overrides reach llama.cpp.
	m2 := loadTiny(t, WithKVOverride(KVOverride{Key: "qwen3moe.context_length", Type: KVInt, Int: 128}))
	if n := m2.Stats().ContextTrain; n != 128 {
		t.Fatalf("overridden context_length: the model reports %d", n)
	}
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if err := m.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := m.NewContext(); !errors.Is(err, ErrClosed) {
		t.Fatalf("NewContext after Close: %v", err)
	}
}

func TestModelCloseWithOpenContext(t *testing.T) {
	m, err := LoadModel(context.Background(), tinyModelPath(t), WithExtraBufts(false))
	if err != nil {
		t.Fatal(err)
	}
	c, err := m.NewContext(WithContextSize(64))
	if err != nil {
		t.Fatal(err)
	}
	if err := m.Close(); err == nil {
		t.Fatal("closing a model with an open context succeeded")
	}
	c.Close()
	c.Close()
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Generate(context.Background(), "x"); !errors.Is(err, ErrClosed) {
		t.Fatalf("Generate on a closed context: %v", err)
	}
}

func TestTokenizeRoundTripAndSpecials(t *testing.T) {
	m := loadTiny(t)
	text := "the cat sat — ünïcode ✓ <|im_start|>user"
	toks, err := m.Tokenize(text, true, true)
	if err != nil {
		t.Fatal(err)
	}
	back, err := m.Detokenize(toks, false, true)
	if err != nil {
		t.Fatal(err)
	}
	if back != text {
		t.Fatalf("round trip: %q -> %v -> %q", text, toks, back)
	}
	var pieces strings.Builder
	for _, tk := range toks {
		p, err := m.TokenToPiece(tk, true)
		if err != nil {
			t.Fatal(err)
		}
		pieces.WriteString(p)
	}
	if pieces.String() != text {
		t.Fatalf("pieces %q", pieces.String())
	}
	imStart, _ := m.Tokenize("<|im_start|>", false, true)
	if len(imStart) != 1 || !m.IsControl(imStart[0]) {
		t.Fatalf("<|im_start|> with parseSpecial: %v", imStart)
	}
	plain, _ := m.Tokenize("<|im_start|>", false, false)
	if len(plain) < 2 {
		t.Fatalf("<|im_start|> without parseSpecial should be plain text, got %v", plain)
	}
	imEnd, _ := m.Tokenize("<|im_end|>", false, true)
	if !m.IsEOG(m.EOS()) || !m.IsEOG(imEnd[0]) || m.IsEOG(toks[0]) {
		t.Fatalf("EOG detection: eos %d im_end %d", m.EOS(), imEnd[0])
	}
	if _, err := m.TokenToPiece(Token(m.VocabSize()), false); err == nil {
		t.Fatal("TokenToPiece out of range succeeded")
	}
	if _, err := m.Detokenize([]Token{-5}, false, false); err == nil {
		t.Fatal("Detokenize of a negative token succeeded")
	}
	// A long text exercises the buffer growth path.
	long := strings.Repeat("ab ", 5000)
	lt, err := m.Tokenize(long, false, false)
	if err != nil || len(lt) == 0 {
		t.Fatalf("long tokenize: %v", err)
	}
}

func TestChatTemplates(t *testing.T) {
	m := loadTiny(t)
	msgs := []ChatMessage{{"system", "be brief"}, {"user", "hi"}}
	got, err := m.ApplyChatTemplate(msgs, true)
	if err != nil {
		t.Fatal(err)
	}
	want := "<|im_start|>system\nbe brief<|im_end|>\n<|im_start|>user\nhi<|im_end|>\n<|im_start|>assistant\n"
	if got != want {
		t.Fatalf("template:\n%q\nwant\n%q", got, want)
	}
	if _, err := ApplyChatTemplate("{{ this is no template llama.cpp knows }}", msgs, true); !errors.Is(err, ErrUnsupportedTemplate) {
		t.Fatalf("unknown template: %v", err)
	}
	llama3, err := ApplyChatTemplate("llama3", msgs, true)
	if err != nil || !strings.Contains(llama3, "<|start_header_id|>") {
		t.Fatalf("builtin llama3: %q %v", llama3, err)
	}
	if names := BuiltinChatTemplates(); !slices.Contains(names, "chatml") {
		t.Fatalf("builtin templates: %v", names)
	}
	// A model without a template falls back to ChatML: rename the key in a copy of the file (same
	// length, so every offset stays valid).
	raw, err := os.ReadFile(tinyModelPath(t))
	if err != nil {
		t.Fatal(err)
	}
	raw = bytes.Replace(raw, []byte("tokenizer.chat_template"), []byte("tokenizer.chat_templatX"), 1)
	noTmplPath := filepath.Join(t.TempDir(), "no-template.gguf")
	if err := os.WriteFile(noTmplPath, raw, 0o644); err != nil {
		t.Fatal(err)
	}
	noTmpl, err := LoadModel(context.Background(), noTmplPath, WithExtraBufts(false))
	if err != nil {
		t.Fatal(err)
	}
	defer noTmpl.Close()
	if tm := noTmpl.ChatTemplate(); tm != "" {
		t.Fatalf("template of the model without one: %q", tm)
	}
	fb, err := noTmpl.ApplyChatTemplate(msgs, true)
	if err != nil || fb != want {
		t.Fatalf("ChatML fallback: %q %v", fb, err)
	}
}

func TestStopStrings(t *testing.T) {
	m := loadTiny(t)
	base := greedy(t, newCtx(t, m), testPrompt, 24)
	if len(base.Text) < 8 {
		t.Skipf("generated text too short for the test: %q", base.Text)
	}
	// Stop strings that span token boundaries, taken from the text itself.
	for _, cut := range []int{3, len(base.Text) / 2} {
		stop := base.Text[cut : cut+3]
		i := strings.Index(base.Text, stop)
		var streamed strings.Builder
		r := greedy(t, newCtx(t, m), testPrompt, 24, WithStop("never-there", stop), WithTokenCallback(func(_ Token, s string) error {
			streamed.WriteString(s)
			return nil
		}))
		if r.Text != base.Text[:i] || streamed.String() != r.Text {
			t.Fatalf("stop %q: text %q streamed %q, want %q", stop, r.Text, streamed.String(), base.Text[:i])
		}
		if r.FinishReason != FinishStop || r.StopString != stop {
			t.Fatalf("stop %q: finish %s %q", stop, r.FinishReason, r.StopString)
		}
	}
	f := NewStopFilter([]string{"END"})
	var out strings.Builder
	for _, p := range []string{"ab", "cE", "N", "x", "EN", "D", "zz"} {
		rel, stop := f.Push(p)
		out.WriteString(rel)
		if stop != "" {
			break
		}
	}
	if out.String() != "abcENx" {
		t.Fatalf("filter released %q", out.String())
	}
	f = NewStopFilter(nil)
	rel, _ := f.Push("a\xe2\x9c")
	rel2, _ := f.Push("\x93b")
	if rel != "a" || rel2 != "✓b" {
		t.Fatalf("utf-8 hold back: %q %q", rel, rel2)
	}
}

func TestStreamIterator(t *testing.T) {
	m := loadTiny(t)
	c := newCtx(t, m)
	want := greedy(t, newCtx(t, m), testPrompt, 10)
	var got []Token
	for p, err := range c.Stream(context.Background(), testPrompt, WithMaxTokens(10)) {
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, p.Token)
		if len(got) == 4 {
			break
		}
	}
	if !slices.Equal(got, want.Tokens[:4]) {
		t.Fatalf("stream %v, want %v", got, want.Tokens[:4])
	}
}

func TestEmbeddings(t *testing.T) {
	m := loadTiny(t)
	c := newCtx(t, m, WithEmbeddings(PoolingMean))
	toks, _ := m.Tokenize("the cat sat", true, true)
	e1, err := c.Embeddings(context.Background(), toks)
	if err != nil {
		t.Fatal(err)
	}
	if len(e1) != m.Stats().Embedding {
		t.Fatalf("embedding of %d floats, want %d", len(e1), m.Stats().Embedding)
	}
	e2, _ := c.Embeddings(context.Background(), toks)
	if !slices.Equal(e1, e2) {
		t.Fatal("embeddings of the same text differ")
	}
	other, _ := m.Tokenize("a dog ran", true, true)
	e3, _ := c.Embeddings(context.Background(), other)
	if slices.Equal(e1, e3) {
		t.Fatal("different texts have the same embedding")
	}
	plain := newCtx(t, m)
	if _, err := plain.Embeddings(context.Background(), toks); !errors.Is(err, ErrNoEmbeddings) {
		t.Fatalf("embeddings without WithEmbeddings: %v", err)
	}
}

func TestSamplerChain(t *testing.T) {
	m := loadTiny(t)
	p := SamplerParams{Temperature: 0.8, TopK: 40, TopP: 0.9, MinP: 0.05, RepeatPenalty: 1.1, PresencePenalty: 0.2, FrequencyPenalty: 0.1, Seed: 7}
	a := greedy(t, newCtx(t, m), testPrompt, 16, WithSampling(p))
	b := greedy(t, newCtx(t, m), testPrompt, 16, WithSampling(p))
	if !slices.Equal(a.Tokens, b.Tokens) {
		t.Fatalf("same seed, different tokens: %v %v", a.Tokens, b.Tokens)
	}
	p.Seed = 8
	c := greedy(t, newCtx(t, m), testPrompt, 16, WithSampling(p))
	if slices.Equal(a.Tokens, c.Tokens) {
		t.Logf("seeds 7 and 8 gave the same tokens (possible on a tiny model)")
	}
	if _, err := NewSampler(m, SamplerParams{TopK: -1}); err == nil {
		t.Fatal("negative top_k accepted")
	}
}

func TestContextFullAndLongPrompt(t *testing.T) {
	m := loadTiny(t)
	c := newCtx(t, m, WithContextSize(64), WithBatch(16, 16))
	long := strings.Repeat("x y ", 15) // about 60 tokens: several batches of 16
	toks, _ := m.Tokenize(long, true, true)
	if len(toks) >= 64 || len(toks) < 40 {
		t.Fatalf("prompt of %d tokens does not suit the test", len(toks))
	}
	r, err := c.Generate(context.Background(), long, WithMaxTokens(1000))
	if err != nil {
		t.Fatal(err)
	}
	if r.FinishReason != FinishLength && r.FinishReason != FinishStop {
		t.Fatalf("finish %q", r.FinishReason)
	}
	// llama.cpp pads n_ctx (to 256 here): Size reports the real capacity.
	if len(c.Tokens()) > c.Size() || c.Size() < 64 {
		t.Fatalf("cache holds %d tokens in a %d-token context", len(c.Tokens()), c.Size())
	}
	t.Logf("n_ctx %d: generated %d tokens (%s)", c.Size(), len(r.Tokens), r.FinishReason)
	tooLong, _ := m.Tokenize(strings.Repeat("x y ", c.Size()), true, true)
	if _, err := c.GenerateTokens(context.Background(), tooLong); err == nil || !strings.Contains(err.Error(), "does not fit") {
		t.Fatalf("prompt longer than the context: %v", err)
	}
}
