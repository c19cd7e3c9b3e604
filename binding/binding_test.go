package binding

import (
	"context"
	"os"
	"testing"
)

func TestMain(m *testing.M) {
	code := m.Run()
	if tinyDir != "" {
		os.RemoveAll(tinyDir)
	}
	os.Exit(code)
}

// loadTiny loads the generated model with use_extra_bufts=false (the plain numeric path).
func loadTiny(t *testing.T, opts ...ModelOption) *Model {
	t.Helper()
	if testing.Verbose() && os.Getenv("BINDING_LOG") != "" {
		SetLogger(LogDebug, func(l LogLevel, msg string) { t.Logf("llama[%s] %s", l, msg) })
	}
	m, err := LoadModel(context.Background(), tinyModelPath(t), append([]ModelOption{WithExtraBufts(false)}, opts...)...)
	if err != nil {
		t.Fatalf("LoadModel: %v", err)
	}
	t.Cleanup(func() {
		if err := m.Close(); err != nil {
			t.Errorf("Model.Close: %v", err)
		}
	})
	return m
}

func newCtx(t *testing.T, m *Model, opts ...ContextOption) *Context {
	t.Helper()
	c, err := m.NewContext(append([]ContextOption{WithContextSize(256), WithThreads(2, 2)}, opts...)...)
	if err != nil {
		t.Fatalf("NewContext: %v", err)
	}
	t.Cleanup(func() { c.Close() })
	return c
}

func TestLoadAndGenerateSmoke(t *testing.T) {
	m := loadTiny(t)
	st := m.Stats()
	t.Logf("arch=%s desc=%q stats=%+v template=%v", m.Architecture(), m.Description(), st, m.ChatTemplate() != "")
	c := newCtx(t, m)
	r, err := c.Generate(context.Background(), "hello there", WithMaxTokens(16))
	if err != nil {
		t.Fatalf("Generate: %v", err)
	}
	t.Logf("result %q tokens=%v finish=%s timings=%+v", r.Text, r.Tokens, r.FinishReason, r.Timings)
}
