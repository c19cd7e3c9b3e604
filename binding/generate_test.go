package binding

import (
	"bytes"
	"context"
	"errors"
	"math"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

const testPrompt = "hello there, the cat sat on the mat and then"

func greedy(t *testing.T, c *Context, prompt string, n int, opts ...GenerateOption) Result {
	t.Helper()
	r, err := c.Generate(context.Background(), prompt, append([]GenerateOption{WithMaxTokens(n)}, opts...)...)
	if err != nil {
		t.Fatalf("Generate: %v", err)
	}
	return r
}

func TestGreedyIsDeterministic(t *testing.T) {
	m := loadTiny(t)
	a := greedy(t, newCtx(t, m), testPrompt, 32)
	b := greedy(t, newCtx(t, m), testPrompt, 32)
	if len(a.Tokens) == 0 {
		t.Fatal("no tokens generated")
	}
	if !slices.Equal(a.Tokens, b.Tokens) || a.Text != b.Text {
		t.Fatalf("two greedy runs differ:\n%v\n%v", a.Tokens, b.Tokens)
	}
	// The same context again, from an empty cache, and at 1 thread.
	c1 := newCtx(t, m, WithThreads(1, 1))
	greedy(t, c1, "something else entirely", 8)
	d := greedy(t, c1, testPrompt, 32, WithoutCacheReuse())
	if !slices.Equal(a.Tokens, d.Tokens) {
		t.Fatalf("greedy run on a reused context differs:\n%v\n%v", a.Tokens, d.Tokens)
	}
}

// TestMatchesLlamaCompletion compares greedy output with the stock llama-completion of the same build
// (F32 and Q8_0, repacking off on both sides: docs/design.md §3-4).
func TestMatchesLlamaCompletion(t *testing.T) {
	src := tinyModelPath(t)
	q8 := filepath.Join(t.TempDir(), "tiny-q8_0.gguf")
	if out, err := exec.Command("llama-quantize", src, q8, "Q8_0").CombinedOutput(); err != nil {
		t.Fatalf("llama-quantize: %v\n%s", err, tail(out))
	}
	for _, path := range []string{src, q8} {
		t.Run(filepath.Base(path), func(t *testing.T) {
			const n = 32
			m, err := LoadModel(context.Background(), path, WithExtraBufts(false))
			if err != nil {
				t.Fatal(err)
			}
			defer m.Close()
			c, err := m.NewContext(WithContextSize(256), WithThreads(2, 2))
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			ours := greedy(t, c, testPrompt, n)
			out := llamaCompletion(t, "-m", path, "-p", testPrompt, "-n", "32", "--temp", "0", "-no-cnv",
				"--no-repack", "-t", "2", "-c", "256", "--no-warmup", "--seed", "1")
			// llama-completion prints pieces as C strings: a generated NUL byte vanishes.
			want := strings.ReplaceAll(testPrompt+ours.Text, "\x00", "")
			if !bytes.HasPrefix(out, []byte(want)) {
				t.Fatalf("llama-completion printed\n%q\nwe generated\n%q", out, want)
			}
			rest := strings.TrimSpace(strings.ReplaceAll(string(out[len(want):]), "[end of text]", ""))
			if rest != "" && ours.FinishReason == FinishLength {
				t.Fatalf("llama-completion generated more than we did: %q", rest)
			}
			t.Logf("%d tokens identical to llama-completion (%s)", len(ours.Tokens), ours.FinishReason)
		})
	}
}

func tail(b []byte) string {
	if len(b) > 2000 {
		b = b[len(b)-2000:]
	}
	return string(b)
}

func TestCancelStopsWithinOneToken(t *testing.T) {
	m := loadTiny(t)
	c := newCtx(t, m)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	n := 0
	r, err := c.Generate(ctx, testPrompt, WithMaxTokens(64), WithTokenCallback(func(Token, string) error {
		n++
		if n == 3 {
			cancel()
		}
		return nil
	}))
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
	if n != 3 || len(r.Tokens) != 3 {
		t.Fatalf("after cancel at token 3: %d callbacks, %d tokens", n, len(r.Tokens))
	}
	// The context stays usable, and its history holds what was evaluated.
	if got := len(c.Tokens()); got == 0 {
		t.Fatal("context lost its tokens")
	}
	greedy(t, c, testPrompt, 4)
}

func TestCallbackErrorStops(t *testing.T) {
	m := loadTiny(t)
	c := newCtx(t, m)
	stop := errors.New("enough")
	r, err := c.Generate(context.Background(), testPrompt, WithMaxTokens(64),
		WithTokenCallback(func(Token, string) error { return stop }))
	if !errors.Is(err, stop) || len(r.Tokens) != 1 {
		t.Fatalf("err=%v tokens=%d, want the callback's error after 1 token", err, len(r.Tokens))
	}
}

// TestAbortFlagAbortsDecode checks the path a cancellation takes while llama_decode runs: the flag
// set from ctx.Done() makes the compute threads abort, and the error wraps ctx.Err().
func TestAbortFlagAbortsDecode(t *testing.T) {
	m := loadTiny(t)
	c := newCtx(t, m)
	toks, err := m.Tokenize(testPrompt, true, true)
	if err != nil {
		t.Fatal(err)
	}
	b, err := NewBatch(len(toks), 1)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	for i, tk := range toks {
		b.Add(tk, i, []int{0}, i == len(toks)-1)
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	cc, _ := c.ptr()
	err = c.decode(ctx, cc, b) // skips Decode's early ctx check, so the abort callback must act
	if !errors.Is(err, ErrAborted) || !errors.Is(err, context.Canceled) {
		t.Fatalf("decode with a cancelled ctx: %v, want ErrAborted wrapping context.Canceled", err)
	}
	var be *Error
	if !errors.As(err, &be) || be.Op != "llama_decode" || be.Code != 2 {
		t.Fatalf("error %#v, want Op llama_decode Code 2", err)
	}
	// The flag is re-armed clear: the next decode runs.
	if err := c.Decode(context.Background(), b); err != nil {
		t.Fatalf("decode after abort: %v", err)
	}
}

func TestStateSaveLoadContinue(t *testing.T) {
	m := loadTiny(t)
	var fullLogits [][]float32
	full := greedy(t, newCtx(t, m), testPrompt, 16, WithLogits(func(pos int, l []float32) error {
		fullLogits = append(fullLogits, l)
		return nil
	}))
	if len(full.Tokens) < 16 {
		t.Fatalf("uninterrupted run ended early (%s after %d tokens); the test needs 16", full.FinishReason, len(full.Tokens))
	}
	first := newCtx(t, m)
	part := greedy(t, first, testPrompt, 8)
	if !slices.Equal(part.Tokens, full.Tokens[:8]) {
		t.Fatalf("first 8 tokens differ: %v vs %v", part.Tokens, full.Tokens[:8])
	}
	path := filepath.Join(t.TempDir(), "state.bin")
	if err := first.SaveState(path); err != nil {
		t.Fatal(err)
	}
	saved := first.Tokens()

	second := newCtx(t, m)
	loaded, err := second.LoadState(path)
	if err != nil {
		t.Fatal(err)
	}
	if !slices.Equal(loaded, saved) {
		t.Fatalf("loaded tokens %v, saved %v", loaded, saved)
	}
	// Continue: the cache holds the prompt and the first 7 generated tokens; the 8th is evaluated.
	var contLogits [][]float32
	prompt := append(loaded, part.Tokens[7])
	rest, err := second.GenerateTokens(context.Background(), prompt, WithMaxTokens(8), WithLogits(func(pos int, l []float32) error {
		contLogits = append(contLogits, l)
		return nil
	}))
	if err != nil {
		t.Fatal(err)
	}
	if rest.Timings.CachedTokens != len(loaded) || rest.Timings.PromptTokens != 1 {
		t.Fatalf("continuation evaluated %d tokens with %d cached, want 1 with %d", rest.Timings.PromptTokens, rest.Timings.CachedTokens, len(loaded))
	}
	if got := append(part.Tokens, rest.Tokens...); !slices.Equal(got, full.Tokens) {
		t.Fatalf("save/load/continue gave\n%v\nuninterrupted\n%v", got, full.Tokens)
	}
	// Logits after the load are bit-identical to the uninterrupted run's at the same positions.
	off := len(fullLogits) - len(contLogits)
	for i, l := range contLogits {
		if !slices.EqualFunc(l, fullLogits[off+i], func(a, b float32) bool { return math.Float32bits(a) == math.Float32bits(b) }) {
			t.Fatalf("logits at continued position %d differ from the uninterrupted run", i)
		}
	}
	// A state file of another kind is refused with an error.
	bad := filepath.Join(t.TempDir(), "bad.bin")
	os.WriteFile(bad, []byte("not a state file at all"), 0o644)
	if _, err := second.LoadState(bad); err == nil {
		t.Fatal("loading garbage as state succeeded")
	}
}

func TestQ4KVCacheIsSmaller(t *testing.T) {
	m := loadTiny(t)
	toks, err := m.Tokenize(strings.Repeat(testPrompt+" ", 4), true, true)
	if err != nil {
		t.Fatal(err)
	}
	size := func(k, v CacheType) int {
		c := newCtx(t, m, WithCacheTypes(k, v), WithFlashAttn(FlashAttnOn))
		if err := c.Eval(context.Background(), toks, nil); err != nil {
			t.Fatalf("eval with %s/%s cache: %v", k, v, err)
		}
		n, err := c.StateSize(0)
		if err != nil {
			t.Fatal(err)
		}
		return n
	}
	f16 := size(CacheF16, CacheF16)
	q8 := size(CacheQ8_0, CacheQ8_0)
	q4 := size(CacheQ4_0, CacheQ4_0)
	// Per element: f16 2 bytes, q8_0 34/32, q4_0 18/32 → ratios 0.531 and 0.281 (plus small headers).
	r8, r4 := float64(q8)/float64(f16), float64(q4)/float64(f16)
	t.Logf("state of %d tokens: f16 %d B, q8_0 %d B (%.3f), q4_0 %d B (%.3f)", len(toks), f16, q8, r8, q4, r4)
	if r4 < 0.27 || r4 > 0.31 {
		t.Fatalf("q4_0/f16 = %.3f, want about 0.281", r4)
	}
	if r8 < 0.52 || r8 > 0.55 {
		t.Fatalf("q8_0/f16 = %.3f, want about 0.531", r8)
	}
	// A quantized V cache with flash attention explicitly off is refused with a reason.
	if _, err := m.NewContext(WithCacheTypes(CacheQ4_0, CacheQ4_0), WithFlashAttn(FlashAttnOff)); err == nil || !strings.Contains(err.Error(), "flash attention") {
		t.Fatalf("q4_0 V cache without flash attention: err = %v", err)
	}
	// Auto switches flash attention on.
	c, err := m.NewContext(WithCacheTypes(CacheQ4_0, CacheQ4_0))
	if err != nil {
		t.Fatalf("q4_0 cache with flash attention auto: %v", err)
	}
	c.Close()
	if _, err := m.NewContext(WithCacheTypes("q3_x", "")); err == nil || !strings.Contains(err.Error(), "q3_x") {
		t.Fatalf("unknown cache type: err = %v", err)
	}
}
