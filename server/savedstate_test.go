package server

import (
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/expertsniper/expertsniper/server/internal/fakeengine"
)

// Saved contexts and slot files hold prompts: 0600 files in 0700 directories, and an existing
// directory that was group- or world-readable is made private.
func TestSavedStateIsPrivate(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "contexts")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	fake := fakeengine.New(2, 4096)
	ts := newTestServer(t, fake, func(c *Config) { c.ContextDir = dir })
	resp, body := ts.do(t, "POST", "/v1/context/save", map[string]any{"name": "doc", "prompt": "a private document"})
	if resp.StatusCode != 200 {
		t.Fatalf("save: %d %s", resp.StatusCode, body)
	}
	ts.do(t, "POST", "/completion", map[string]any{"prompt": "private chat", "n_predict": 1, "id_slot": 1})
	resp, body = ts.do(t, "POST", "/slots/1?action=save", map[string]any{"filename": "s1"})
	if resp.StatusCode != 200 {
		t.Fatalf("slot save: %d %s", resp.StatusCode, body)
	}
	files := 0
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		fi, err := d.Info()
		if err != nil {
			return err
		}
		want := fs.FileMode(0o600)
		if d.IsDir() {
			want = 0o700
		} else {
			files++
		}
		if fi.Mode().Perm() != want {
			t.Errorf("%s has mode %v, want %v", path, fi.Mode().Perm(), want)
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if files != 4 { // doc.json, doc.state, slots/s1, slots/.s1.text: no temp file left
		t.Errorf("%d files in the context directory, want 4", files)
	}
}

// A saved context belongs to the model that wrote it, whatever its file is called: another model
// under the same file name neither loads nor resumes it.
func TestSavedContextNotResumedByAnotherModelOfTheSameName(t *testing.T) {
	dir := t.TempDir()
	ts := newTestServer(t, fakeengine.New(1, 1<<16), func(c *Config) { c.ContextDir = dir })
	doc := strings.Repeat("A long manual. ", 50)
	if resp, body := ts.do(t, "POST", "/v1/context/save", map[string]any{"name": "manual", "prompt": doc}); resp.StatusCode != 200 {
		t.Fatalf("save: %d %s", resp.StatusCode, body)
	}

	other := fakeengine.New(1, 1<<16)
	other.SetFingerprint("sha256:another-model")
	if other.Info().Name != ts.fake.Info().Name {
		t.Fatal("the two fakes must share a file name")
	}
	ts2 := newTestServer(t, other, func(c *Config) { c.ContextDir = dir })
	resp, body := ts2.do(t, "POST", "/v1/context/load", map[string]any{"name": "manual"})
	e := expectError(t, resp, body, 409, "invalid_request_error")
	if !strings.Contains(e["message"].(string), "another model") {
		t.Errorf("message %q should say the context belongs to another model", e["message"])
	}
	resp, body = ts2.do(t, "POST", "/completion", map[string]any{"prompt": doc + "Q", "n_predict": 1})
	if resp.StatusCode != 200 || resp.Header.Get(resumedHeader) != "" {
		t.Fatalf("another model resumed the context: %d %q %s", resp.StatusCode, resp.Header.Get(resumedHeader), body)
	}
	if cached := decode[map[string]any](t, body)["tokens_cached"].(float64); cached != 0 {
		t.Errorf("another model reused %v cached tokens", cached)
	}

	// The model that saved it still resumes it.
	ts3 := newTestServer(t, fakeengine.New(1, 1<<16), func(c *Config) { c.ContextDir = dir })
	resp, body = ts3.do(t, "POST", "/completion", map[string]any{"prompt": doc + "Q", "n_predict": 1})
	if resp.StatusCode != 200 || resp.Header.Get(resumedHeader) != "manual" {
		t.Fatalf("the same model did not resume: %d %q %s", resp.StatusCode, resp.Header.Get(resumedHeader), body)
	}

	// Slot files too.
	ts3.do(t, "POST", "/slots/0?action=save", map[string]any{"filename": "s0"})
	resp, body = newTestServer(t, other, func(c *Config) { c.ContextDir = dir }).do(t, "POST", "/slots/0?action=restore", map[string]any{"filename": "s0"})
	expectError(t, resp, body, 409, "invalid_request_error")
}

// Saves of one name at the same time all succeed, one after the other, and leave metadata that
// matches the state file (before, they shared one temp file: 500s and mismatched metadata).
func TestConcurrentSavesOfOneName(t *testing.T) {
	dir := t.TempDir()
	fake := fakeengine.New(4, 4096)
	fake.SaveDelay = 50 * time.Millisecond
	ts := newTestServer(t, fake, func(c *Config) { c.ContextDir = dir })
	var wg sync.WaitGroup
	statuses := make([]int, 4)
	for i := range statuses {
		wg.Add(1)
		go func() {
			defer wg.Done()
			resp, body := ts.do(t, "POST", "/v1/context/save", map[string]any{"name": "same", "prompt": strings.Repeat(string(rune('a'+i)), 10+i)})
			statuses[i] = resp.StatusCode
			if resp.StatusCode != 200 {
				t.Errorf("save %d: %d %s", i, resp.StatusCode, body)
			}
		}()
	}
	wg.Wait()
	resp, body := ts.do(t, "POST", "/v1/context/load", map[string]any{"name": "same", "id_slot": 0})
	if resp.StatusCode != 200 {
		t.Fatalf("load: %d %s", resp.StatusCode, body)
	}
	v := decode[map[string]any](t, body)
	info := v["loaded"].(map[string]any)
	if v["tokens"].(float64) != info["tokens"].(float64) || fake.SlotKV(0)[:1] != info["prompt_preview"].(string)[:1] {
		t.Fatalf("metadata %v does not describe the state (%q)", info, fake.SlotKV(0))
	}
	entries, _ := os.ReadDir(dir)
	for _, e := range entries {
		if strings.HasPrefix(e.Name(), ".") {
			t.Errorf("temp file %s left behind", e.Name())
		}
	}
}

// A slot file named like another's sidecar ("a.txt" next to "a") no longer overwrites it.
func TestSlotFileNamesCannotCollideWithSidecars(t *testing.T) {
	fake := fakeengine.New(2, 4096)
	ts := newTestServer(t, fake)
	ts.do(t, "POST", "/completion", map[string]any{"prompt": "first conversation", "n_predict": 1, "id_slot": 0})
	ts.do(t, "POST", "/completion", map[string]any{"prompt": "second conversation", "n_predict": 1, "id_slot": 1})
	for slot, name := range []string{"a", "a.txt"} {
		resp, body := ts.do(t, "POST", "/slots/"+string(rune('0'+slot))+"?action=save", map[string]any{"filename": name})
		if resp.StatusCode != 200 {
			t.Fatalf("save %s: %d %s", name, resp.StatusCode, body)
		}
	}
	want := fake.SlotKV(0)
	resp, body := ts.do(t, "POST", "/slots/1?action=restore", map[string]any{"filename": "a"})
	if resp.StatusCode != 200 {
		t.Fatalf("restore: %d %s", resp.StatusCode, body)
	}
	if got := fake.SlotKV(1); got != want {
		t.Fatalf("restored slot holds %q, want %q", got, want)
	}
}
