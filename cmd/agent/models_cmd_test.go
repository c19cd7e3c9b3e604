package main

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/expertsniper/expertsniper/modelgen/testmodels"
	"github.com/expertsniper/expertsniper/plan"
)

func runAgentForTest(t *testing.T, args ...string) (stdout, stderr string, code exitCode) {
	t.Helper()
	var out, errOut bytes.Buffer
	streams := &IOStreams{In: strings.NewReader(""), Out: &out, ErrOut: &errOut}
	code = run(context.Background(), append([]string{"agent"}, args...), streams)
	return out.String(), errOut.String(), code
}

// TestPullModelsInspect drives the three commands the way a user does: pull a model from a hub (a
// local server with the hub's API shape, serving a generated model), list it, inspect it by name.
func TestPullModelsInspect(t *testing.T) {
	model, err := os.ReadFile(testmodels.Path(t, "qwen3moe-q4_0"))
	if err != nil {
		t.Fatal(err)
	}
	sum := sha256.Sum256(model)
	sha := hex.EncodeToString(sum[:])
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/models/test-org/Tiny-GGUF/tree/main", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, `[{"type":"file","path":"Tiny-Q4_0.gguf","size":%d,"oid":"%s","lfs":{"oid":"%s","size":%d,"pointerSize":134}}]`,
			len(model), strings.Repeat("a", 40), sha, len(model))
	})
	mux.HandleFunc("GET /test-org/Tiny-GGUF/resolve/main/Tiny-Q4_0.gguf", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Linked-Etag", `"`+sha+`"`)
		w.Header().Set("X-Linked-Size", fmt.Sprint(len(model)))
		http.Redirect(w, r, "/cdn/blob", http.StatusFound)
	})
	mux.HandleFunc("GET /cdn/blob", func(w http.ResponseWriter, r *http.Request) {
		http.ServeContent(w, r, "blob", time.Time{}, bytes.NewReader(model))
	})
	srv := httptest.NewServer(mux)
	defer srv.Close()
	dir := t.TempDir()
	t.Setenv("HF_ENDPOINT", srv.URL)
	t.Setenv("EXPERTSNIPER_MODELS", dir)

	out, errOut, code := runAgentForTest(t, "pull", "test-org/Tiny-GGUF:q4_0")
	want := filepath.Join(dir, "test-org", "Tiny-GGUF", "Tiny-Q4_0.gguf")
	if code != exitOK || strings.TrimSpace(out) != want {
		t.Fatalf("pull: code %d, out %q, err %q", code, out, errOut)
	}
	if !strings.Contains(errOut, "checksum verified") {
		t.Errorf("pull status lacks the verification: %q", errOut)
	}
	if got, _ := os.ReadFile(want); !bytes.Equal(got, model) {
		t.Fatal("pulled file differs")
	}

	out, _, code = runAgentForTest(t, "models")
	if code != exitOK || !strings.Contains(out, "test-org/Tiny-GGUF:Tiny-Q4_0.gguf") || !strings.Contains(out, "Q4_0") ||
		!strings.Contains(out, "qwen3moe") {
		t.Fatalf("models: code %d\n%s", code, out)
	}
	out, _, _ = runAgentForTest(t, "models", "--json")
	var entries []modelEntry
	if err := json.Unmarshal([]byte(out), &entries); err != nil || len(entries) != 1 || entries[0].Size != int64(len(model)) ||
		entries[0].Architecture != "qwen3moe" {
		t.Fatalf("models --json: %v\n%s", err, out)
	}

	out, errOut, code = runAgentForTest(t, "inspect", "--disk-gbps", "2", "Tiny-GGUF:Q4_0", "--ram", "64MiB", "--json")
	if code != exitOK {
		t.Fatalf("inspect: code %d, %s", code, errOut)
	}
	var rep plan.Report
	if err := json.Unmarshal([]byte(out), &rep); err != nil {
		t.Fatal(err)
	}
	m, err := plan.Open(want)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Model.Path != want || rep.Model.StreamedBytes != m.StreamedBytes || rep.Plan.RAMBudget != 64<<20 ||
		rep.Plan.DiskBytesPerSec != 2e9 || rep.Plan.DiskSource != "--disk-gbps" {
		t.Fatalf("inspect --json: %+v %+v", rep.Model, rep.Plan)
	}

	// Text output with the default budget and a measured (or explained) disk speed.
	out, errOut, code = runAgentForTest(t, "inspect", want)
	if code != exitOK || !strings.Contains(out, "memory plan for") || !strings.Contains(out, "MemAvailable") ||
		!strings.Contains(out, "recommended") || !strings.Contains(out, "disk ") {
		t.Fatalf("inspect: code %d\n%s\n%s", code, out, errOut)
	}
}

func TestInspectAndPullErrors(t *testing.T) {
	t.Setenv("EXPERTSNIPER_MODELS", t.TempDir())
	cases := []struct {
		args []string
		code exitCode
		msg  string
	}{
		{[]string{"inspect"}, exitUsage, "one MODEL"},
		{[]string{"inspect", "nobody/nothing:Q4_0"}, exitError, "agent pull"},
		{[]string{"inspect", "./missing.gguf"}, exitError, "does not exist"},
		{[]string{"inspect", testmodels.Path(t, "qwen3-q4_0"), "--ram", "lots"}, exitUsage, `size "lots"`},
		{[]string{"inspect", testmodels.Path(t, "qwen3-q4_0"), "--ram", "1G", "--cache-type-k", "q3"}, exitUsage, `"q3"`},
		{[]string{"pull"}, exitUsage, "OWNER/REPO"},
		{[]string{"pull", "noslash"}, exitUsage, "want owner/name"},
		{[]string{"models", "extra"}, exitUsage, "no arguments"},
	}
	for _, c := range cases {
		_, errOut, code := runAgentForTest(t, c.args...)
		if code != c.code || !strings.Contains(errOut, c.msg) {
			t.Errorf("agent %s: code %d, stderr %q; want code %d and %q", strings.Join(c.args, " "), code, errOut, c.code, c.msg)
		}
	}
	// A file that is not a GGUF is refused with its name.
	bad := filepath.Join(t.TempDir(), "bad.gguf")
	os.WriteFile(bad, []byte("not a model"), 0o644)
	_, errOut, code := runAgentForTest(t, "inspect", bad, "--ram", "1G")
	if code != exitError || !strings.Contains(errOut, "bad.gguf") {
		t.Errorf("inspect of a non-GGUF: code %d, %q", code, errOut)
	}
}
