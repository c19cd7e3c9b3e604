package chatfmt

import "testing"

func TestHoldbackReleasesTextUntilACallStarts(t *testing.T) {
	h := Holdback{Starts: []string{"<tool_call>"}}
	var out string
	for _, piece := range []string{"Let me ", "check <", "tool", "_call>\n{\"name\"", ": 1}"} {
		out += h.Push(piece)
	}
	if out != "Let me check " || h.Pending != "<tool_call>\n{\"name\": 1}" {
		t.Fatalf("released %q, pending %q", out, h.Pending)
	}
	h = Holdback{Starts: []string{"<tool_call>"}}
	if got := h.Push("a <b"); got != "a <b" || h.Pending != "" {
		t.Fatalf("text that cannot start a call was held: %q, pending %q", got, h.Pending)
	}
	if got := h.Push("<"); got != "" || h.Pending != "<" {
		t.Fatalf("a possible start was released: %q", got)
	}
}
