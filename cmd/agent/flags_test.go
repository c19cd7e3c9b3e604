package main

import (
	"bytes"
	"strings"
	"testing"
)

// TestHelpShowsEachDefaultOnce: a flag whose usage states its default ("default: the engine's") did
// also get urfave/cli's "(default: 0)"; every command's help now shows one default per flag.
func TestHelpShowsEachDefaultOnce(t *testing.T) {
	isolateUserDirs(t)
	app := newApp(&IOStreams{In: strings.NewReader(""), Out: &bytes.Buffer{}, ErrOut: &bytes.Buffer{}})
	helps := [][]string{{"--help"}}
	for _, c := range app.Commands {
		helps = append(helps, []string{c.Name, "--help"})
	}
	for _, args := range helps {
		stdout, stderr, code := runAgentForTest(t, args...)
		if code != exitOK {
			t.Fatalf("agent %s: exit %d\n%s", strings.Join(args, " "), code, stderr)
		}
		for _, line := range strings.Split(stdout, "\n") {
			if strings.Count(line, "(default:") > 1 {
				t.Errorf("agent %s: two defaults in %q", strings.Join(args, " "), strings.TrimSpace(line))
			}
		}
	}
}

// TestEveryServeFlagHasAnEnvironmentVariable: the README promises an EXPERTSNIPER_* variable for every
// serve flag; --alias, the KV types, --flash-attn, --embeddings and --max-body had none.
func TestEveryServeFlagHasAnEnvironmentVariable(t *testing.T) {
	for _, f := range serveCommand(&IOStreams{}).Flags {
		name := f.Names()[0]
		envs := f.(interface{ GetEnvVars() []string }).GetEnvVars()
		if len(envs) == 0 || !strings.HasPrefix(envs[0], "EXPERTSNIPER_") {
			t.Errorf("serve --%s has no EXPERTSNIPER_* variable (%q)", name, envs)
		}
	}
}

// TestHelpForAnUnknownCommandIsAUsageError: `agent help nosuch` exited 1 (an error of the program);
// asking for something that does not exist is a usage error, exit 2, as everywhere else.
func TestHelpForAnUnknownCommandIsAUsageError(t *testing.T) {
	isolateUserDirs(t)
	if _, stderr, code := runAgentForTest(t, "help", "nosuch"); code != exitUsage || !strings.Contains(stderr, "nosuch") {
		t.Fatalf("agent help nosuch: exit %d\n%s", code, stderr)
	}
}
