package tools

import (
	"context"
	"strings"
	"testing"
)

func TestShowExactly(t *testing.T) {
	for in, want := range map[string]string{
		"ls -la":                  "ls -la",
		"grep 'é' naïve.txt":      "grep 'é' naïve.txt",
		"touch x\rls -la":         `"touch x\rls -la"`,
		"echo \x1b[2Kls":          `"echo \x1b[2Kls"`,
		"rm -rf ~ #\u202eecho hi": `"rm -rf ~ #\u202eecho hi"`,
		"a\u200bb":                `"a\u200bb"`,
		"a\u00a0b":                `"a\u00a0b"`,
		"printf 'a\\rb'\r":        `"printf 'a\\rb'\r"`,
		"bad \xff byte":           `"bad \xff byte"`,
		"two\nlines":              `"two\nlines"`,
	} {
		if got := ShowExactly(in); got != want {
			t.Errorf("ShowExactly(%q) = %s, want %s", in, got, want)
		}
	}
}

// TestShellQuestionShowsTheCommandThatRuns: the question is asked with the exact bytes of the command,
// escapes visible, so that a carriage return cannot paint a harmless command over the real one.
func TestShellQuestionShowsTheCommandThatRuns(t *testing.T) {
	var asked string
	sh := &Shell{Dir: t.TempDir(), Confirm: ConfirmFunc(func(_ context.Context, q string) (bool, error) {
		asked = q
		return false, nil
	})}
	sh.Run(context.Background(), "touch pwned\rls -la")
	if strings.ContainsAny(asked, "\r\x1b") || !strings.Contains(asked, `"touch pwned\rls -la"`) || !strings.Contains(asked, "escapes") {
		t.Fatalf("question %q", asked)
	}
	sh.Run(context.Background(), "ls -la")
	if asked != "Run `ls -la`?" {
		t.Fatalf("question %q", asked)
	}
}
