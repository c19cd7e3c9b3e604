package repl

import (
	"os"
	"path/filepath"
	"testing"
)

// Models pulled with `agent pull` resolve by their hub name in /model and -m.
func TestResolveModelFindsPulledModels(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("EXPERTSNIPER_MODELS", dir)
	want := filepath.Join(dir, "org", "Tiny-GGUF", "Tiny-Q4_0.gguf")
	os.MkdirAll(filepath.Dir(want), 0o755)
	if err := os.WriteFile(want, []byte("GGUF"), 0o644); err != nil {
		t.Fatal(err)
	}
	c := &Config{}
	for _, name := range []string{"org/Tiny-GGUF:Q4_0", "Tiny-GGUF:q4_0", "org/Tiny-GGUF"} {
		m, err := c.ResolveModel(name)
		if err != nil || m.Path != want || m.Name != name {
			t.Errorf("ResolveModel(%q) = %+v, %v; want path %s", name, m, err, want)
		}
	}
	if _, err := c.ResolveModel("org/Other:Q4_0"); err == nil {
		t.Error("a model that is neither configured nor pulled resolved")
	}
}
