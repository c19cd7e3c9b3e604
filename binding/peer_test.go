package binding

import (
	"bytes"
	"os/exec"
	"testing"
)

// llamaCompletion runs the stock llama-completion of the same build (the reference peer) and returns
// its stdout. The peer is required: without it the agreement tests would prove nothing, so a missing
// binary fails the test (it is on PATH in the build root, where ./build.sh test runs).
//
// When the machine is busy, llama-completion sometimes exits before the last pieces it printed reach
// stdout (measured: 2 of 6 parallel runs lost their tail). A complete run ends with the newline it
// prints at exit, so an output without it is run again, a bounded number of times.
func llamaCompletion(t *testing.T, args ...string) []byte {
	t.Helper()
	return llamaCompletionHolding(t, nil, args...)
}

// llamaCompletionHolding is llamaCompletion for a caller that compares only a prefix, want, of the
// output: a run whose output holds want whole is enough even if what followed was lost, and so is
// one that already differs from want (the comparison fails on what was printed). Only a run cut
// short inside want, which proves nothing, is run again. Asking the peer for more tokens than are
// compared keeps the lost tail out of the comparison on a loaded machine, where it can be several
// tokens long.
func llamaCompletionHolding(t *testing.T, want []byte, args ...string) []byte {
	t.Helper()
	bin, err := exec.LookPath("llama-completion")
	if err != nil {
		t.Fatalf("llama-completion (the reference peer) is not on PATH: run the tests in the build root (./build.sh test): %v", err)
	}
	var out []byte
	for attempt := 1; attempt <= 5; attempt++ {
		var stderr bytes.Buffer
		cmd := exec.Command(bin, args...)
		cmd.Stderr = &stderr
		out, err = cmd.Output()
		if err != nil {
			t.Fatalf("llama-completion %v: %v\n%s", args, err, tail(stderr.Bytes()))
		}
		if bytes.HasSuffix(out, []byte("\n")) || want != nil && (bytes.HasPrefix(out, want) || !bytes.HasPrefix(want, out)) {
			return out
		}
		t.Logf("llama-completion's output was cut short (attempt %d), running it again", attempt)
	}
	t.Fatalf("llama-completion never printed a complete output in 5 runs; last: %q", out)
	return nil
}
