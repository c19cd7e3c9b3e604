package compat

import (
	"encoding/json"
	"math"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/expertsniper/expertsniper/modelgen/testmodels"
)

// personSchema exercises the converter's main paths: required and optional properties, an enum, a
// bounded string, a bounded array and a $ref.
const personSchema = `{"type":"object","properties":{
	"name":{"type":"string","maxLength":12},
	"age":{"type":"integer"},
	"colour":{"enum":["red","green","blue"]},
	"friends":{"type":"array","items":{"$ref":"#/$defs/friend"},"maxItems":2},
	"score":{"type":"number"}},
	"required":["name","age","colour"],
	"$defs":{"friend":{"type":"object","properties":{"name":{"type":"string","maxLength":6}},"required":["name"]}}}`

func schemaValidator(t *testing.T, schema string) *jsonschema.Schema {
	t.Helper()
	var doc any
	if err := json.Unmarshal([]byte(schema), &doc); err != nil {
		t.Fatal(err)
	}
	c := jsonschema.NewCompiler()
	if err := c.AddResource("schema.json", doc); err != nil {
		t.Fatal(err)
	}
	v, err := c.Compile("schema.json")
	if err != nil {
		t.Fatal(err)
	}
	return v
}

// followsSchema fails unless text is JSON that follows v.
func followsSchema(t *testing.T, v *jsonschema.Schema, who, text string) {
	t.Helper()
	var doc any
	if err := json.Unmarshal([]byte(text), &doc); err != nil {
		t.Fatalf("%s: %q is not JSON: %v", who, text, err)
	}
	if err := v.Validate(doc); err != nil {
		t.Fatalf("%s: %q does not follow the schema: %v", who, text, err)
	}
}

func field(v any, path ...any) any {
	for _, p := range path {
		switch k := p.(type) {
		case string:
			m, _ := v.(map[string]any)
			v = m[k]
		case int:
			a, _ := v.([]any)
			if k >= len(a) {
				return nil
			}
			v = a[k]
		}
	}
	return v
}

// Greedy decoding under the same schema gives the same JSON on both servers: the grammars differ in
// text but accept the same language, so the grammar sampler allows the same tokens at every step.
func TestStructuredOutputAndLogprobsSideBySide(t *testing.T) {
	model := testmodels.Path(t, compatModel)
	theirsURL := startLlamaServer(t, model, "--jinja")
	oursURL := startOurs(t, model)
	validator := schemaValidator(t, personSchema)

	chat := `{"messages":[{"role":"user","content":"Describe a person"}],"max_tokens":150,"temperature":0,
		"response_format":{"type":"json_schema","json_schema":{"name":"person","schema":` + personSchema + `}}}`
	theirs := call(t, theirsURL, "POST", "/v1/chat/completions", chat)
	ours := call(t, oursURL, "POST", "/v1/chat/completions", chat)
	if ours.status != 200 || theirs.status != 200 {
		t.Fatalf("json_schema chat: status ours %d %s, llama-server %d %s", ours.status, ours.raw, theirs.status, theirs.raw)
	}
	// In chat, llama-server's grammar lets the model write whitespace before the JSON (and trims
	// it from the content), so the texts differ; both must follow the schema.
	oursText, _ := field(ours.body, "choices", 0, "message", "content").(string)
	theirsText, _ := field(theirs.body, "choices", 0, "message", "content").(string)
	followsSchema(t, validator, "ours", oursText)
	followsSchema(t, validator, "llama-server", theirsText)

	native := `{"prompt":"Once upon a time","n_predict":150,"temperature":0,"json_schema":` + personSchema + `}`
	theirs = call(t, theirsURL, "POST", "/completion", native)
	ours = call(t, oursURL, "POST", "/completion", native)
	oursText, _ = field(ours.body, "content").(string)
	theirsText, _ = field(theirs.body, "content").(string)
	if oursText != theirsText {
		t.Errorf("/completion json_schema differs:\nours   %q\ntheirs %q", oursText, theirsText)
	}
	if field(ours.body, "stop_type") == "eos" {
		followsSchema(t, validator, "ours /completion", oursText)
	}

	jsonObject := `{"messages":[{"role":"user","content":"Give me JSON"}],"max_tokens":60,"temperature":0,"response_format":{"type":"json_object"}}`
	ours = call(t, oursURL, "POST", "/v1/chat/completions", jsonObject)
	oursText, _ = field(ours.body, "choices", 0, "message", "content").(string)
	followsSchema(t, schemaValidator(t, `{"type":"object"}`), "ours json_object", oursText)

	// Logprobs: the same tokens with the same log-probabilities and alternatives.
	lp := `{"messages":[{"role":"user","content":"hi"}],"max_tokens":6,"temperature":0,"logprobs":true,"top_logprobs":3}`
	theirs = call(t, theirsURL, "POST", "/v1/chat/completions", lp)
	ours = call(t, oursURL, "POST", "/v1/chat/completions", lp)
	for _, d := range CompareShapes(theirs.body, ours.body, Allowance{}) {
		t.Errorf("chat logprobs: %s", d)
	}
	compareLogprobs(t, "chat", field(theirs.body, "choices", 0, "logprobs", "content"), field(ours.body, "choices", 0, "logprobs", "content"))

	nprobs := `{"prompt":"Once upon a time","n_predict":4,"temperature":0,"n_probs":2}`
	theirs = call(t, theirsURL, "POST", "/completion", nprobs)
	ours = call(t, oursURL, "POST", "/completion", nprobs)
	compareLogprobs(t, "/completion", field(theirs.body, "completion_probabilities"), field(ours.body, "completion_probabilities"))
}

func compareLogprobs(t *testing.T, what string, theirs, ours any) {
	t.Helper()
	tl, _ := theirs.([]any)
	ol, _ := ours.([]any)
	// llama-server leaves out the tokens whose text was still held back (half a character) when
	// generation ended; we report every generated token.
	if len(tl) == 0 || len(ol) < len(tl) || len(ol) > len(tl)+1 {
		t.Fatalf("%s: %d logprob entries, llama-server %d\nours %v\ntheirs %v", what, len(ol), len(tl), ours, theirs)
	}
	close := func(a, b any) bool {
		x, _ := a.(float64)
		y, _ := b.(float64)
		return math.Abs(x-y) < 1e-3
	}
	for i := range tl {
		if field(tl[i], "id") != field(ol[i], "id") || !close(field(tl[i], "logprob"), field(ol[i], "logprob")) {
			t.Errorf("%s token %d: ours %v, llama-server %v", what, i, ol[i], tl[i])
		}
		tt, _ := field(tl[i], "top_logprobs").([]any)
		ot, _ := field(ol[i], "top_logprobs").([]any)
		if len(tt) != len(ot) {
			t.Errorf("%s token %d: %d alternatives, llama-server %d", what, i, len(ot), len(tt))
			continue
		}
		for j := range tt {
			if field(tt[j], "id") != field(ot[j], "id") || !close(field(tt[j], "logprob"), field(ot[j], "logprob")) {
				t.Errorf("%s token %d alternative %d: ours %v, llama-server %v", what, i, j, ot[j], tt[j])
			}
		}
	}
}
