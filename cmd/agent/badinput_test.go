package main

import (
	"crypto/rand"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"

	"github.com/expertsniper/expertsniper/gguf"
	"github.com/expertsniper/expertsniper/modelgen/testmodels"
)

type badModelFile struct {
	name, path, want string
	// semantic: a well-formed GGUF whose metadata and tensors disagree (only the analysis objects).
	semantic bool
}

// badModelFiles writes broken copies of a generated model into dir: every way a user's file can be
// wrong before llama.cpp sees it. want matches the part of the error that names the problem.
func badModelFiles(t *testing.T, dir string) []badModelFile {
	t.Helper()
	goodPath := testmodels.Path(t, "qwen3moe-q8_0")
	good, err := os.ReadFile(goodPath)
	if err != nil {
		t.Fatal(err)
	}
	gf, err := gguf.Open(goodPath)
	if err != nil {
		t.Fatal(err)
	}
	dataEnd := int64(0) // end of the last tensor's bytes (the file may carry padding after it)
	for _, ti := range gf.Tensors {
		dataEnd = max(dataEnd, gf.DataOffset+ti.Offset+ti.Bytes())
	}
	dataOffset := gf.DataOffset
	random := make([]byte, 4096)
	if _, err := rand.Read(random); err != nil {
		t.Fatal(err)
	}
	copy(random, "XXXX") // random bytes that by chance began with GGUF would be another case
	wrongMagic := append([]byte("GGUX"), good[4:64<<10]...)
	// The tensor names are unique; renaming one to its neighbour's name makes a duplicate.
	dup := append([]byte(nil), good...)
	if i := strings.Index(string(dup[:dataOffset]), "blk.0.attn_k.weight"); i < 0 {
		t.Fatal("test model has no blk.0.attn_k.weight")
	} else {
		copy(dup[i:], "blk.0.attn_q.weight")
	}

	const truncated = `truncated|beyond the end of the file|runs past the end of the file`
	files := []struct {
		name string
		data []byte // nil: no file (missing) or a directory
		want string
	}{
		{"missing", nil, `no such file|does not exist`},
		{"empty", []byte{}, `empty file`},
		{"cut-in-header", good[:12], truncated},
		{"cut-in-metadata", good[:dataOffset/3], truncated},
		{"cut-in-tensor-infos", good[:dataOffset-100], truncated},
		{"cut-in-data", good[:(dataOffset+dataEnd)/2], truncated},
		{"cut-last-byte", good[:dataEnd-1], truncated},
		{"random-bytes", random, `not a GGUF file`},
		{"wrong-magic", wrongMagic, `bad magic "GGUX"`},
		{"directory", nil, `directory|not a regular file`},
		{"duplicate-tensor", dup, `duplicate tensor name`},
	}
	var out []badModelFile
	for _, f := range files {
		p := filepath.Join(dir, f.name+".gguf")
		switch {
		case f.name == "directory":
			if err := os.Mkdir(p, 0o755); err != nil {
				t.Fatal(err)
			}
		case f.data != nil:
			if err := os.WriteFile(p, f.data, 0o644); err != nil {
				t.Fatal(err)
			}
		}
		out = append(out, badModelFile{name: f.name, path: p, want: f.want})
	}
	// Well-formed files that llama.cpp would abort on (zero heads, in a streamed load), or that a
	// streamed load would run with a stand-in (no router) or fail mid-decode (a layer missing).
	for _, sem := range []struct {
		name string
		edit testmodels.Edit
		want string
	}{
		{"zero-heads", testmodels.SetUint32("qwen3moe.attention.head_count", 0), `head_count is 0`},
		{"no-router", testmodels.RenameTensor("blk.1.ffn_gate_inp.weight", "blk.1.ffn_gate_inx.weight"), `no router`},
		{"layer-missing", testmodels.SetUint32("qwen3moe.block_count", 8), `no tensors for layer 4`},
	} {
		out = append(out, badModelFile{name: sem.name, path: testmodels.Patched(t, "qwen3moe-q8_0", sem.edit), want: sem.want, semantic: true})
	}
	return out
}

// isolateUserDirs points every per-user directory (config, pulled models, history) at an empty
// temporary one, so that the commands find nothing of the machine's and write nothing to it.
func isolateUserDirs(t *testing.T) {
	home := t.TempDir()
	t.Setenv("HOME", home)
	t.Setenv("XDG_CONFIG_HOME", filepath.Join(home, "config"))
	t.Setenv("XDG_DATA_HOME", filepath.Join(home, "data"))
	t.Setenv("XDG_STATE_HOME", filepath.Join(home, "state"))
	t.Setenv("EXPERTSNIPER_MODELS", "")
	for _, k := range []string{"EXPERTSNIPER_MODEL", "EXPERTSNIPER_MODE", "EXPERTSNIPER_RAM", "EXPERTSNIPER_CACHE", "EXPERTSNIPER_CONFIG"} {
		t.Setenv(k, "")
		os.Unsetenv(k)
	}
}

// TestEveryModelCommandRejectsBadModelFiles runs each command that takes a model, through the same
// code as the binary (run, which maps errors to exit codes), on each broken file. Each must fail
// with exit code 1 or 2 and an error naming the file and what is wrong with it; none may reach
// llama.cpp (which abort()s on some of these) or hang.
func TestEveryModelCommandRejectsBadModelFiles(t *testing.T) {
	isolateUserDirs(t)
	dir := t.TempDir()
	files := badModelFiles(t, dir)
	commands := []struct {
		name string
		args func(model string) []string
	}{
		{"run", func(m string) []string { return []string{"run", "-q", "-p", "hi", "-n", "1", "-m", m} }},
		{"run-sniper", func(m string) []string {
			return []string{"run", "-q", "-p", "hi", "-n", "1", "--mode", "sniper", "--cache", "0", "-m", m}
		}},
		{"inspect", func(m string) []string { return []string{"inspect", "--disk-gbps", "1", m} }},
		{"repl", func(m string) []string { return []string{"-m", m} }},
		{"ask", func(m string) []string { return []string{"ask", "-m", m, "why?"} }},
		{"serve", func(m string) []string { return []string{"serve", "--port", "0", "-m", m} }},
		{"bench", func(m string) []string {
			return []string{"bench", "--probe", "0", "--caps", "none", "--configs", "ram", "-m", m}
		}},
	}
	for _, c := range commands {
		for _, f := range files {
			if f.semantic && c.name == "bench" {
				continue // bench checks the file's form; the agent run children it starts analyse it
			}
			t.Run(c.name+"/"+f.name, func(t *testing.T) {
				stdout, stderr, code := runAgentForTest(t, c.args(f.path)...)
				if code != exitError && code != exitUsage {
					t.Fatalf("exit code %d, want 1 or 2\nstdout: %s\nstderr: %s", code, stdout, stderr)
				}
				if !strings.Contains(stderr, "error: ") {
					t.Fatalf("no error line on stderr:\n%s", stderr)
				}
				if !strings.Contains(stderr, filepath.Base(f.path)) {
					t.Errorf("the error does not name the file %s:\n%s", filepath.Base(f.path), stderr)
				}
				if !regexp.MustCompile(f.want).MatchString(stderr) {
					t.Errorf("the error does not say what is wrong (want /%s/):\n%s", f.want, stderr)
				}
				if strings.Contains(stderr, "listening on") {
					t.Errorf("serve listened before finding the file broken:\n%s", stderr)
				}
				if strings.Contains(stderr, "panic") || strings.Contains(stderr, "goroutine ") {
					t.Errorf("panic:\n%s", stderr)
				}
			})
		}
	}
}

// TestBadFlagValuesAreUsageErrors: a value a flag cannot take is refused before anything is loaded,
// with exit code 2 and a message naming the flag and the value.
func TestBadFlagValuesAreUsageErrors(t *testing.T) {
	isolateUserDirs(t)
	model := testmodels.Path(t, "qwen3moe-q8_0")
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"run", "-m", model, "-p", "hi", "--ram", "12XB"}, `--ram: size "12XB": unknown unit "XB"`},
		{[]string{"run", "-m", model, "-p", "hi", "--mode", "bogus"}, `--mode: "bogus": want auto, ram, sniper or stream`},
		{[]string{"run", "-m", model, "-p", "hi", "-n", "-5"}, `-n must not be negative, got -5`},
		{[]string{"run", "-m", model, "-p", "hi", "--threads", "-1"}, `--threads must be positive, got -1`},
		{[]string{"run", "-m", model, "-p", "hi", "--policy", "xyz"}, `--policy: cache policy "xyz"`},
		{[]string{"run", "-m", model, "-p", "hi", "--readers", "-3"}, `--readers: must not be negative, got -3`},
		{[]string{"run", "-m", model, "-p", "hi", "--temp", "-1"}, `--temp must not be negative, got -1`},
		{[]string{"run", "-m", model, "-p", "hi", "--rss-sample", "-1s"}, `--rss-sample must not be negative, got -1s`},
		{[]string{"run", "-m", model, "-p", "hi", "--mode", "auto", "--cache", "12XB"}, `--cache: size "12XB"`},
		{[]string{"serve", "-m", model, "--port", "99999"}, `--port must be between 0 and 65535, got 99999`},
		{[]string{"serve", "-m", model, "--port", "-1"}, `--port must be between 0 and 65535, got -1`},
		{[]string{"serve", "-m", model, "--ram", "12XB"}, `--ram: size "12XB"`},
		{[]string{"serve", "-m", model, "--mode", "bogus"}, `--mode: "bogus": want auto, ram, sniper or stream`},
		{[]string{"serve", "-m", model, "--np", "0"}, `--parallel must be between 1 and 64, got 0`},
		{[]string{"serve", "-m", model, "--fa", "maybe"}, `--flash-attn: "maybe": want on, off or auto`},
		{[]string{"inspect", model, "--ram", "12XB"}, `--ram: size "12XB"`},
		{[]string{"inspect", model, "-c", "-5"}, `--ctx-size must not be negative, got -5`},
		{[]string{"-m", model, "--mode", "bogus"}, `mode "bogus": want auto, ram, sniper or stream`},
		{[]string{"-m", model, "--ram", "12XB"}, `ram \(--ram\): size "12XB"`},
		{[]string{"-m", model, "-n", "-5"}, `--max-tokens\) must not be negative, got -5`},
		{[]string{"-m", model, "--threads", "-3"}, `--threads\) must not be negative, got -3`},
		{[]string{"-m", model, "--temp", "-1"}, `--temp\) must not be negative, got -1`},
		{[]string{"-m", model, "-c", "-5"}, `negative context size`},
		{[]string{"ask", "-m", model, "-n", "-5", "why?"}, `--max-tokens\) must not be negative, got -5`},
		{[]string{"ask", "-m", model, "--notes-tokens", "0", "--doc", model, "why?"}, `--notes-tokens must be at least 1, got 0`},
		{[]string{"bench", "-m", model, "--caps", "12XB"}, `--caps: size "12XB"`},
		{[]string{"bench", "-m", model, "-n", "-5"}, `got -5`},
		{[]string{"run", "-p", "hi"}, `no model: pass -m PATH.gguf`},
		{[]string{"run", "-m", model, "--bogus"}, `flag provided but not defined: -bogus`},
		{[]string{"serve-bench", "-m", model, "--port", "0"}, `flag provided but not defined: -port`},
		{[]string{"bench", "correlate", "--bogus"}, `flag provided but not defined: -bogus`},
		{[]string{"models", "--bogus"}, `flag provided but not defined: -bogus`},
		{[]string{"--bogus"}, `flag provided but not defined: -bogus`},
		{[]string{"pull", "/etc/passwd"}, `"/etc/passwd" is a file path, not a repository`},
		{[]string{"bench", "correlate"}, `Required flag "model" not set`},
		{[]string{"mkmodel", "--arch", "qwen3moe"}, `--output FILE is required`},
	}
	for _, c := range cases {
		t.Run(strings.Join(c.args[min(len(c.args), 3):], " "), func(t *testing.T) {
			stdout, stderr, code := runAgentForTest(t, c.args...)
			if code != exitUsage {
				t.Fatalf("agent %s: exit code %d, want %d\nstdout: %s\nstderr: %s", strings.Join(c.args, " "), code, exitUsage, stdout, stderr)
			}
			if !regexp.MustCompile(c.want).MatchString(stderr) {
				t.Fatalf("agent %s: want /%s/ in stderr:\n%s", strings.Join(c.args, " "), c.want, stderr)
			}
		})
	}
}
