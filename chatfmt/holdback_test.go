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

// A gpt-oss turn without a call streams nothing from its first channel header and ends with the
// final channel's text alone: the reasoning and the headers are not content.
func TestHoldbackGivesGptOssFinalChannel(t *testing.T) {
	h := NewHoldback(harmony{})
	var out string
	for _, piece := range []string{"<|chan", "nel|>analysis<|message|>Hm.<|end|>", "<|start|>assistant<|channel|>final<|message|>", "It is sunny."} {
		out += h.Push(piece)
	}
	if out != "" || h.Rest() != "It is sunny." {
		t.Fatalf("released %q, rest %q", out, h.Rest())
	}
	h = NewHoldback(hermes{})
	h.Push("a <tool_call>broken")
	if h.Rest() != "<tool_call>broken" {
		t.Fatalf("other formats send what they held as generated: %q", h.Rest())
	}
}
