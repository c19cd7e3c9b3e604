package local

import (
	"encoding/json"
	"math"
	"strings"
	"testing"

	"github.com/santhosh-tekuri/jsonschema/v6"

	"github.com/expertsniper/expertsniper/engine"
	"github.com/expertsniper/expertsniper/grammar"
)

// A random-weight model under a schema's grammar must write JSON that follows the schema, whatever
// it would have written freely; several seeds at a high temperature try many paths.
func TestGrammarForcesSchemaValidJSON(t *testing.T) {
	e := open(t, Options{})
	schema := `{"type":"object","properties":{
		"name":{"type":"string","maxLength":8},
		"age":{"type":"integer"},
		"tags":{"type":"array","items":{"enum":["a","b",3]},"minItems":1,"maxItems":3},
		"pet":{"$ref":"#/$defs/pet"},
		"note":{"anyOf":[{"type":"null"},{"const":"ok"}]}},
		"required":["name","age","tags"],
		"$defs":{"pet":{"type":"object","properties":{"kind":{"enum":["cat","dog"]}},"required":["kind"]}}}`
	g, err := grammar.FromJSONSchema(json.RawMessage(schema))
	if err != nil {
		t.Fatalf("FromJSONSchema: %v", err)
	}
	compiler := jsonschema.NewCompiler()
	var doc any
	if err := json.Unmarshal([]byte(schema), &doc); err != nil {
		t.Fatal(err)
	}
	if err := compiler.AddResource("schema.json", doc); err != nil {
		t.Fatal(err)
	}
	validator, err := compiler.Compile("schema.json")
	if err != nil {
		t.Fatal(err)
	}
	for seed := uint32(1); seed <= 4; seed++ {
		r := complete(t, e, engine.Request{Prompt: prompt, MaxTokens: 400, Slot: -1, Grammar: g,
			Sampling: engine.Sampling{Temperature: 1.5, Seed: seed}})
		if r.FinishReason != "stop" {
			t.Fatalf("seed %d: finish %q after %q", seed, r.FinishReason, r.Text)
		}
		var v any
		if err := json.Unmarshal([]byte(r.Text), &v); err != nil {
			t.Fatalf("seed %d: %q is not JSON: %v", seed, r.Text, err)
		}
		if err := validator.Validate(v); err != nil {
			t.Fatalf("seed %d: %q does not follow the schema: %v", seed, r.Text, err)
		}
		t.Logf("seed %d: %s", seed, r.Text)
	}
}

func TestGrammarThatDoesNotParseIsAnError(t *testing.T) {
	e := open(t, Options{})
	_, err := e.Complete(t.Context(), engine.Request{Prompt: prompt, MaxTokens: 4, Slot: -1, Grammar: "root ::= ("}, nil)
	if err == nil || !strings.Contains(err.Error(), "grammar") {
		t.Fatalf("err = %v, want a grammar error", err)
	}
}

// A lazy grammar leaves the text before its trigger free and constrains what follows it.
func TestLazyGrammarAppliesAfterTrigger(t *testing.T) {
	e := open(t, Options{})
	g := `root ::= "<tool_call>" " {\"ok\": true}" "</tool_call>"`
	free := complete(t, e, engine.Request{Prompt: prompt, MaxTokens: 8, Slot: -1})
	lazy := complete(t, e, engine.Request{Prompt: prompt, MaxTokens: 8, Slot: -1, Grammar: g, GrammarTriggers: []string{"<tool_call>"}})
	if free.Text != lazy.Text {
		t.Fatalf("an untriggered lazy grammar changed the text: %q vs %q", free.Text, lazy.Text)
	}
	// The same grammar, not lazy, allows exactly one text.
	forced := complete(t, e, engine.Request{Prompt: prompt, MaxTokens: 40, Slot: -1, Grammar: g})
	if forced.Text != `<tool_call> {"ok": true}</tool_call>` {
		t.Fatalf("forced text %q", forced.Text)
	}
}

func TestLogprobsAreNormalisedAndMatchTheSampledToken(t *testing.T) {
	e := open(t, Options{})
	var streamed []engine.TokenLogprob
	r, err := e.Complete(t.Context(), engine.Request{Prompt: prompt, MaxTokens: 6, Slot: -1, Logprobs: true, TopLogprobs: 3},
		func(tok engine.Token) error {
			streamed = append(streamed, tok.Logprobs...)
			return nil
		})
	if err != nil {
		t.Fatal(err)
	}
	if len(r.Logprobs) != r.Timings.PredictedTokens || len(streamed) != len(r.Logprobs) {
		t.Fatalf("%d logprobs (%d streamed) for %d tokens", len(r.Logprobs), len(streamed), r.Timings.PredictedTokens)
	}
	var text strings.Builder
	for i, lp := range r.Logprobs {
		text.WriteString(lp.Text)
		if len(lp.Top) != 3 || lp.Logprob > 0 || lp.Top[0].ID != lp.ID || lp.Top[0].Logprob != lp.Logprob {
			t.Fatalf("token %d: greedy choice %+v is not the top alternative", i, lp)
		}
		if !(lp.Top[0].Logprob >= lp.Top[1].Logprob && lp.Top[1].Logprob >= lp.Top[2].Logprob) {
			t.Fatalf("token %d: alternatives not sorted: %+v", i, lp.Top)
		}
		if p := math.Exp(float64(lp.Logprob)); p <= 0 || p > 1 {
			t.Fatalf("token %d: probability %v", i, p)
		}
	}
	if text.String() != r.Text {
		t.Fatalf("token texts %q, result %q", text.String(), r.Text)
	}
}
