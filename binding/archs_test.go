package binding

import (
	"bytes"
	"context"
	"path/filepath"
	"slices"
	"testing"

	"github.com/expertsniper/expertsniper/modelgen"
	"github.com/expertsniper/expertsniper/modelgen/testmodels"
)

// TestEveryArchitecture runs the binding's core promises on the project's generated models of every
// architecture (qwen35moe is hybrid-recurrent: its memory cannot drop a suffix, which exercises the
// fallback paths): greedy determinism, agreement with llama-completion, and save/load/continue.
func TestEveryArchitecture(t *testing.T) {
	for _, arch := range modelgen.Archs {
		for _, typ := range []string{"f32", "q8_0"} {
			name := arch + "-" + typ
			t.Run(name, func(t *testing.T) {
				path := testmodels.Path(t, name)
				m, err := LoadModel(context.Background(), path, WithExtraBufts(false))
				if err != nil {
					t.Fatal(err)
				}
				// Cleanups run last-in first-out: the contexts registered below close before the model.
				t.Cleanup(func() {
					if err := m.Close(); err != nil {
						t.Error(err)
					}
				})
				run := func(n int) (*Context, Result) {
					c, err := m.NewContext(WithContextSize(256), WithThreads(2, 2))
					if err != nil {
						t.Fatal(err)
					}
					t.Cleanup(func() { c.Close() })
					r, err := c.Generate(context.Background(), testPrompt, WithMaxTokens(n))
					if err != nil {
						t.Fatal(err)
					}
					return c, r
				}
				_, a := run(16)
				_, b := run(16)
				if len(a.Tokens) == 0 || !slices.Equal(a.Tokens, b.Tokens) {
					t.Fatalf("greedy runs differ or are empty: %v / %v", a.Tokens, b.Tokens)
				}
				// llama-completion prints pieces as C strings: a generated NUL byte vanishes. It is asked
				// for 16 tokens more than are compared (greedy: the first 16 are the same), so that a tail
				// it loses at exit (see llamaCompletionHolding) falls outside the comparison.
				want := bytes.ReplaceAll([]byte(testPrompt+a.Text), []byte{0}, nil)
				out := llamaCompletionHolding(t, want, "-m", path, "-p", testPrompt, "-n", "32", "--temp", "0", "-no-cnv",
					"--no-repack", "-t", "2", "-c", "256", "--no-warmup")
				if !bytes.HasPrefix(out, want) {
					t.Fatalf("llama-completion printed %q, we generated %q", out, testPrompt+a.Text)
				}
				if len(a.Tokens) < 16 {
					t.Logf("generation ended after %d tokens (%s): no continuation to check", len(a.Tokens), a.FinishReason)
					return
				}
				first, part := run(8)
				state := filepath.Join(t.TempDir(), "state")
				if err := first.SaveState(state); err != nil {
					t.Fatal(err)
				}
				second, err := m.NewContext(WithContextSize(256), WithThreads(2, 2))
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { second.Close() })
				loaded, err := second.LoadState(state)
				if err != nil {
					t.Fatal(err)
				}
				rest, err := second.GenerateTokens(context.Background(), append(loaded, part.Tokens[7]), WithMaxTokens(8))
				if err != nil {
					t.Fatal(err)
				}
				if got := append(part.Tokens, rest.Tokens...); !slices.Equal(got, a.Tokens) {
					t.Fatalf("save/load/continue %v, uninterrupted %v", got, a.Tokens)
				}
				if rest.Timings.PromptTokens != 1 {
					t.Fatalf("continuation evaluated %d prompt tokens, want 1", rest.Timings.PromptTokens)
				}
			})
		}
	}
}
