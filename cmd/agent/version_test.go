package main

import (
	"regexp"
	"strings"
	"testing"
)

// TestVersionNamesOursAndLlamaCpp: --version says which build of agent this is and which llama.cpp it
// runs on, and what llama.cpp says about the machine.
func TestVersionNamesOursAndLlamaCpp(t *testing.T) {
	out, errOut, code := runAgentForTest(t, "--version")
	if code != exitOK {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	for _, re := range []string{`(?m)^agent +expertsniper \S+ \(go1\.\d+`, `(?m)^llama\.cpp +b11669 \(libllama \S+, ggml \S+`, `(?m)^system +.*CPU`} {
		if !regexp.MustCompile(re).MatchString(out) {
			t.Errorf("--version output lacks %s:\n%s", re, out)
		}
	}
	if gitCommit != "" && !strings.Contains(out, gitCommit) {
		t.Errorf("the commit set at build time is not shown:\n%s", out)
	}
}
