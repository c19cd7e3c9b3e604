package compat

import (
	"testing"

	"github.com/expertsniper/expertsniper/modelgen/testmodels"
)

// /v1/responses on stock llama-server (--jinja) and on ours: the same greedy text and the same
// sequence of streamed event types.
func TestResponsesSideBySide(t *testing.T) {
	model := testmodels.WithTemplate(t, compatModel, "qwen3")
	theirsURL := startLlamaServer(t, model, "--jinja", "-c", "4096", "-np", "1")
	oursURL := startOursSized(t, model, 4096, 1)
	body := `{"input":"Say hello","instructions":"Be brief.","max_output_tokens":6,"temperature":0}`
	theirs := call(t, theirsURL, "POST", "/v1/responses", body)
	ours := call(t, oursURL, "POST", "/v1/responses", body)
	if theirs.status != 200 || ours.status != 200 {
		t.Fatalf("status ours %d %s, llama-server %d %s", ours.status, ours.raw, theirs.status, theirs.raw)
	}
	text := func(a answer) any { return field(a.body, "output", 0, "content", 0, "text") }
	if text(ours) != text(theirs) || field(ours.body, "usage", "input_tokens") != field(theirs.body, "usage", "input_tokens") {
		t.Errorf("ours %v (%v input tokens), llama-server %v (%v)", text(ours), field(ours.body, "usage", "input_tokens"),
			text(theirs), field(theirs.body, "usage", "input_tokens"))
	}
	// Differences on purpose: we report a response cut by max_output_tokens as incomplete (as
	// OpenAI does; llama-server says completed) and echo the request's settings; llama-server adds
	// completed_at, timings and an empty logprobs list per part.
	allow := Allowance{
		Missing: []string{"completed_at", "timings", "timings.*", "output[].content[].logprobs"},
		Extra: []string{"error", "incomplete_details", "incomplete_details.*", "instructions", "max_output_tokens", "parallel_tool_calls",
			"temperature", "top_p", "tool_choice", "tools", "metadata", "usage.output_tokens_details", "usage.output_tokens_details.*"},
	}
	for _, d := range CompareShapes(theirs.body, ours.body, allow) {
		t.Errorf("%s", d)
	}

	stream := `{"input":"Say hello","max_output_tokens":3,"temperature":0,"stream":true}`
	theirs = call(t, theirsURL, "POST", "/v1/responses", stream)
	ours = call(t, oursURL, "POST", "/v1/responses", stream)
	types := func(a answer) []any {
		var out []any
		for _, e := range a.events {
			out = append(out, field(e, "type"))
		}
		return out
	}
	tt, ot := types(theirs), types(ours)
	if len(tt) != len(ot) {
		t.Fatalf("event types differ:\nours   %v\ntheirs %v", ot, tt)
	}
	for i := range tt {
		if tt[i] != ot[i] {
			t.Fatalf("event %d: ours %v, llama-server %v\nours   %v\ntheirs %v", i, ot[i], tt[i], ot, tt)
		}
	}
}
