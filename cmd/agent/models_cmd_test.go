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
	"os/exec"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/expertsniper/expertsniper/gguf"
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
		{[]string{"inspect", "nobody/nothing:Q4_0"}, exitUsage, "agent pull"},
		{[]string{"inspect", "./missing.gguf"}, exitUsage, "does not exist"},
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

// TestPullMergesSplitModel: a model published in parts is downloaded, merged into one file that
// inspect (and the sniper) read, and the parts are removed.
func TestPullMergesSplitModel(t *testing.T) {
	src := testmodels.Path(t, "qwen3moe-q8_0")
	f, err := gguf.Open(src)
	if err != nil {
		t.Fatal(err)
	}
	raw, _ := os.ReadFile(src)
	// Two parts in gguf-split's layout.
	var parts [][]byte
	half := len(f.Tensors) / 2
	for i, tensors := range [][]gguf.TensorInfo{f.Tensors[:half], f.Tensors[half:]} {
		var buf bytes.Buffer
		w := gguf.NewWriter(&buf)
		if i == 0 {
			for _, kv := range f.KVs {
				w.AddKV(kv.Key, kv.Value)
			}
		}
		w.AddKV("split.no", uint16(i))
		w.AddKV("split.count", uint16(2))
		w.AddKV("split.tensors.count", int32(len(f.Tensors)))
		for _, ti := range tensors {
			off := f.TensorFileOffset(ti)
			w.AddTensorData(ti.Name, ti.Type, ti.Dims, raw[off:off+ti.Bytes()])
		}
		if err := w.Write(context.Background()); err != nil {
			t.Fatal(err)
		}
		parts = append(parts, buf.Bytes())
	}
	names := []string{"Split-Q8_0-00001-of-00002.gguf", "Split-Q8_0-00002-of-00002.gguf"}
	mux := http.NewServeMux()
	mux.HandleFunc("GET /api/models/org/Split-GGUF/tree/main", func(w http.ResponseWriter, r *http.Request) {
		var entries []string
		for i, p := range parts {
			sum := sha256.Sum256(p)
			entries = append(entries, fmt.Sprintf(`{"type":"file","path":"%s","size":%d,"oid":"x","lfs":{"oid":"%s","size":%d}}`,
				names[i], len(p), hex.EncodeToString(sum[:]), len(p)))
		}
		fmt.Fprint(w, "["+strings.Join(entries, ",")+"]")
	})
	for i := range parts {
		p := parts[i]
		mux.HandleFunc("GET /org/Split-GGUF/resolve/main/"+names[i], func(w http.ResponseWriter, r *http.Request) {
			http.ServeContent(w, r, "part", time.Time{}, bytes.NewReader(p))
		})
	}
	srv := httptest.NewServer(mux)
	defer srv.Close()
	dir := t.TempDir()
	t.Setenv("HF_ENDPOINT", srv.URL)
	t.Setenv("EXPERTSNIPER_MODELS", dir)

	out, errOut, code := runAgentForTest(t, "pull", "org/Split-GGUF:Q8_0")
	merged := filepath.Join(dir, "org", "Split-GGUF", "Split-Q8_0.gguf")
	if code != exitOK || strings.TrimSpace(out) != merged || !strings.Contains(errOut, "merging 2 parts") {
		t.Fatalf("pull: code %d, out %q, err %q", code, out, errOut)
	}
	for _, n := range names {
		if _, err := os.Stat(filepath.Join(dir, "org", "Split-GGUF", n)); err == nil {
			t.Errorf("part %s left behind after the merge", n)
		}
	}
	got, want := mustPlan(t, merged), mustPlan(t, src)
	if got.TensorBytes != want.TensorBytes || got.StreamedBytes != want.StreamedBytes || got.Parameters != want.Parameters {
		t.Fatalf("merged model: %+v\nwant %+v", got, want)
	}
	out, _, code = runAgentForTest(t, "inspect", "org/Split-GGUF:q8_0", "--ram", "1GiB", "--disk-gbps", "1")
	if code != exitOK || !strings.Contains(out, merged) {
		t.Fatalf("inspect of the merged model: %d\n%s", code, out)
	}
}

func mustPlan(t *testing.T, path string) *plan.Model {
	t.Helper()
	m, err := plan.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	return m
}

// `agent run -m NAME` finds a pulled model by its hub name (here a symlink in the models directory,
// which `agent models` also lists).
func TestRunResolvesPulledModelNames(t *testing.T) {
	dir := t.TempDir()
	t.Setenv("EXPERTSNIPER_MODELS", dir)
	dest := filepath.Join(dir, "org", "Tiny-GGUF", "Tiny-Q8_0.gguf")
	os.MkdirAll(filepath.Dir(dest), 0o755)
	if err := os.Symlink(testmodels.Path(t, "qwen3moe-q8_0"), dest); err != nil {
		t.Fatal(err)
	}
	out, errOut, code := runAgentForTest(t, "run", "-m", "Tiny-GGUF:q8_0", "-p", "Hello", "-n", "2", "--mode", "sniper", "--quiet")
	if code != exitOK || out == "" {
		t.Fatalf("run by name: code %d, out %q, err %q", code, out, errOut)
	}
	_, errOut, code = runAgentForTest(t, "run", "-m", "Nope-GGUF:q8_0", "-p", "Hello", "-n", "1")
	if code != exitUsage || !strings.Contains(errOut, "agent pull") {
		t.Fatalf("unknown name: code %d, %q", code, errOut)
	}
}

// TestInspectMatchesWhatTheSniperReads runs each architecture in sniper mode (stream mode for the
// dense model) with no cache, so every decoded token misses every chosen expert, and checks that the
// bytes read per decoded token are exactly what inspect predicts at 0% cache hits.
func TestInspectMatchesWhatTheSniperReads(t *testing.T) {
	for _, name := range []string{"qwen3moe-q8_0", "qwen35moe-q4_k_m", "olmoe-q4_0", "qwen2moe-q4_k_m", "qwen3-q8_0"} {
		t.Run(name, func(t *testing.T) {
			path := testmodels.Path(t, name)
			out, errOut, code := runAgentForTest(t, "inspect", path, "--ram", "64GiB", "--disk-gbps", "2", "--json")
			if code != exitOK {
				t.Fatalf("inspect: %s", errOut)
			}
			var rep plan.Report
			if err := json.Unmarshal([]byte(out), &rep); err != nil {
				t.Fatal(err)
			}
			mode := "sniper"
			if !rep.Model.MoE {
				mode = "stream"
			}
			statsFile := filepath.Join(t.TempDir(), "stats.json")
			args := []string{"run", "-m", path, "-p", "The quick brown fox", "-n", "6", "--temp", "0",
				"--mode", mode, "--cache", "0", "--quiet", "--stats-json", statsFile}
			if mode == "stream" {
				// The read-ahead reads the first decoded token's first layer while the prompt's last
				// layer computes, which moves one layer's bytes from the decode's count to the prompt's.
				args = append(args, "--prefetch=false")
			}
			_, errOut, code = runAgentForTest(t, args...)
			if code != exitOK {
				t.Fatalf("run: %s", errOut)
			}
			b, err := os.ReadFile(statsFile)
			if err != nil {
				t.Fatal(err)
			}
			var stats struct {
				DecodeBytesRead int64   `json:"decode_bytes_read"`
				DecodeEvals     int     `json:"decode_evals"`
				StreamedBytes   int64   `json:"streamed_bytes"`
				PinnedBytes     int64   `json:"pinned_bytes"`
				PerToken        float64 `json:"decode_bytes_per_token"`
			}
			if err := json.Unmarshal(b, &stats); err != nil {
				t.Fatal(err)
			}
			if stats.DecodeEvals == 0 {
				t.Fatalf("no decode evaluations: %s", b)
			}
			if stats.DecodeBytesRead != int64(stats.DecodeEvals)*rep.Plan.TokenReadBytes {
				t.Errorf("sniper read %d bytes over %d decoded tokens (%.0f per token); inspect says %d per token at 0%% hits",
					stats.DecodeBytesRead, stats.DecodeEvals, stats.PerToken, rep.Plan.TokenReadBytes)
			}
			if stats.StreamedBytes != rep.Model.StreamedBytes {
				t.Errorf("sniper streams %d bytes, inspect says %d", stats.StreamedBytes, rep.Model.StreamedBytes)
			}
			t.Logf("%s: %d bytes per decoded token, %d streamed, pinned %d (inspect %d)", name, rep.Plan.TokenReadBytes,
				stats.StreamedBytes, stats.PinnedBytes, rep.Model.PinnedBytes)
		})
	}
}

// TestComputeEstimateCoversLlamaCpp compares inspect's compute-buffer estimate with what llama.cpp
// itself reserves for each generated architecture (its "compute buffer size" log line): the estimate
// must cover it and not exceed it by more than the runtime allowance (plan.RuntimeOverhead) plus 16 MiB. The KV cache and
// recurrent state sizes, which are exact, must match llama.cpp's to its logged precision.
func TestComputeEstimateCoversLlamaCpp(t *testing.T) {
	bin, err := exec.LookPath("llama-completion")
	if err != nil {
		t.Fatalf("llama-completion not found (run the tests in the build environment: ./build.sh test): %v", err)
	}
	re := regexp.MustCompile(`CPU compute buffer size =\s+([0-9.]+) MiB`)
	kvRE := regexp.MustCompile(`llama_kv_cache: size =\s+([0-9.]+) MiB`)
	recurrentRE := regexp.MustCompile(`llama_memory_recurrent: size =\s+([0-9.]+) MiB`)
	for _, name := range []string{"qwen3moe-q8_0", "qwen35moe-q8_0", "olmoe-q8_0", "qwen2moe-q8_0", "qwen3-q8_0"} {
		path := testmodels.Path(t, name)
		cmd := exec.Command(bin, "-m", path, "-c", "4096", "-n", "1", "-p", "hi", "--temp", "0", "-no-cnv", "-v", "-t", "1")
		out, err := cmd.CombinedOutput()
		m := re.FindSubmatch(out)
		if err != nil || m == nil {
			t.Fatalf("%s: llama-completion: %v\n%s", name, err, out)
		}
		mib, _ := strconv.ParseFloat(string(m[1]), 64)
		actual := int64(mib * (1 << 20))
		o, errOut, code := runAgentForTest(t, "inspect", path, "-c", "4096", "--ram", "8GiB", "--disk-gbps", "1", "--json")
		if code != exitOK {
			t.Fatalf("inspect: %s", errOut)
		}
		var rep plan.Report
		if err := json.Unmarshal([]byte(o), &rep); err != nil {
			t.Fatal(err)
		}
		if est := rep.Plan.ComputeBytes; est < actual || est > actual+plan.RuntimeOverhead+16<<20 {
			t.Errorf("%s: compute estimate %.1f MiB, llama.cpp reserves %.1f MiB", name, float64(est)/(1<<20), mib)
		}
		// The KV cache and the recurrent state are exact; llama.cpp logs them rounded to 0.01 MiB.
		for _, c := range []struct {
			what string
			re   *regexp.Regexp
			plan int64
		}{
			{"KV cache", kvRE, rep.Plan.KVCacheBytes},
			{"recurrent state", recurrentRE, rep.Plan.RecurrentStateBytes},
		} {
			m := c.re.FindSubmatch(out)
			if m == nil {
				if c.plan != 0 {
					t.Errorf("%s: inspect plans %d bytes of %s, llama.cpp logs none", name, c.plan, c.what)
				}
				continue
			}
			got, _ := strconv.ParseFloat(string(m[1]), 64)
			if diff := got - float64(c.plan)/(1<<20); diff > 0.005 || diff < -0.005 {
				t.Errorf("%s: %s is %.2f MiB in llama.cpp, inspect says %.4f MiB", name, c.what, got, float64(c.plan)/(1<<20))
			}
		}
	}
}
