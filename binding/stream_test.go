package binding

import (
	"context"
	"errors"
	"io"
	"math"
	"strings"
	"testing"

	"github.com/expertsniper/expertsniper/sniper"
	"github.com/expertsniper/expertsniper/sniper/faultfs"
)

// evalLogits evaluates prompt then generates n tokens greedily, returning the logits of every
// evaluated position (prompt and generated), in order.
func evalLogits(t *testing.T, m *Model, prompt []Token, n, threads int) ([][]float32, error) {
	t.Helper()
	c, err := m.NewContext(WithContextSize(128), WithThreads(threads, threads))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	var all [][]float32
	collect := func(_ int, l []float32) error { all = append(all, l); return nil }
	ctx := context.Background()
	if err := c.Eval(ctx, prompt, collect); err != nil {
		return all, err
	}
	for i := 0; i < n; i++ {
		last := all[len(all)-1]
		best := 0
		for j, v := range last {
			if v > last[best] {
				best = j
			}
		}
		if err := c.Eval(ctx, []Token{Token(best)}, collect); err != nil {
			return all, err
		}
	}
	return all, nil
}

func sameLogits(t *testing.T, what string, want, got [][]float32) {
	t.Helper()
	if len(want) != len(got) {
		t.Fatalf("%s: %d positions, want %d", what, len(got), len(want))
	}
	for i := range want {
		for j := range want[i] {
			if math.Float32bits(want[i][j]) != math.Float32bits(got[i][j]) {
				t.Fatalf("%s: position %d logit %d = %v, in RAM %v (not bit-exact)", what, i, j, got[i][j], want[i][j])
			}
		}
	}
}

func streamPrompt(t *testing.T, m *Model) []Token {
	toks, err := m.Tokenize("The quick brown fox jumps over the lazy dog and then some more words follow here", false, false)
	if err != nil {
		t.Fatal(err)
	}
	return toks
}

func TestStreamedExpertsAreBitExact(t *testing.T) {
	path := tinyModelPath(t)
	ctx := context.Background()
	ram, err := LoadModel(ctx, path, WithExtraBufts(false))
	if err != nil {
		t.Fatal(err)
	}
	defer ram.Close()
	prompt := streamPrompt(t, ram)
	want, err := evalLogits(t, ram, prompt, 8, 2)
	if err != nil {
		t.Fatal(err)
	}
	for _, budget := range []int64{0, 1 << 16, sniper.Unlimited} {
		m, err := LoadStreamed(ctx, path, StreamOptions{CacheBudget: budget})
		if err != nil {
			t.Fatal(err)
		}
		got, err := evalLogits(t, m, prompt, 8, 2)
		if err != nil {
			t.Fatal(err)
		}
		sameLogits(t, "sniper", want, got)
		st := m.Sniper().Stats()
		info, _ := m.StreamInfo()
		t.Logf("budget %d: %d ensures, hits %d misses %d, read %d bytes (%d issued), pinned %d streamed %d",
			budget, st.Ensures, st.Hits, st.Misses, st.BytesRead, st.BytesIssued, info.PinnedBytes, info.StreamedBytes)
		if st.Ensures == 0 || st.Misses == 0 {
			t.Fatal("the router hook never ran")
		}
		if err := m.Close(); err != nil {
			t.Fatal(err)
		}
	}
}

func TestStreamedReadErrorStopsDecode(t *testing.T) {
	path := tinyModelPath(t)
	ctx := context.Background()
	for _, kind := range []string{"eio", "short"} {
		pred := faultfs.OnIndex(5, faultfs.Reads)
		inj := faultfs.EIO(pred)
		if kind == "short" {
			inj = faultfs.ShortRead(pred)
		}
		m, err := LoadStreamed(ctx, path, StreamOptions{FS: faultfs.Wrap(sniper.DirectFS{}, inj)})
		if err != nil {
			t.Fatal(err)
		}
		_, err = evalLogits(t, m, streamPrompt(t, m), 4, 1)
		if err == nil {
			t.Fatalf("%s: decode succeeded despite a failed read", kind)
		}
		var re *sniper.ReadError
		if !errors.As(err, &re) || re.Path != path || !strings.Contains(err.Error(), "offset") {
			t.Fatalf("%s: error does not name the file and offset: %v", kind, err)
		}
		if kind == "short" && !errors.Is(err, io.ErrUnexpectedEOF) {
			t.Fatalf("short: %v", err)
		}
		if !errors.Is(err, ErrAborted) {
			t.Fatalf("%s: %v is not ErrAborted", kind, err)
		}
		t.Logf("%s: %v", kind, err)
		m.Close()
	}
}
