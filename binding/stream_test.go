package binding

import (
	"context"
	"errors"
	"fmt"
	"io"
	"math"
	"strings"
	"testing"

	"github.com/expertsniper/expertsniper/modelgen/testmodels"
	"github.com/expertsniper/expertsniper/sniper"
	"github.com/expertsniper/expertsniper/sniper/faultfs"
	"github.com/expertsniper/expertsniper/stream"
)

// loadStreamed loads path with its experts (or dense FFNs) streamed: the stream package's Weights
// place the tensors and watch the graph through LoadFromUser (what engine/local does).
func loadStreamed(ctx context.Context, path string, o stream.Options) (*Model, *stream.Weights, error) {
	w, err := stream.Open(path, o)
	if err != nil {
		return nil, nil, err
	}
	m, err := LoadFromUser(ctx, path, w)
	if err != nil {
		return nil, nil, err
	}
	return m, w, nil
}

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
		m, w, err := loadStreamed(ctx, path, stream.Options{CacheBudget: budget})
		if err != nil {
			t.Fatal(err)
		}
		got, err := evalLogits(t, m, prompt, 8, 2)
		if err != nil {
			t.Fatal(err)
		}
		sameLogits(t, "sniper", want, got)
		st := w.Sniper().Stats()
		info := w.Info()
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
		m, _, err := loadStreamed(ctx, path, stream.Options{FS: faultfs.Wrap(sniper.DirectFS{}, inj)})
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

// batchLogits decodes, in one context, sequences prompts[s] in parallel (sequence s, one batch per
// chunk of n_batch tokens split into micro-batches of n_ubatch) and returns every logit row.
func batchLogits(t *testing.T, m *Model, prompts [][]Token, nBatch, nUBatch int) [][]float32 {
	t.Helper()
	total := 0
	for _, p := range prompts {
		total += len(p)
	}
	c, err := m.NewContext(WithContextSize(total+16), WithBatch(nBatch, nUBatch), WithSequences(len(prompts)), WithThreads(2, 2))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	b, err := NewBatch(nBatch, len(prompts))
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	// Interleave the sequences token by token, as a server batching several requests does.
	type item struct{ seq, pos int }
	var order []item
	for pos := 0; ; pos++ {
		added := false
		for s, p := range prompts {
			if pos < len(p) {
				order = append(order, item{s, pos})
				added = true
			}
		}
		if !added {
			break
		}
	}
	var rows [][]float32
	for start := 0; start < len(order); start += nBatch {
		b.Clear()
		end := min(start+nBatch, len(order))
		for _, it := range order[start:end] {
			if err := b.Add(prompts[it.seq][it.pos], it.pos, []int{it.seq}, true); err != nil {
				t.Fatal(err)
			}
		}
		if err := c.Decode(context.Background(), b); err != nil {
			t.Fatal(err)
		}
		for i := 0; i < end-start; i++ {
			l, err := c.Logits(i)
			if err != nil {
				t.Fatal(err)
			}
			rows = append(rows, l)
		}
	}
	return rows
}

// TestStreamedLongPromptAndSeveralSequences: prefill of a prompt longer than a micro-batch, and of
// three sequences interleaved in one batch, touches the union of many experts per micro-batch.
func TestStreamedLongPromptAndSeveralSequences(t *testing.T) {
	path := tinyModelPath(t)
	ctx := context.Background()
	ram, err := LoadModel(ctx, path, WithExtraBufts(false))
	if err != nil {
		t.Fatal(err)
	}
	defer ram.Close()
	text := strings.Repeat("a long prompt about experts, routers and disks; ", 12)
	long, err := ram.Tokenize(text, false, false)
	if err != nil {
		t.Fatal(err)
	}
	if len(long) < 300 {
		t.Fatalf("long prompt has only %d tokens", len(long))
	}
	var seqs [][]Token
	for _, s := range []string{"first sequence of tokens", "the second one, a little longer than the first", "third"} {
		toks, err := ram.Tokenize(s, false, false)
		if err != nil {
			t.Fatal(err)
		}
		seqs = append(seqs, toks)
	}
	cases := []struct {
		name            string
		prompts         [][]Token
		nBatch, nUBatch int
	}{
		{"long prompt, micro-batches of 128", [][]Token{long}, 256, 128},
		{"three sequences in one batch", seqs, 64, 64},
		{"three sequences, micro-batches of 16", seqs, 64, 16},
	}
	for _, c := range cases {
		want := batchLogits(t, ram, c.prompts, c.nBatch, c.nUBatch)
		for _, budget := range []int64{0, sniper.Unlimited} {
			m, _, err := loadStreamed(ctx, path, stream.Options{CacheBudget: budget})
			if err != nil {
				t.Fatal(err)
			}
			got := batchLogits(t, m, c.prompts, c.nBatch, c.nUBatch)
			sameLogits(t, c.name, want, got)
			if err := m.Close(); err != nil {
				t.Fatal(err)
			}
		}
	}
}

func TestLoadStreamedRejectsBadInput(t *testing.T) {
	ctx := context.Background()
	if _, _, err := loadStreamed(ctx, "/nonexistent/model.gguf", stream.Options{}); err == nil || !strings.Contains(err.Error(), "/nonexistent/model.gguf") {
		t.Fatalf("missing file: %v", err)
	}
	if _, _, err := loadStreamed(ctx, tinyModelPath(t), stream.Options{Mode: sniper.ModeDense}); err == nil || !strings.Contains(err.Error(), "no tensors to stream") {
		t.Fatalf("dense mode on a MoE model: %v", err)
	}
	// A failed open of the model file for streaming names the file.
	inj := faultfs.InjectorFunc(func(op faultfs.Op) faultfs.Fault {
		if op.Kind == faultfs.OpOpen {
			return faultfs.Fault{Err: faultfs.ErrInjected}
		}
		return faultfs.Fault{}
	})
	if _, _, err := loadStreamed(ctx, tinyModelPath(t), stream.Options{FS: faultfs.Wrap(sniper.DirectFS{}, inj)}); err == nil || !errors.Is(err, faultfs.ErrInjected) {
		t.Fatalf("failed open: %v", err)
	}
	// A required tensor missing from the file is an error, not a tensor of zeros (only optional
	// biases and scales get neutral fills).
	missing := testmodels.Patched(t, "qwen3moe-q8_0", testmodels.RenameTensor("blk.0.attn_q.weight", "blk.0.attn_x.weight"))
	if _, _, err := loadStreamed(ctx, missing, stream.Options{}); err == nil || !strings.Contains(err.Error(), "blk.0.attn_q.weight is missing") {
		t.Fatalf("missing required tensor: %v", err)
	}
	// Metadata llama.cpp would abort() on is refused first, as LoadModel does.
	noHeads := testmodels.Patched(t, "qwen3moe-q8_0", testmodels.SetUint32("qwen3moe.attention.head_count", 0))
	if _, _, err := loadStreamed(ctx, noHeads, stream.Options{}); err == nil || !strings.Contains(err.Error(), noHeads) {
		t.Fatalf("zero attention heads: %v", err)
	}
}

// TestStreamedContextsDecodeConcurrently: two contexts of one streamed model decode at the same time
// with no cache; each context's working set is pinned for it, so both stay bit-exact.
func TestStreamedContextsDecodeConcurrently(t *testing.T) {
	path := tinyModelPath(t)
	ctx := context.Background()
	ram, err := LoadModel(ctx, path, WithExtraBufts(false))
	if err != nil {
		t.Fatal(err)
	}
	defer ram.Close()
	prompts := [][]Token{streamPrompt(t, ram)}
	other, err := ram.Tokenize("a different prompt, so that the two contexts pick other experts", false, false)
	if err != nil {
		t.Fatal(err)
	}
	prompts = append(prompts, other)
	var want [2][][]float32
	for i, p := range prompts {
		if want[i], err = evalLogits(t, ram, p, 6, 1); err != nil {
			t.Fatal(err)
		}
	}
	m, _, err := loadStreamed(ctx, path, stream.Options{CacheBudget: 0})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	for round := 0; round < 3; round++ {
		var got [2][][]float32
		var errs [2]error
		done := make(chan int)
		for i := range prompts {
			go func(i int) {
				got[i], errs[i] = evalLogits(t, m, prompts[i], 6, 1)
				done <- i
			}(i)
		}
		<-done
		<-done
		for i := range prompts {
			if errs[i] != nil {
				t.Fatal(errs[i])
			}
			sameLogits(t, fmt.Sprintf("context %d, round %d", i, round), want[i], got[i])
		}
	}
}
