package grammar

import (
	"encoding/json"
	"errors"
	"strings"
	"testing"
)

func TestSchemaRules(t *testing.T) {
	for _, c := range []struct{ schema, want string }{
		{`{"type":"string","maxLength":3}`, `root ::= "\"" char{0,3} "\""`},
		{`{"type":"string","minLength":1}`, `root ::= "\"" char+ "\""`},
		{`{"enum":["a",1,null]}`, `root ::= ("\"a\"" | "1" | "null")`},
		{`{"const":{"k":"v\"q"}}`, `root ::= "{\"k\":\"v\\\"q\"}"`},
		{`{"type":"array","items":{"type":"integer"},"minItems":1,"maxItems":3}`,
			`root ::= "[" space root-item ("," space root-item){0,2} space "]"`},
		{`{"type":"object","properties":{"a":{"type":"integer"}},"required":["a"]}`,
			`root ::= "{" space root-a-kv space "}"`},
		{`{"type":"object","properties":{"a":{"type":"integer"},"b":{"type":"boolean"}}}`,
			`root ::= "{" space  ( root-a-kv root-a-rest | root-b-kv )? space "}"`},
		{`{"type":"object"}`, `root ::= object`},
		{`{"$ref":"#/$defs/n","$defs":{"n":{"anyOf":[{"type":"null"},{"type":"array","items":{"$ref":"#/$defs/n"}}]}}}`,
			`ref-n ::= ref-n-0 | ref-n-1`},
		{`{"type":"string","format":"date"}`, `root ::= "\"" date "\""`},
	} {
		g, err := FromJSONSchema(json.RawMessage(c.schema))
		if err != nil {
			t.Errorf("%s: %v", c.schema, err)
			continue
		}
		if !strings.Contains(g, c.want+"\n") {
			t.Errorf("%s: grammar lacks %q:\n%s", c.schema, c.want, g)
		}
	}
}

func TestSchemaErrorsNameTheKeyword(t *testing.T) {
	for _, c := range []struct{ schema, want string }{
		{`{"type":"string","pattern":"^a+$"}`, `#: keyword "pattern" is not supported`},
		{`{"type":"integer","minimum":3}`, `#: keyword "minimum" is not supported`},
		{`{"type":"object","properties":{"a":{"type":"string","format":"email"}}}`, `#/properties/a/format: format "email" is not supported`},
		{`{"type":"object","required":["x"]}`, `#/required: property "x" is required but not defined`},
		{`{"$ref":"#/$defs/missing"}`, `#/$ref: "#/$defs/missing" does not resolve`},
		{`{"$ref":"http://example.com/s.json"}`, `#/$ref: only local references`},
		{`{"type":"string","maxItems":2}`, `keyword "maxItems" does not apply to type string`},
		{`{"type":"strin"}`, `unknown type "strin"`},
		{`{"allOf":[{"type":"string"},{"maxLength":2}]}`, `only an allOf of exactly one schema`},
		{`[1]`, `a schema must be an object or a boolean`},
	} {
		_, err := FromJSONSchema(json.RawMessage(c.schema))
		var se *SchemaError
		if !errors.As(err, &se) || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s: error %v, want one containing %q", c.schema, err, c.want)
		}
	}
}

func TestLiteralEscapes(t *testing.T) {
	if got := Literal("a\"b\\c\nd"); got != `"a\"b\\c\nd"` {
		t.Fatalf("Literal = %s", got)
	}
}
