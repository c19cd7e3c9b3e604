package main

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/expertsniper/expertsniper/gguf"
)

func runAgentForMkmodel(t *testing.T, args ...string) (exitCode, string, string) {
	t.Helper()
	var out, errOut bytes.Buffer
	code := run(context.Background(), append([]string{"agent"}, args...), &IOStreams{In: strings.NewReader(""), Out: &out, ErrOut: &errOut})
	return code, out.String(), errOut.String()
}

func TestMkmodelWritesDeterministicModels(t *testing.T) {
	dir := t.TempDir()
	a, b := filepath.Join(dir, "a.gguf"), filepath.Join(dir, "b.gguf")
	for _, p := range []string{a, b} {
		code, out, errOut := runAgentForMkmodel(t, "mkmodel", "--arch", "olmoe", "--type", "q4_0", "--seed", "7", "--layers", "2", "-o", p)
		if code != exitOK {
			t.Fatalf("exit %d: %s", code, errOut)
		}
		if !strings.HasPrefix(out, p+"\t") {
			t.Fatalf("stdout %q", out)
		}
	}
	da, _ := os.ReadFile(a)
	db, _ := os.ReadFile(b)
	if len(da) == 0 || !bytes.Equal(da, db) {
		t.Fatal("same seed gave different files")
	}
	f, err := gguf.Open(a)
	if err != nil {
		t.Fatal(err)
	}
	if n, _ := f.ArchUint("block_count"); f.Architecture() != "olmoe" || n != 2 {
		t.Fatalf("arch %q layers %d", f.Architecture(), n)
	}
	if ti, _ := f.Tensor("blk.0.ffn_up_exps.weight"); ti.Type != gguf.TypeQ4_0 {
		t.Fatalf("expert type %s", ti.Type)
	}
}

func TestMkmodelRejectsBadUsage(t *testing.T) {
	out := filepath.Join(t.TempDir(), "x.gguf")
	cases := []struct {
		args []string
		want string
	}{
		{[]string{"mkmodel"}, "--output"},
		{[]string{"mkmodel", "--arch", "llama", "-o", out}, "unknown architecture"},
		{[]string{"mkmodel", "--type", "q9_9", "-o", out}, "unknown model type"},
		{[]string{"mkmodel", "--shape", "huge", "-o", out}, "unknown shape"},
		{[]string{"mkmodel", "--shape", "qwen35-35b-a3b", "--arch", "olmoe", "-o", out}, "not olmoe"},
		{[]string{"mkmodel", "--experts-used", "99", "-o", out}, "not a valid MoE"},
		{[]string{"mkmodel", "--random-quants", "maybe", "-o", out}, "--random-quants"},
		{[]string{"mkmodel", "--vocab", "12", "-o", out}, "smaller than the tokenizer"},
		{[]string{"mkmodel", "--layers", "-1", "-o", out}, "must not be negative"},
		{[]string{"mkmodel", "extra", "-o", out}, "no arguments"},
	}
	for _, c := range cases {
		code, _, errOut := runAgentForMkmodel(t, c.args...)
		if code != exitUsage || !strings.Contains(errOut, c.want) {
			t.Errorf("%v: exit %d, stderr %q; want usage error mentioning %q", c.args, code, errOut, c.want)
		}
	}
	if _, err := os.Stat(out); err == nil {
		t.Error("a rejected command wrote a file")
	}
}
