package binding

import (
	"context"
	"strings"
	"testing"

	"github.com/expertsniper/expertsniper/modelgen/testmodels"
)

// Benchmarks print tokens per second for the binding's two hot paths on a generated model:
//
//	./build.sh exec go test ./binding/ -run '^$' -bench . -benchtime 20x
//
// They measure the binding's overhead over llama.cpp on tiny models, not model speed.

func benchModel(b *testing.B) (*Model, *Context) {
	m, err := LoadModel(context.Background(), testmodels.Path(b, "qwen3moe-q8_0"), WithExtraBufts(false))
	if err != nil {
		b.Fatal(err)
	}
	c, err := m.NewContext(WithContextSize(1024), WithThreads(2, 2))
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { c.Close(); m.Close() })
	return m, c
}

func BenchmarkPromptEval(b *testing.B) {
	m, c := benchModel(b)
	toks, err := m.Tokenize(strings.Repeat("the cat sat on the mat. ", 40), true, true)
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		c.ClearMemory()
		if err := c.Eval(context.Background(), toks, nil); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(len(toks)*b.N)/b.Elapsed().Seconds(), "tok/s")
}

func BenchmarkGenerate(b *testing.B) {
	_, c := benchModel(b)
	const n = 64
	generated := 0
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		r, err := c.Generate(context.Background(), "hello there", WithMaxTokens(n), WithoutCacheReuse())
		if err != nil {
			b.Fatal(err)
		}
		generated += len(r.Tokens)
	}
	b.ReportMetric(float64(generated)/b.Elapsed().Seconds(), "tok/s")
}
