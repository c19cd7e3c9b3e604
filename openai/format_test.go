package openai

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

func chatCall(t *testing.T, body string) (ChatCall, error) {
	t.Helper()
	var req ChatCompletionRequest
	if err := json.Unmarshal([]byte(body), &req); err != nil {
		return ChatCall{}, err
	}
	return FromChatRequest(req, DefaultSampling)
}

func TestResponseFormatSetsTheGrammar(t *testing.T) {
	msgs := `"messages":[{"role":"user","content":"x"}]`
	for _, c := range []struct{ format, want string }{
		{`{"type":"text"}`, ""},
		{`{"type":"json_object"}`, "root ::= object"},
		{`{"type":"json_object","schema":{"type":"string"}}`, `root ::= "\"" char* "\""`},
		{`{"type":"json_schema","json_schema":{"name":"n","strict":true,"schema":{"enum":["a"]}}}`, `root ::= ("\"a\"")`},
	} {
		call, err := chatCall(t, `{`+msgs+`,"response_format":`+c.format+`}`)
		if err != nil {
			t.Fatalf("%s: %v", c.format, err)
		}
		if !strings.Contains(call.Request.Grammar, c.want) {
			t.Errorf("%s: grammar %q lacks %q", c.format, call.Request.Grammar, c.want)
		}
	}
}

func TestUnsupportedStructuredRequestsNameTheField(t *testing.T) {
	msgs := `"messages":[{"role":"user","content":"x"}]`
	for _, c := range []struct{ body, field string }{
		{`{` + msgs + `,"response_format":{"type":"yaml"}}`, "response_format.type"},
		{`{` + msgs + `,"response_format":{"type":"json_schema"}}`, "response_format.json_schema.schema"},
		{`{` + msgs + `,"response_format":{"type":"json_schema","json_schema":{"schema":{"type":"string","pattern":"a"}}}}`, "response_format.json_schema.schema"},
		{`{` + msgs + `,"top_logprobs":2}`, "top_logprobs"},
		{`{` + msgs + `,"logprobs":true,"top_logprobs":21}`, "top_logprobs"},
	} {
		_, err := chatCall(t, c.body)
		var re *RequestError
		if !errors.As(err, &re) || re.Field != c.field {
			t.Errorf("%s: error %v, want one naming %s", c.body, err, c.field)
		}
	}
	var native NativeCompletionRequest
	json.Unmarshal([]byte(`{"prompt":"x","grammar":"root ::= \"a\"","json_schema":{"type":"string"}}`), &native)
	_, err := FromNativeRequest(native, DefaultSampling)
	var re *RequestError
	if !errors.As(err, &re) || re.Field != "json_schema" || !strings.Contains(re.Message, "grammar") {
		t.Errorf("grammar and json_schema together: %v", err)
	}
	var legacy CompletionRequest
	json.Unmarshal([]byte(`{"prompt":"x","logprobs":30}`), &legacy)
	if _, err := FromCompletionRequest(legacy, DefaultSampling); !errors.As(err, &re) || re.Field != "logprobs" {
		t.Errorf("logprobs 30: %v", err)
	}
}
