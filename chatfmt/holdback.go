package chatfmt

import "strings"

// Holdback streams a turn's text while holding back what may start a tool call (Starts, from the
// format); once a call starts, the rest is kept in Pending for parsing at the end.
type Holdback struct {
	Starts  []string
	Pending string
	inCall  bool
	format  Format
}

// NewHoldback holds back what may start one of f's calls.
func NewHoldback(f Format) *Holdback { return &Holdback{Starts: f.Starts(), format: f} }

// Rest is the held-back text to send when the turn made no call: as generated, or, for a format
// that frames its text (gpt-oss's channels), the text inside the frame.
func (h *Holdback) Rest() string {
	if f, ok := h.format.(interface{ visible(pending string) string }); ok {
		return f.visible(h.Pending)
	}
	return h.Pending
}

// push adds generated text and returns what may be sent as content now.
func (h *Holdback) Push(text string) string {
	if h.inCall {
		h.Pending += text
		return ""
	}
	h.Pending += text
	for _, s := range h.Starts {
		if i := strings.Index(h.Pending, s); i >= 0 {
			out := h.Pending[:i]
			h.Pending, h.inCall = h.Pending[i:], true
			return out
		}
	}
	keep := 0
	for _, s := range h.Starts {
		for k := min(len(s)-1, len(h.Pending)); k > keep; k-- {
			if h.Pending[len(h.Pending)-k:] == s[:k] {
				keep = k
				break
			}
		}
	}
	out := h.Pending[:len(h.Pending)-keep]
	h.Pending = h.Pending[len(h.Pending)-keep:]
	return out
}
