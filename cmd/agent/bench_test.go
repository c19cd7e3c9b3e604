package main

import (
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"github.com/expertsniper/expertsniper/bench"
	"github.com/expertsniper/expertsniper/modelgen/testmodels"
)

func TestBenchKinds(t *testing.T) {
	got, err := benchKinds("auto", true, false)
	if err != nil || len(got) != 4 || got[1] != bench.KindPeerDefault || got[3] != bench.KindSniper {
		t.Fatalf("auto for MoE: %v %v", got, err)
	}
	got, err = benchKinds("auto", false, false)
	if err != nil || got[3] != bench.KindStream {
		t.Fatalf("auto for dense: %v %v", got, err)
	}
	if got, err = benchKinds("peer, sniper", true, false); err != nil || len(got) != 2 || got[0] != bench.KindPeer {
		t.Fatalf("peer,sniper: %v %v", got, err)
	}
	for _, bad := range []string{"sniper", "bogus", ",", "rpc"} {
		if _, err := benchKinds(bad, false, false); err == nil {
			t.Errorf("benchKinds(%q, dense) accepted", bad)
		}
	}
	if got, err = benchKinds("auto", true, true); err != nil || len(got) != 5 || got[4] != bench.KindRPC {
		t.Fatalf("auto with --rpc: %v %v", got, err)
	}
}

func TestBenchUsageErrors(t *testing.T) {
	model := testmodels.Path(t, "qwen3moe-q8_0")
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"bench"}, "model"},
		{[]string{"bench", "-m", model, "--caps", "4XB"}, "--caps"},
		{[]string{"bench", "-m", model, "--budgets", ""}, "--budgets"},
		{[]string{"bench", "-m", model, "-p", "0"}, "prompt tokens"},
		{[]string{"bench", "-m", model, "--json", "--markdown"}, "exclude"},
		{[]string{"bench", "-m", model, "--variants", "prefetch"}, "--variants"},
		{[]string{"bench", "-m", model, "--configs", "stream"}, "dense models"},
		{[]string{"bench", "-m", "/nonexistent.gguf", "--caps", "none"}, "/nonexistent.gguf"},
	} {
		var out, errOut bytes.Buffer
		code := run(context.Background(), append([]string{"agent"}, tc.args...), &IOStreams{In: strings.NewReader(""), Out: &out, ErrOut: &errOut})
		if code == exitOK || !strings.Contains(errOut.String(), tc.want) {
			t.Errorf("%v: exit %d, stderr %q, want an error about %q", tc.args, code, errOut.String(), tc.want)
		}
	}
}

// A whole bench on a tiny model: the peer and our RAM and sniper modes, uncapped and capped, as JSON.
// Our configurations run the built binary (the test binary is not an agent).
func TestBenchEndToEndOnTinyModel(t *testing.T) {
	bin := filepath.Join(t.TempDir(), "agent")
	if out, err := exec.Command("go", "build", "-o", bin, ".").CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, out)
	}
	model := testmodels.Path(t, "qwen3moe-q8_0")
	var out, errOut bytes.Buffer
	code := run(t.Context(), []string{"agent", "bench", "-m", model, "-p", "8", "-n", "4", "-t", "2", "--budgets", "1MiB",
		"--caps", "none,256MiB", "--probe", "200ms", "--json", "--agent", bin}, &IOStreams{In: strings.NewReader(""), Out: &out, ErrOut: &errOut})
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, errOut.String())
	}
	t.Log(errOut.String())
	if !strings.Contains(out.String(), `"kind": "sniper"`) || !strings.Contains(out.String(), `"direct_read_gb_s"`) ||
		!strings.Contains(out.String(), `"kind": "llama.cpp-default"`) || !strings.Contains(out.String(), `"decode_vs_default"`) {
		t.Fatalf("JSON report lacks the sniper rows or the disk bound:\n%s", out.String())
	}

	// The saved report prints again as markdown without running anything.
	saved := filepath.Join(t.TempDir(), "report.json")
	if err := os.WriteFile(saved, out.Bytes(), 0o644); err != nil {
		t.Fatal(err)
	}
	var md, mdErr bytes.Buffer
	if code := run(t.Context(), []string{"agent", "bench", "--from", saved, "--markdown"}, &IOStreams{In: strings.NewReader(""), Out: &md, ErrOut: &mdErr}); code != exitOK {
		t.Fatalf("--from: exit %d: %s", code, mdErr.String())
	}
	if !strings.Contains(md.String(), "| sniper 1.00 MiB | 256.00 MiB |") || !strings.Contains(md.String(), "| llama.cpp mmap | none |") {
		t.Fatalf("markdown from the saved report:\n%s", md.String())
	}
}
