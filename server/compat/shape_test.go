package compat

import (
	"encoding/json"
	"reflect"
	"testing"
)

func decodeJSON(t *testing.T, s string) any {
	t.Helper()
	var v any
	if err := json.Unmarshal([]byte(s), &v); err != nil {
		t.Fatal(err)
	}
	return v
}

func TestCompareShapesFindsMissingExtraAndTypeChanges(t *testing.T) {
	theirs := decodeJSON(t, `{"a":1,"b":"x","c":{"d":[{"e":true}]},"n":null,"gone":1}`)
	ours := decodeJSON(t, `{"a":2,"b":3,"c":{"d":[{"e":false,"f":1}]},"n":null,"new":"y"}`)
	got := CompareShapes(theirs, ours, Allowance{})
	want := []string{
		"b: llama-server has string, we have number",
		"c.d[].f: extra (number) not in llama-server's answer",
		"gone: missing (llama-server has number)",
		"new: extra (string) not in llama-server's answer",
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("got %q\nwant %q", got, want)
	}
	if got := CompareShapes(theirs, ours, Allowance{Missing: []string{"gone"}, Extra: []string{"new", "c.d[].*", "b"}}); len(got) != 0 {
		t.Fatalf("allowed differences reported: %q", got)
	}
	if got := CompareShapes(decodeJSON(t, `[]`), decodeJSON(t, `[{"x":1}]`), Allowance{}); len(got) != 0 {
		t.Fatalf("an empty array has no element shape to compare: %q", got)
	}
}
