package hub

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestParseRef(t *testing.T) {
	cases := []struct {
		in   string
		want Ref
		err  string
	}{
		{in: "unsloth/Qwen3.5-35B-A3B-GGUF:Q4_K_M", want: Ref{Repo: "unsloth/Qwen3.5-35B-A3B-GGUF", Quant: "Q4_K_M"}},
		{in: "unsloth/Qwen3.5-35B-A3B-GGUF", want: Ref{Repo: "unsloth/Qwen3.5-35B-A3B-GGUF"}},
		{in: "org/M:sub/M-Q8_0.gguf", want: Ref{Repo: "org/M", File: "sub/M-Q8_0.gguf"}},
		{in: "https://huggingface.co/org/M:q4_0", want: Ref{Repo: "org/M", Quant: "q4_0"}},
		{in: "justaname", err: "want owner/name"},
		{in: "a/b/c", err: "want owner/name"},
		{in: "/etc/passwd", err: "is a file path, not a repository"},
		{in: "./models/x.gguf", err: "is a file path, not a repository"},
		{in: "~/x.gguf", err: "is a file path, not a repository"},
		{in: "../x", err: "invalid name"},
		{in: "org/M:Q4 K", err: "invalid character"},
		{in: "org/M?x=1", err: "invalid character"},
	}
	for _, c := range cases {
		got, err := ParseRef(c.in)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("ParseRef(%q) error = %v, want %q", c.in, err, c.err)
			}
			continue
		}
		if err != nil || got != c.want {
			t.Errorf("ParseRef(%q) = %+v, %v; want %+v", c.in, got, err, c.want)
		}
	}
}

func TestSelectFiles(t *testing.T) {
	listing := func(paths ...string) []RepoFile {
		var fs []RepoFile
		for _, p := range paths {
			fs = append(fs, RepoFile{Path: p, Size: 1})
		}
		return fs
	}
	repo := listing("README.md", "M-IQ4_XS.gguf", "M-Q4_K_M.gguf", "M-UD-Q4_K_M.gguf", "M-Q4_K_S.gguf",
		"M-Q4_K.gguf", "mmproj-F16.gguf", "BF16/M-BF16-00001-of-00002.gguf", "BF16/M-BF16-00002-of-00002.gguf")
	cases := []struct {
		ref  Ref
		want []string
		err  string
	}{
		{ref: Ref{Quant: "q4_k_m"}, want: []string{"M-Q4_K_M.gguf"}},
		{ref: Ref{Quant: "UD-Q4_K_M"}, want: []string{"M-UD-Q4_K_M.gguf"}},
		{ref: Ref{Quant: "Q4_K"}, want: []string{"M-Q4_K.gguf"}},
		{ref: Ref{Quant: "IQ4_XS"}, want: []string{"M-IQ4_XS.gguf"}},
		{ref: Ref{Quant: "Q4_XS"}, err: "no GGUF file for quantization Q4_XS"},
		{ref: Ref{Quant: "bf16"}, want: []string{"BF16/M-BF16-00001-of-00002.gguf", "BF16/M-BF16-00002-of-00002.gguf"}},
		{ref: Ref{File: "M-Q4_K_S.gguf"}, want: []string{"M-Q4_K_S.gguf"}},
		{ref: Ref{File: "mmproj-F16.gguf"}, want: []string{"mmproj-F16.gguf"}},
		{ref: Ref{File: "nope.gguf"}, err: `no file "nope.gguf"`},
		{ref: Ref{}, err: "choose a quantization"},
	}
	for _, c := range cases {
		c.ref.Repo = "org/M"
		got, err := SelectFiles(repo, c.ref)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("%v: error = %v, want %q", c.ref, err, c.err)
			}
			continue
		}
		var paths []string
		for _, f := range got {
			paths = append(paths, f.Path)
		}
		if err != nil || strings.Join(paths, ",") != strings.Join(c.want, ",") {
			t.Errorf("%v: got %v, %v; want %v", c.ref, paths, err, c.want)
		}
	}
	// Only one model: no choice needed.
	if got, err := SelectFiles(listing("a.txt", "Only-Q8_0.gguf", "mmproj-x.gguf"), Ref{Repo: "o/r"}); err != nil || len(got) != 1 || got[0].Path != "Only-Q8_0.gguf" {
		t.Errorf("single model: %v, %v", got, err)
	}
	// A split model with a part missing on the hub is refused rather than half-downloaded.
	_, err := SelectFiles(listing("M-00001-of-00003.gguf", "M-00003-of-00003.gguf"), Ref{Repo: "o/r"})
	if err == nil || !strings.Contains(err.Error(), "has 2 of its 3 parts") {
		t.Errorf("missing part: %v", err)
	}
}

func TestQuantFromName(t *testing.T) {
	for name, want := range map[string]string{
		"Qwen3.5-35B-A3B-Q4_K_M.gguf":      "Q4_K_M",
		"Qwen3.5-35B-A3B-UD-Q4_K_XL.gguf":  "Q4_K_XL",
		"model-IQ4_XS-00001-of-00002.gguf": "IQ4_XS",
		"qwen3moe-q8_0.gguf":               "Q8_0",
		"tiny-f32.gguf":                    "F32",
		"plain.gguf":                       "",
	} {
		if got := QuantFromName(name); got != want {
			t.Errorf("QuantFromName(%q) = %q, want %q", name, got, want)
		}
	}
}

func TestResolveModel(t *testing.T) {
	dir := t.TempDir()
	write := func(rel string, size int) string {
		p := filepath.Join(dir, filepath.FromSlash(rel))
		os.MkdirAll(filepath.Dir(p), 0o755)
		if err := os.WriteFile(p, make([]byte, size), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	q4 := write("unsloth/Qwen3.5-35B-A3B-GGUF/Qwen3.5-35B-A3B-Q4_K_M.gguf", 10)
	ud := write("unsloth/Qwen3.5-35B-A3B-GGUF/Qwen3.5-35B-A3B-UD-Q4_K_M.gguf", 11)
	q8 := write("unsloth/Qwen3.5-35B-A3B-GGUF/Qwen3.5-35B-A3B-Q8_0.gguf", 12)
	other := write("bartowski/Qwen3.5-35B-A3B-GGUF/Qwen3.5-35B-A3B-Q8_0.gguf", 13)
	write("org/Half/Half-Q4_0-00001-of-00002.gguf", 5) // incomplete split: not offered
	write("org/Busy/Busy-Q4_0.gguf.partial", 5)        // a download in progress: not a model
	loose := write("my-model.gguf", 7)
	plain := filepath.Join(t.TempDir(), "elsewhere.gguf")
	os.WriteFile(plain, []byte("x"), 0o644)

	cases := []struct {
		name, want, err string
	}{
		{name: plain, want: plain},
		{name: "unsloth/Qwen3.5-35B-A3B-GGUF:Q4_K_M", want: q4},
		{name: "unsloth/qwen3.5-35b-a3b-gguf:q4_k_m", want: q4},
		{name: "unsloth/Qwen3.5-35B-A3B-GGUF:UD-Q4_K_M", want: ud},
		{name: "unsloth/Qwen3.5-35B-A3B-GGUF:Qwen3.5-35B-A3B-Q8_0.gguf", want: q8},
		{name: "bartowski/Qwen3.5-35B-A3B-GGUF", want: other},
		{name: "bartowski/Qwen3.5-35B-A3B", want: other},
		{name: "unsloth/Qwen3.5-35B-A3B:Q4_K_M", want: q4},
		{name: "Qwen3.5-35B-A3B:UD-Q4_K_M", want: ud},
		{name: "Qwen3.5-35B-A3B", err: "ambiguous"},
		{name: "Qwen3.5-35B-A3B-GGUF:Q8_0", err: "ambiguous"},
		{name: "unsloth/Qwen3.5-35B-A3B-GGUF", err: "ambiguous"},
		{name: "my-model", want: loose},
		{name: "my-model.gguf", want: loose},
		{name: "org/Half", err: "not in"},
		{name: "org/Busy", err: "not in"},
		{name: "./missing.gguf", err: "does not exist"},
		{name: "nothing/here:Q4_0", err: "agent pull"},
		{name: dir, err: "is a directory"},
	}
	for _, c := range cases {
		got, err := ResolveModelIn(dir, c.name)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("ResolveModel(%q) = %q, %v; want error %q", c.name, got, err, c.err)
			}
			continue
		}
		if err != nil || got != c.want {
			t.Errorf("ResolveModel(%q) = %q, %v; want %q", c.name, got, err, c.want)
		}
	}
	t.Setenv("EXPERTSNIPER_MODELS", dir)
	if got, err := ResolveModel("unsloth/Qwen3.5-35B-A3B-GGUF:q8_0"); err != nil || got != q8 {
		t.Errorf("ResolveModel via EXPERTSNIPER_MODELS = %q, %v", got, err)
	}
	models, err := ListLocal(dir)
	if err != nil {
		t.Fatal(err)
	}
	var refs []string
	for _, m := range models {
		refs = append(refs, m.Ref())
	}
	want := "bartowski/Qwen3.5-35B-A3B-GGUF:Qwen3.5-35B-A3B-Q8_0.gguf,my-model.gguf,org/Half:Half-Q4_0.gguf," +
		"unsloth/Qwen3.5-35B-A3B-GGUF:Qwen3.5-35B-A3B-Q4_K_M.gguf,unsloth/Qwen3.5-35B-A3B-GGUF:Qwen3.5-35B-A3B-Q8_0.gguf," +
		"unsloth/Qwen3.5-35B-A3B-GGUF:Qwen3.5-35B-A3B-UD-Q4_K_M.gguf"
	if strings.Join(refs, ",") != want {
		t.Errorf("ListLocal refs:\n%s\nwant\n%s", strings.Join(refs, ","), want)
	}
	if models[2].Incomplete != true {
		t.Errorf("org/Half should be marked incomplete: %+v", models[2])
	}
	if _, err := ListLocal(q4); err == nil || !strings.Contains(err.Error(), "is not a directory") {
		t.Errorf("ListLocal on a file: %v, want an error", err)
	}
	if m, err := ListLocal(filepath.Join(dir, "does-not-exist")); err != nil || len(m) != 0 {
		t.Errorf("ListLocal of a missing dir = %v, %v", m, err)
	}
}

func TestPlainProgressLines(t *testing.T) {
	var buf bytes.Buffer
	p := NewProgress(&buf, false).(*textProgress)
	clock := time.Unix(0, 0)
	p.now = func() time.Time { return clock }
	p.Start("M.gguf", 1000<<20, 0)
	for i := 0; i < 100; i++ {
		clock = clock.Add(100 * time.Millisecond)
		p.Add(10 << 20)
	}
	p.Done(nil)
	lines := strings.Split(strings.TrimSpace(buf.String()), "\n")
	// start + one line per 10% (10..90, and 100 may coincide) + done; never one per write.
	if len(lines) < 10 || len(lines) > 13 {
		t.Fatalf("%d lines:\n%s", len(lines), buf.String())
	}
	if !strings.Contains(lines[1], " 10% 100 MiB / 1000 MiB, 100 MiB/s, ETA 0:09") {
		t.Errorf("progress line %q", lines[1])
	}
	if !strings.Contains(lines[len(lines)-1], "done, 1000 MiB in 10s (100 MiB/s), checksum verified") {
		t.Errorf("last line %q", lines[len(lines)-1])
	}
	if strings.Contains(buf.String(), "\r") || strings.Contains(buf.String(), "\033") {
		t.Error("plain progress wrote terminal control characters")
	}
	var tty bytes.Buffer
	pt := NewProgress(&tty, true)
	pt.Start("M.gguf", 100, 0)
	pt.Add(50)
	pt.Done(nil)
	if !strings.Contains(tty.String(), "\r\033[K") || !strings.Contains(tty.String(), "[") {
		t.Errorf("tty progress %q has no bar", tty.String())
	}
}
