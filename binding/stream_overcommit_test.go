//go:build linux

package binding

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"regexp"
	"sync"
	"testing"

	"github.com/expertsniper/expertsniper/gguf"
	"github.com/expertsniper/expertsniper/sniper"
	"github.com/expertsniper/expertsniper/stream"
)

// sparseWriter writes to a file but turns runs of zeros into holes (like cp --sparse), so a model
// with tens of GB of zero experts costs no disk. Only for the load test below: holes read as zeros
// and prove nothing about I/O speed.
type sparseWriter struct {
	f    *os.File
	pos  int64
	zero []byte
}

func (s *sparseWriter) Write(p []byte) (int, error) {
	n := len(p)
	for len(p) > 0 {
		c := min(len(p), len(s.zero))
		if bytes.Equal(p[:c], s.zero[:c]) {
			s.pos += int64(c)
		} else {
			if _, err := s.f.WriteAt(p[:c], s.pos); err != nil {
				return 0, err
			}
			s.pos += int64(c)
		}
		p = p[c:]
	}
	return n, nil
}

// writeHugeExpertModel rewrites the tiny test model with 512 experts of a much larger FFN, all zero
// (router included), so that the expert tensors add up to more than RAM + swap.
func writeHugeExpertModel(t *testing.T, src, dst string, nExpert, nFF int) int64 {
	t.Helper()
	in, err := gguf.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	srcFile, err := os.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	defer srcFile.Close()
	out, err := os.Create(dst)
	if err != nil {
		t.Fatal(err)
	}
	defer out.Close()
	sw := &sparseWriter{f: out, zero: make([]byte, 1<<20)}
	w := gguf.NewWriter(sw)
	arch := in.Architecture()
	for _, kv := range in.KVs {
		v := kv.Value
		switch kv.Key {
		case arch + ".expert_count":
			v = uint32(nExpert)
		case arch + ".expert_feed_forward_length":
			v = uint32(nFF)
		}
		if err := w.AddKV(kv.Key, v); err != nil {
			t.Fatal(err)
		}
	}
	expertRE := regexp.MustCompile(`ffn_(gate|up|down)_exps\.weight$`)
	zeroFill := func(n int64) gguf.FillFunc {
		return func(ctx context.Context, w io.Writer) error {
			for n > 0 {
				c := min(n, int64(len(sw.zero)))
				if _, err := w.Write(sw.zero[:c]); err != nil {
					return err
				}
				n -= c
			}
			return nil
		}
	}
	var expertBytes int64
	for _, ti := range in.Tensors {
		dims := append([]int64(nil), ti.Dims...)
		var fill gguf.FillFunc
		switch {
		case expertRE.MatchString(ti.Name):
			nEmbd := ti.Dims[0]
			if regexp.MustCompile(`down_exps`).MatchString(ti.Name) {
				nEmbd = ti.Dims[1]
				dims[0], dims[1] = int64(nFF), nEmbd
			} else {
				dims[1] = int64(nFF)
			}
			dims[2] = int64(nExpert)
			n := gguf.TensorInfo{Type: ti.Type, Dims: dims}.Bytes()
			expertBytes += n
			fill = zeroFill(n)
		case regexp.MustCompile(`ffn_gate_inp\.weight$`).MatchString(ti.Name):
			dims[1] = int64(nExpert)
			fill = zeroFill(gguf.TensorInfo{Type: ti.Type, Dims: dims}.Bytes())
		default:
			off, size := in.TensorFileOffset(ti), ti.Bytes()
			fill = func(ctx context.Context, w io.Writer) error {
				_, err := io.Copy(w, io.NewSectionReader(srcFile, off, size))
				return err
			}
		}
		if err := w.AddTensor(ti.Name, ti.Type, dims, fill); err != nil {
			t.Fatal(err)
		}
	}
	if err := w.Write(context.Background()); err != nil {
		t.Fatal(err)
	}
	if err := out.Truncate(sw.pos); err != nil {
		t.Fatal(err)
	}
	return expertBytes
}

func memTotal(t *testing.T) int64 {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		t.Fatal(err)
	}
	var total, swap int64
	for _, line := range bytes.Split(b, []byte("\n")) {
		var kb int64
		if n, _ := fmt.Sscanf(string(line), "MemTotal: %d kB", &kb); n == 1 {
			total = kb << 10
		}
		if n, _ := fmt.Sscanf(string(line), "SwapTotal: %d kB", &kb); n == 1 {
			swap = kb << 10
		}
	}
	return total + swap
}

// hugeExpertModel writes (sparsely) the tiny test model with 512 experts per layer whose FFN is sized
// so that the experts exceed RAM + swap by an eighth, and returns its path and RAM + swap.
func hugeExpertModel(t *testing.T) (string, int64) {
	t.Helper()
	limit := memTotal(t)
	path := filepath.Join(t.TempDir(), "huge-experts.gguf")
	in, err := gguf.Open(tinyModelPath(t))
	if err != nil {
		t.Fatal(err)
	}
	layers, _ := in.ArchUint("block_count")
	embd, _ := in.ArchUint("embedding_length")
	perFF := int64(layers) * 512 * 3 * int64(embd) * 4 // bytes per unit of expert FFN length (F32)
	nFF := int((limit+limit/8)/perFF/256+1) * 256
	experts := writeHugeExpertModel(t, tinyModelPath(t), path, 512, nFF)
	if experts <= limit {
		t.Fatalf("expert bytes %d not above RAM + swap %d", experts, limit)
	}
	t.Logf("experts: %.1f GiB (RAM + swap %.1f GiB), expert FFN %d", float64(experts)/(1<<30), float64(limit)/(1<<30), nFF)
	return path, limit
}

// TestStreamedModelLargerThanRAMLoadsAndRuns: llama.cpp allocates all weights in one block; with
// experts bigger than RAM + swap the kernel's overcommit check would refuse it. The hook serves that
// allocation with unreserved memory whose expert part is never touched.
func TestStreamedModelLargerThanRAMLoadsAndRuns(t *testing.T) {
	path, _ := hugeExpertModel(t)
	before, allocs := sniper.CurrentRSS(), bigAllocations()
	m, w, err := loadStreamed(context.Background(), path, stream.Options{CacheBudget: 0})
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if bigAllocations() == allocs {
		t.Fatal("llama.cpp's weight allocation did not go through the hook's unreserved mapping")
	}
	res, st, err := generateTwo(m, w.Sniper())
	if err != nil {
		t.Fatal(err)
	}
	rss := sniper.CurrentRSS()
	t.Logf("generated %d tokens; RSS %d MiB → %d MiB; read %d MiB of experts", res.Timings.Generated, before>>20, rss>>20, st.BytesRead>>20)
	if rss-before > 2<<30 {
		t.Fatalf("RSS grew by %d MiB: the expert part of llama.cpp's allocation was touched", (rss-before)>>20)
	}
}

// generateTwo generates two tokens with m and checks that its sniper sn read experts.
func generateTwo(m *Model, sn *sniper.Sniper) (Result, sniper.Stats, error) {
	c, err := m.NewContext(WithContextSize(64), WithThreads(2, 2))
	if err != nil {
		return Result{}, sniper.Stats{}, err
	}
	defer c.Close()
	res, err := c.Generate(context.Background(), "hello", WithMaxTokens(2))
	if err != nil {
		return res, sniper.Stats{}, err
	}
	st := sn.Stats()
	if st.Misses == 0 {
		return res, st, errors.New("no expert was read")
	}
	return res, st, nil
}

// TestTwoStreamedLoadsAtOnce: the allocator interposition (bigalloc.c) is armed per load, as a count,
// so two streamed loads in one process, each with experts larger than RAM + swap, may overlap: neither
// load's end disarms the other's allocation (with a flag, the second allocation fell to glibc and the
// overcommit check refused it). Both models then run side by side, and unload.
func TestTwoStreamedLoadsAtOnce(t *testing.T) {
	path, _ := hugeExpertModel(t)
	allocs := bigAllocations()
	models := make([]*Model, 2)
	weights := make([]*stream.Weights, 2)
	errs := make([]error, 2)
	var wg sync.WaitGroup
	for i := range models {
		wg.Add(1)
		go func() {
			defer wg.Done()
			models[i], weights[i], errs[i] = loadStreamed(context.Background(), path, stream.Options{CacheBudget: 0})
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("load %d: %v", i, err)
		}
		defer models[i].Close()
	}
	if got := bigAllocations() - allocs; got < 2 {
		t.Fatalf("%d of the two loads' weight allocations went through the unreserved mapping", got)
	}
	texts := make([]string, 2)
	for i, m := range models {
		wg.Add(1)
		go func() {
			defer wg.Done()
			res, _, err := generateTwo(m, weights[i].Sniper())
			texts[i], errs[i] = res.Text, err
		}()
	}
	wg.Wait()
	for i, err := range errs {
		if err != nil {
			t.Fatalf("model %d: %v", i, err)
		}
	}
	if texts[0] != texts[1] {
		t.Fatalf("the two loads of one model answered %q and %q", texts[0], texts[1])
	}
}
