// Package grammar writes GBNF grammars (llama.cpp's grammar format, enforced by its grammar
// sampler) for structured output: any JSON value, JSON that follows a JSON Schema, and the pieces
// chat formats build tool calls from. It covers what llama-server's json_schema_to_grammar covers
// for the schemas clients send (objects, arrays, enums, const, numbers, strings with lengths,
// $ref, anyOf/oneOf); a keyword it cannot enforce is an error naming it, never silently dropped.
package grammar

import (
	"bytes"
	"encoding/json"
	"fmt"
	"regexp"
	"sort"
	"strconv"
	"strings"
)

// The primitive rules, as llama.cpp's converter writes them, so that both servers accept the same
// texts. space allows the whitespace a model tends to put between JSON tokens, bounded. One
// difference: char leaves out what llama.cpp's grammar would accept from invalid UTF-8 — a stray
// continuation byte (which it decodes as U+0080–U+00BF), surrogates and lead bytes past U+10FFFF —
// which a model (a random one easily) would otherwise write into a string. U+0080–U+00BF can
// still be written escaped (\u00a3); overlong encodings remain possible (no code point tells them).
var primitives = map[string]string{
	"space":         `| " " | "\n"{1,2} [ \t]{0,20}`,
	"boolean":       `("true" | "false")`,
	"decimal-part":  `[0-9]{1,16}`,
	"integral-part": `[0] | [1-9] [0-9]{0,15}`,
	"number":        `("-"? integral-part) ("." decimal-part)? ([eE] [-+]? integral-part)?`,
	"integer":       `("-"? integral-part)`,
	"value":         `object | array | string | number | boolean | null`,
	"object":        `"{" space ( string ":" space value ("," space string ":" space value)* )? space "}"`,
	"array":         `"[" space ( value ("," space value)* )? space "]"`,
	"char":          `[^"\\\x7F\x00-\x1F\x80-\xBF\uD800-\uDFFF\U00110000-\U003FFFFF] | [\\] (["\\bfnrt] | "u" [0-9a-fA-F]{4})`,
	"string":        `"\"" char* "\""`,
	"null":          `"null"`,
}

// What each primitive uses, so that only the needed ones are written.
var primitiveDeps = map[string][]string{
	"number": {"integral-part", "decimal-part"}, "integer": {"integral-part"},
	"value": {"object", "array", "string", "number", "boolean", "null"}, "object": {"string", "value", "space"},
	"array": {"value", "space"}, "string": {"char"},
}

// annotations are schema keywords that describe rather than constrain; they are skipped.
var annotations = map[string]bool{
	"title": true, "description": true, "$schema": true, "$id": true, "$comment": true, "default": true,
	"examples": true, "deprecated": true, "readOnly": true, "writeOnly": true, "$defs": true, "definitions": true,
	"strict": true,
}

// JSONValue is a grammar for any JSON object (response_format json_object), as llama-server's.
func JSONValue() string {
	b := newBuilder(nil)
	b.usePrimitive("object")
	b.rules["root"] = "object"
	return b.String()
}

// FromJSONSchema returns a grammar whose root rule matches exactly the JSON texts that follow
// schema (within what the package covers).
func FromJSONSchema(schema json.RawMessage) (string, error) {
	b := newBuilder(schema)
	if err := b.Add("root", schema); err != nil {
		return "", err
	}
	return b.String(), nil
}

// Builder collects the rules of one grammar. Chat formats use it to put several schemas (one per
// tool's arguments) in one grammar next to their own rules.
type Builder struct {
	root  json.RawMessage // for $ref
	rules map[string]string
	refs  map[string]string // $ref → rule name, set before the rule is built (recursion)
}

func newBuilder(root json.RawMessage) *Builder {
	return &Builder{root: root, rules: map[string]string{}, refs: map[string]string{}}
}

// NewBuilder starts an empty grammar.
func NewBuilder() *Builder { return newBuilder(nil) }

// Rule sets a hand-written rule (GBNF right-hand side) and returns its name.
func (b *Builder) Rule(name, body string) string {
	b.rules[name] = body
	return name
}

// Primitive makes sure a primitive rule (string, value, space, ...) is present and returns its name.
func (b *Builder) Primitive(name string) string {
	b.usePrimitive(name)
	return name
}

// AddSchema adds the rules for schema under name (a $ref in it resolves against schema itself)
// and returns name.
func (b *Builder) AddSchema(name string, schema json.RawMessage) (string, error) {
	saved := b.root
	b.root = schema
	defer func() { b.root = saved }()
	return name, b.Add(name, schema)
}

// String writes the grammar, root first, then the other rules by name.
func (b *Builder) String() string {
	names := make([]string, 0, len(b.rules))
	for n := range b.rules {
		if n != "root" {
			names = append(names, n)
		}
	}
	sort.Strings(names)
	var out strings.Builder
	if r, ok := b.rules["root"]; ok {
		fmt.Fprintf(&out, "root ::= %s\n", r)
	}
	for _, n := range names {
		fmt.Fprintf(&out, "%s ::= %s\n", n, b.rules[n])
	}
	return out.String()
}

func (b *Builder) usePrimitive(name string) {
	if _, ok := b.rules[name]; ok {
		return
	}
	b.rules[name] = primitives[name]
	for _, d := range primitiveDeps[name] {
		b.usePrimitive(d)
	}
}

// FreshName returns an unused rule name based on name (other characters than letters, digits and
// '-' are replaced).
func (b *Builder) FreshName(name string) string { return b.fresh(name) }

var notRuleChar = regexp.MustCompile(`[^a-zA-Z0-9-]+`)

// fresh returns an unused rule name based on name.
func (b *Builder) fresh(name string) string {
	name = strings.Trim(notRuleChar.ReplaceAllString(name, "-"), "-")
	if name == "" {
		name = "r"
	}
	if _, taken := b.rules[name]; !taken {
		if _, prim := primitives[name]; !prim {
			return name
		}
	}
	for i := 1; ; i++ {
		n := name + "-" + strconv.Itoa(i)
		if _, taken := b.rules[n]; !taken {
			return n
		}
	}
}

// SchemaError is a schema the converter cannot turn into a grammar; Path locates the keyword.
type SchemaError struct {
	Path    string
	Message string
}

func (e *SchemaError) Error() string {
	if e.Path == "" {
		return e.Message
	}
	return e.Path + ": " + e.Message
}

// Add builds the rule name for schema (name is taken as is; it must be unused).
func (b *Builder) Add(name string, schema json.RawMessage) error {
	b.rules[name] = "" // reserve the name while its parts are built
	body, err := b.visit(schema, name, "#")
	if err != nil {
		delete(b.rules, name)
		return err
	}
	b.rules[name] = body
	return nil
}

// visit returns the GBNF expression for schema; helper rules are named after name.
func (b *Builder) visit(raw json.RawMessage, name, path string) (string, error) {
	raw = bytes.TrimSpace(raw)
	if bytes.Equal(raw, []byte("true")) || len(raw) == 0 {
		b.usePrimitive("value")
		return "value", nil
	}
	if bytes.Equal(raw, []byte("false")) {
		return "", &SchemaError{path, "the schema false matches nothing"}
	}
	var s map[string]json.RawMessage
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", &SchemaError{path, "a schema must be an object or a boolean"}
	}
	for k := range s {
		if !annotations[k] && !handled[k] {
			return "", &SchemaError{path, fmt.Sprintf("keyword %q is not supported", k)}
		}
	}
	if ref, ok := s["$ref"]; ok {
		return b.ref(ref, path)
	}
	for _, k := range []string{"anyOf", "oneOf"} {
		if alts, ok := s[k]; ok {
			return b.alternatives(alts, name, path+"/"+k)
		}
	}
	if all, ok := s["allOf"]; ok {
		var parts []json.RawMessage
		if err := json.Unmarshal(all, &parts); err != nil || len(parts) != 1 {
			return "", &SchemaError{path + "/allOf", "only an allOf of exactly one schema is supported"}
		}
		return b.visit(parts[0], name, path+"/allOf/0")
	}
	if c, ok := s["const"]; ok {
		lit, err := jsonLiteral(c)
		if err != nil {
			return "", &SchemaError{path + "/const", err.Error()}
		}
		return lit, nil
	}
	if e, ok := s["enum"]; ok {
		var vals []json.RawMessage
		if err := json.Unmarshal(e, &vals); err != nil || len(vals) == 0 {
			return "", &SchemaError{path + "/enum", "must be a non-empty array"}
		}
		alts := make([]string, len(vals))
		for i, v := range vals {
			lit, err := jsonLiteral(v)
			if err != nil {
				return "", &SchemaError{path + "/enum", err.Error()}
			}
			alts[i] = lit
		}
		return "(" + strings.Join(alts, " | ") + ")", nil
	}
	types, err := schemaTypes(s, path)
	if err != nil {
		return "", err
	}
	if len(types) > 1 {
		alts := make([]string, len(types))
		for i, t := range types {
			sub := b.fresh(name + "-" + t)
			b.rules[sub] = ""
			body, err := b.typed(t, s, sub, path)
			if err != nil {
				return "", err
			}
			b.rules[sub] = body
			alts[i] = sub
		}
		return strings.Join(alts, " | "), nil
	}
	return b.typed(types[0], s, name, path)
}

// handled lists the keywords visit enforces.
var handled = map[string]bool{
	"type": true, "$ref": true, "anyOf": true, "oneOf": true, "allOf": true, "const": true, "enum": true,
	"properties": true, "required": true, "additionalProperties": true,
	"items": true, "prefixItems": true, "minItems": true, "maxItems": true,
	"minLength": true, "maxLength": true, "format": true,
}

// schemaTypes reads "type" (a name or a list); without it the keywords present decide.
func schemaTypes(s map[string]json.RawMessage, path string) ([]string, error) {
	t, ok := s["type"]
	if !ok {
		switch {
		case s["properties"] != nil || s["additionalProperties"] != nil:
			return []string{"object"}, nil
		case s["items"] != nil || s["prefixItems"] != nil:
			return []string{"array"}, nil
		case s["minLength"] != nil || s["maxLength"] != nil || s["format"] != nil:
			return []string{"string"}, nil
		}
		return []string{"any"}, nil
	}
	var one string
	if json.Unmarshal(t, &one) == nil {
		return []string{one}, nil
	}
	var many []string
	if err := json.Unmarshal(t, &many); err != nil || len(many) == 0 {
		return nil, &SchemaError{path + "/type", "must be a type name or a non-empty list of them"}
	}
	return many, nil
}

// typed builds the expression for one type of schema s.
func (b *Builder) typed(t string, s map[string]json.RawMessage, name, path string) (string, error) {
	only := func(kind string, keys ...string) error {
		allowed := map[string]bool{}
		for _, k := range keys {
			allowed[k] = true
		}
		for k := range s {
			if handled[k] && k != "type" && !allowed[k] {
				return &SchemaError{path, fmt.Sprintf("keyword %q does not apply to type %s", k, kind)}
			}
		}
		return nil
	}
	switch t {
	case "any":
		b.usePrimitive("value")
		return "value", nil
	case "null", "boolean", "number", "integer":
		if err := only(t); err != nil {
			return "", err
		}
		b.usePrimitive(t)
		return t, nil
	case "string":
		if err := only(t, "minLength", "maxLength", "format"); err != nil {
			return "", err
		}
		return b.stringRule(s, path)
	case "array":
		if err := only(t, "items", "prefixItems", "minItems", "maxItems"); err != nil {
			return "", err
		}
		return b.arrayRule(s, name, path)
	case "object":
		if err := only(t, "properties", "required", "additionalProperties"); err != nil {
			return "", err
		}
		return b.objectRule(s, name, path)
	}
	return "", &SchemaError{path + "/type", fmt.Sprintf("unknown type %q", t)}
}

// formats are the string formats llama.cpp's converter enforces, as regular grammar pieces.
var formats = map[string]string{
	"date":      `[0-9]{4} "-" ( "0" [1-9] | "1" [0-2] ) "-" ( "0" [1-9] | [1-2] [0-9] | "3" [0-1] )`,
	"time":      `([01] [0-9] | "2" [0-3]) ":" [0-5] [0-9] ":" [0-5] [0-9] ( "." [0-9]{3} )? ( "Z" | ( "+" | "-" ) ( [01] [0-9] | "2" [0-3] ) ":" [0-5] [0-9] )`,
	"date-time": "", // date "T" time, built below
	"uuid":      `[0-9a-fA-F]{8} "-" [0-9a-fA-F]{4} "-" [0-9a-fA-F]{4} "-" [0-9a-fA-F]{4} "-" [0-9a-fA-F]{12}`,
}

func (b *Builder) stringRule(s map[string]json.RawMessage, path string) (string, error) {
	if f, ok := s["format"]; ok {
		var name string
		_ = json.Unmarshal(f, &name)
		if _, known := formats[name]; !known {
			return "", &SchemaError{path + "/format", fmt.Sprintf("format %q is not supported (date, time, date-time, uuid are)", name)}
		}
		if s["minLength"] != nil || s["maxLength"] != nil {
			return "", &SchemaError{path, "minLength/maxLength together with format are not supported"}
		}
		for _, part := range []string{"date", "time"} {
			if _, ok := b.rules[part]; !ok {
				b.rules[part] = formats[part]
			}
		}
		body := formats[name]
		switch name {
		case "date", "time":
			body = name
		case "date-time":
			body = `date "T" time`
		}
		return `"\"" ` + body + ` "\""`, nil
	}
	lo, hi, err := bounds(s, "minLength", "maxLength", path)
	if err != nil {
		return "", err
	}
	b.usePrimitive("char")
	return `"\"" ` + Repeat("char", lo, hi) + ` "\""`, nil
}

// bounds reads a pair of non-negative integer limits; hi is -1 when absent.
func bounds(s map[string]json.RawMessage, minKey, maxKey, path string) (lo, hi int, err error) {
	hi = -1
	read := func(k string, dst *int) error {
		v, ok := s[k]
		if !ok {
			return nil
		}
		var f float64
		if json.Unmarshal(v, &f) != nil || f < 0 || f != float64(int(f)) {
			return &SchemaError{path + "/" + k, "must be a non-negative integer"}
		}
		*dst = int(f)
		return nil
	}
	if err := read(minKey, &lo); err != nil {
		return 0, 0, err
	}
	if err := read(maxKey, &hi); err != nil {
		return 0, 0, err
	}
	if hi >= 0 && hi < lo {
		return 0, 0, &SchemaError{path, fmt.Sprintf("%s %d is above %s %d", minKey, lo, maxKey, hi)}
	}
	return lo, hi, nil
}

// Repeat is item repeated lo..hi times (hi -1: unbounded) in GBNF.
func Repeat(item string, lo, hi int) string {
	switch {
	case lo == 0 && hi < 0:
		return item + "*"
	case lo == 1 && hi < 0:
		return item + "+"
	case lo == 0 && hi == 1:
		return item + "?"
	case hi < 0:
		return fmt.Sprintf("%s{%d,}", item, lo)
	case lo == hi:
		return fmt.Sprintf("%s{%d}", item, lo)
	}
	return fmt.Sprintf("%s{%d,%d}", item, lo, hi)
}

func (b *Builder) arrayRule(s map[string]json.RawMessage, name, path string) (string, error) {
	b.usePrimitive("space")
	if p, ok := s["prefixItems"]; ok {
		if s["items"] != nil || s["minItems"] != nil || s["maxItems"] != nil {
			return "", &SchemaError{path, "prefixItems together with items/minItems/maxItems is not supported"}
		}
		var items []json.RawMessage
		if err := json.Unmarshal(p, &items); err != nil {
			return "", &SchemaError{path + "/prefixItems", "must be an array of schemas"}
		}
		parts := make([]string, len(items))
		for i, it := range items {
			sub, err := b.subRule(it, fmt.Sprintf("%s-%d", name, i), fmt.Sprintf("%s/prefixItems/%d", path, i))
			if err != nil {
				return "", err
			}
			parts[i] = sub
		}
		return `"[" space ` + strings.Join(parts, ` "," space `) + ` space "]"`, nil
	}
	item := "value"
	if it, ok := s["items"]; ok {
		var err error
		if item, err = b.subRule(it, name+"-item", path+"/items"); err != nil {
			return "", err
		}
	} else {
		b.usePrimitive("value")
	}
	lo, hi, err := bounds(s, "minItems", "maxItems", path)
	if err != nil {
		return "", err
	}
	if hi == 0 {
		return `"[" space "]"`, nil
	}
	restHi := hi - 1
	if hi < 0 {
		restHi = -1
	}
	list := item + " " + Repeat(`("," space `+item+`)`, max(lo-1, 0), restHi)
	if lo == 0 {
		list = "(" + list + ")?"
	}
	return `"[" space ` + list + ` space "]"`, nil
}

func (b *Builder) objectRule(s map[string]json.RawMessage, name, path string) (string, error) {
	b.usePrimitive("space")
	var required []string
	if r, ok := s["required"]; ok {
		if err := json.Unmarshal(r, &required); err != nil {
			return "", &SchemaError{path + "/required", "must be an array of property names"}
		}
	}
	var keys []string
	var props map[string]json.RawMessage
	if p, ok := s["properties"]; ok {
		var err error
		if keys, err = OrderedKeys(p); err != nil {
			return "", &SchemaError{path + "/properties", "must be an object of schemas"}
		}
		_ = json.Unmarshal(p, &props)
	}
	isRequired := map[string]bool{}
	for _, k := range required {
		if _, ok := props[k]; !ok {
			return "", &SchemaError{path + "/required", fmt.Sprintf("property %q is required but not defined", k)}
		}
		isRequired[k] = true
	}
	extra := bytes.TrimSpace(s["additionalProperties"])
	if len(props) == 0 && (len(extra) == 0 || bytes.Equal(extra, []byte("true"))) {
		b.usePrimitive("object")
		return "object", nil
	}
	kv := map[string]string{}
	var req, opt []string
	for _, k := range keys {
		sub, err := b.subRule(props[k], name+"-"+k, path+"/properties/"+k)
		if err != nil {
			return "", err
		}
		lit, _ := jsonLiteral(mustJSON(k))
		kv[k] = b.Rule(b.fresh(name+"-"+k+"-kv"), lit+` space ":" space `+sub)
		if isRequired[k] {
			req = append(req, k)
		} else {
			opt = append(opt, k)
		}
	}
	if len(extra) > 0 && !bytes.Equal(extra, []byte("false")) {
		value, err := b.subRule(extra, name+"-additional", path+"/additionalProperties")
		if err != nil {
			return "", err
		}
		b.usePrimitive("string")
		kv["*"] = b.Rule(b.fresh(name+"-additional-kv"), `string ":" space `+value)
		opt = append(opt, "*")
	}
	reqParts := make([]string, len(req))
	for i, k := range req {
		reqParts[i] = kv[k]
	}
	rule := `"{" space ` + strings.Join(reqParts, ` "," space `)
	if len(opt) > 0 {
		// As llama.cpp: the optional properties in order, each chain starting at any one of them.
		var chain func(ks []string, firstOptional bool) string
		chain = func(ks []string, firstOptional bool) string {
			k, rest := ks[0], ks[1:]
			comma := `( "," space ` + kv[k] + ` )`
			var res string
			switch {
			case firstOptional && k == "*":
				res = comma + "*"
			case firstOptional:
				res = comma + "?"
			case k == "*":
				res = kv[k] + " " + comma + "*"
			default:
				res = kv[k]
			}
			if len(rest) > 0 {
				res += " " + b.Rule(b.fresh(name+"-"+k+"-rest"), chain(rest, true))
			}
			return res
		}
		alts := make([]string, len(opt))
		for i := range opt {
			alts[i] = chain(opt[i:], false)
		}
		inner := strings.Join(alts, " | ")
		if len(req) > 0 {
			inner = `"," space ( ` + inner + ` )`
		}
		rule += " ( " + inner + " )?"
	}
	return rule + ` space "}"`, nil
}

// subRule builds schema as its own rule (a rule name keeps the grammar readable and lets $ref
// recurse) and returns the name.
func (b *Builder) subRule(schema json.RawMessage, name, path string) (string, error) {
	n := b.fresh(name)
	b.rules[n] = ""
	body, err := b.visit(schema, n, path)
	if err != nil {
		return "", err
	}
	b.rules[n] = body
	return n, nil
}

func (b *Builder) alternatives(raw json.RawMessage, name, path string) (string, error) {
	var alts []json.RawMessage
	if err := json.Unmarshal(raw, &alts); err != nil || len(alts) == 0 {
		return "", &SchemaError{path, "must be a non-empty array of schemas"}
	}
	names := make([]string, len(alts))
	for i, a := range alts {
		n, err := b.subRule(a, fmt.Sprintf("%s-%d", name, i), fmt.Sprintf("%s/%d", path, i))
		if err != nil {
			return "", err
		}
		names[i] = n
	}
	return strings.Join(names, " | "), nil
}

// ref resolves a local $ref (#/$defs/X, #/definitions/X, # or any JSON pointer into the root).
func (b *Builder) ref(raw json.RawMessage, path string) (string, error) {
	var ref string
	if err := json.Unmarshal(raw, &ref); err != nil || !strings.HasPrefix(ref, "#") {
		return "", &SchemaError{path + "/$ref", "only local references (#/...) are supported"}
	}
	if n, ok := b.refs[ref]; ok {
		return n, nil
	}
	target := b.root
	for _, part := range strings.Split(strings.TrimPrefix(strings.TrimPrefix(ref, "#"), "/"), "/") {
		if part == "" {
			continue
		}
		part = strings.ReplaceAll(strings.ReplaceAll(part, "~1", "/"), "~0", "~")
		var obj map[string]json.RawMessage
		if err := json.Unmarshal(target, &obj); err != nil || obj[part] == nil {
			return "", &SchemaError{path + "/$ref", fmt.Sprintf("%q does not resolve", ref)}
		}
		target = obj[part]
	}
	last := ref[strings.LastIndex(ref, "/")+1:]
	n := b.fresh("ref-" + last)
	b.refs[ref] = n
	b.rules[n] = ""
	body, err := b.visit(target, n, ref)
	if err != nil {
		return "", err
	}
	b.rules[n] = body
	return n, nil
}

// OrderedKeys returns the keys of a JSON object in document order (property order is the order
// the model writes them in, as llama.cpp does).
func OrderedKeys(raw json.RawMessage) ([]string, error) {
	d := json.NewDecoder(bytes.NewReader(raw))
	if t, err := d.Token(); err != nil || t != json.Delim('{') {
		return nil, fmt.Errorf("not an object")
	}
	var keys []string
	for d.More() {
		t, err := d.Token()
		if err != nil {
			return nil, err
		}
		keys = append(keys, t.(string))
		var skip json.RawMessage
		if err := d.Decode(&skip); err != nil {
			return nil, err
		}
	}
	return keys, nil
}

// jsonLiteral is the GBNF literal of a JSON value's compact text.
func jsonLiteral(v json.RawMessage) (string, error) {
	var buf bytes.Buffer
	if err := json.Compact(&buf, v); err != nil {
		return "", fmt.Errorf("not valid JSON")
	}
	return Literal(buf.String()), nil
}

// Literal quotes s as a GBNF string literal.
func Literal(s string) string {
	var out strings.Builder
	out.WriteByte('"')
	for _, r := range s {
		switch r {
		case '"':
			out.WriteString(`\"`)
		case '\\':
			out.WriteString(`\\`)
		case '\n':
			out.WriteString(`\n`)
		case '\r':
			out.WriteString(`\r`)
		case '\t':
			out.WriteString(`\t`)
		default:
			out.WriteRune(r)
		}
	}
	out.WriteByte('"')
	return out.String()
}

func mustJSON(v any) json.RawMessage {
	b, _ := json.Marshal(v)
	return b
}
