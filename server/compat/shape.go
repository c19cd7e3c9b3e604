// Package compat compares agent serve with the stock llama-server of the pinned llama.cpp build:
// the same requests go to both, and the JSON of the answers must have the same fields with the same
// types. This file holds the comparison; the tests start both servers on a generated model.
package compat

import (
	"fmt"
	"sort"
	"strings"
)

// jsonKind names a decoded JSON value's type.
func jsonKind(v any) string {
	switch v.(type) {
	case nil:
		return "null"
	case bool:
		return "boolean"
	case float64:
		return "number"
	case string:
		return "string"
	case []any:
		return "array"
	case map[string]any:
		return "object"
	}
	return fmt.Sprintf("%T", v)
}

// Allowance describes a known, accepted difference by path pattern: "a.b.*" matches every key of
// a.b, "a.b" only that path. Paths use "." for keys and "[]" for array elements.
type Allowance struct {
	Missing []string // paths llama-server has and we do not
	Extra   []string // paths we have and llama-server does not
}

func matches(patterns []string, path string) bool {
	for _, p := range patterns {
		if p == path {
			return true
		}
		if prefix, ok := strings.CutSuffix(p, "*"); ok && strings.HasPrefix(path, prefix) {
			return true
		}
	}
	return false
}

// CompareShapes lists every difference in fields and types between theirs (llama-server) and ours.
func CompareShapes(theirs, ours any, allow Allowance) []string {
	var diffs []string
	compare("", theirs, ours, allow, &diffs)
	sort.Strings(diffs)
	return diffs
}

func join(path, key string) string {
	if path == "" {
		return key
	}
	return path + "." + key
}

func compare(path string, theirs, ours any, allow Allowance, diffs *[]string) {
	tk, ok := jsonKind(theirs), jsonKind(ours)
	if tk != ok {
		if !matches(allow.Extra, path) && !matches(allow.Missing, path) {
			*diffs = append(*diffs, fmt.Sprintf("%s: llama-server has %s, we have %s", orRoot(path), tk, ok))
		}
		return
	}
	switch t := theirs.(type) {
	case map[string]any:
		o := ours.(map[string]any)
		for k, tv := range t {
			p := join(path, k)
			ov, present := o[k]
			if !present {
				if !matches(allow.Missing, p) {
					*diffs = append(*diffs, fmt.Sprintf("%s: missing (llama-server has %s)", p, jsonKind(tv)))
				}
				continue
			}
			compare(p, tv, ov, allow, diffs)
		}
		for k, ov := range o {
			p := join(path, k)
			if _, present := t[k]; !present && !matches(allow.Extra, p) {
				*diffs = append(*diffs, fmt.Sprintf("%s: extra (%s) not in llama-server's answer", p, jsonKind(ov)))
			}
		}
	case []any:
		o := ours.([]any)
		if len(t) > 0 && len(o) > 0 {
			compare(path+"[]", t[0], o[0], allow, diffs)
		}
	}
}

func orRoot(path string) string {
	if path == "" {
		return "(root)"
	}
	return path
}
