package chatfmt

import (
	"fmt"
	"regexp"
	"strings"

	"github.com/expertsniper/expertsniper/grammar"
)

// ---------------------------------------------------------------- gpt-oss (OpenAI harmony)

// harmony is gpt-oss's format: a turn is a sequence of messages, each a header (channel, and for
// a call the recipient) and a body, e.g.
//
//	<|channel|>analysis<|message|>thinking<|end|><|start|>assistant<|channel|>final<|message|>answer
//	<|channel|>commentary to=functions.NAME <|constrain|>json<|message|>{…}<|call|>
//
// The answer is the final channel (and commentary without a recipient, the model's preamble);
// the analysis channel is reasoning, left out of the content as llama-server leaves it out of
// content. The template renders one call per assistant message, so there is one call per turn.
type harmony struct{}

const (
	harmonyChannel = "<|channel|>"
	harmonyMessage = "<|message|>"
	harmonyStart   = "<|start|>"
	// harmonyCallStart begins a call as the model writes it after the generation prompt
	// "<|start|>assistant".
	harmonyCallStart = harmonyChannel + "commentary to=functions."
)

func (harmony) Name() string { return "gpt-oss-harmony" }

// Starts holds back everything from the first channel header: the content is the final channel's
// body, which only the whole turn tells apart from reasoning and calls.
func (harmony) Starts() []string { return []string{harmonyChannel} }

func (harmony) Grammar(tools []Tool, c Choice) (string, []string, error) {
	c.Parallel = false // one call per turn: the template renders only an assistant message's first call
	g, err := callsGrammar(tools, c, frame{}, func(b *grammar.Builder, t Tool, args string) string {
		return grammar.Literal(harmonyCallStart+t.Name+" <|constrain|>json"+harmonyMessage) + " " + args + " " + grammar.Literal("<|call|>")
	})
	return g, lazy(c, harmonyCallStart), err
}

var (
	// harmonyRecipient is a call's recipient in a header, in either place the format allows it
	// (after the channel as the model writes it, before it as the template renders history).
	harmonyRecipient = regexp.MustCompile(`to=(?:functions\.)?([^\s<]+)`)
	harmonyEnd       = regexp.MustCompile(`<\|(?:end|call|return)\|>`)
)

func (harmony) Parse(text string, _ []Tool) (string, []Call, error) {
	if !strings.Contains(text, harmonyMessage) {
		return strings.TrimSpace(text), nil, nil
	}
	var content []string
	var calls []Call
	for _, msg := range strings.Split(text, harmonyStart) {
		header, body, ok := strings.Cut(msg, harmonyMessage)
		if !ok {
			// Text outside any message (a model that ignores the format): keep it visible.
			if s := strings.TrimSpace(strings.TrimPrefix(msg, "assistant")); s != "" {
				content = append(content, s)
			}
			continue
		}
		complete := false
		if loc := harmonyEnd.FindStringIndex(body); loc != nil {
			body, complete = body[:loc[0]], true
		}
		channel := ""
		if _, after, ok := strings.Cut(header, harmonyChannel); ok {
			if f := strings.Fields(after); len(f) > 0 {
				channel = f[0]
			}
		}
		if m := harmonyRecipient.FindStringSubmatch(header); m != nil {
			obj, _, ok := decodeObject(strings.TrimSpace(body))
			if !ok {
				if !complete {
					break // cut off (a length limit): the complete calls before it stand
				}
				return "", nil, fmt.Errorf("the arguments of %q are not a JSON object: %q", m[1], body)
			}
			calls = append(calls, Call{Name: m[1], Arguments: string(obj)})
			continue
		}
		if channel != "analysis" {
			if s := strings.TrimSpace(body); s != "" {
				content = append(content, s)
			}
		}
	}
	return strings.Join(content, "\n"), calls, nil
}

// visible is the answer in held-back text that made no call: the final channel, not the channel
// headers and reasoning around it.
func (f harmony) visible(pending string) string {
	if !strings.Contains(pending, harmonyMessage) {
		return pending
	}
	content, _, err := f.Parse(pending, nil)
	if err != nil {
		return pending
	}
	return content
}
