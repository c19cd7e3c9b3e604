package chatfmt

import (
	"bytes"
	"encoding/json"
	"fmt"
	"regexp"
	"strings"

	"github.com/expertsniper/expertsniper/grammar"
)

// Choice is what the request allows: a call is optional (auto), required, or one named tool.
type Choice struct {
	Required bool
	Name     string // non-empty: exactly this tool (implies Required)
	Parallel bool   // more than one call per turn
}

// Format is one family's way of writing tool calls.
type Format interface {
	Name() string
	// Grammar constrains a turn to calls whose arguments follow the tools' schemas. For an optional
	// call it also returns the trigger strings after which the grammar applies (lazy).
	Grammar(tools []Tool, c Choice) (g string, triggers []string, err error)
	// Parse splits a generated turn into its text and its calls.
	Parse(text string, tools []Tool) (content string, calls []Call, err error)
	// Starts are the strings a call begins with: a streaming server holds back text that may be
	// the beginning of one.
	Starts() []string
}

// Detect finds the tool-call format a template writes, from markers in its text as llama-server
// does; nil when the template takes no tools.
func Detect(src string) Format {
	switch {
	case strings.Contains(src, "<|channel|>"):
		return harmony{}
	case strings.Contains(src, dsml) && strings.Contains(src, "invoke name="):
		return deepseekDSML{}
	case strings.Contains(src, "<function=") && strings.Contains(src, "<parameter="):
		return qwenXML{}
	case strings.Contains(src, "<tool_call>"):
		return hermes{}
	case strings.Contains(src, "[TOOL_CALLS]") && strings.Contains(src, "[ARGS]"):
		return mistral{}
	case strings.Contains(src, "<|start_header_id|>") && strings.Contains(src, "tools"):
		return llama3{}
	}
	return nil
}

// toolsFor is the tools a choice allows, checked.
func toolsFor(tools []Tool, c Choice) ([]Tool, error) {
	if len(tools) == 0 {
		return nil, fmt.Errorf("no tools")
	}
	if c.Name == "" {
		return tools, nil
	}
	for _, t := range tools {
		if t.Name == c.Name {
			return []Tool{t}, nil
		}
	}
	return nil, fmt.Errorf("tool %q is not among the tools", c.Name)
}

// frame is what a format writes around its calls: before the first, between two, after the last.
type frame struct{ open, sep, close string }

// callsGrammar writes root as one call (or, parallel, several) of any allowed tool inside f;
// call(b, tool, args) writes one tool's call given its arguments rule.
func callsGrammar(tools []Tool, c Choice, f frame, call func(b *grammar.Builder, t Tool, args string) string) (string, error) {
	allowed, err := toolsFor(tools, c)
	if err != nil {
		return "", err
	}
	b := grammar.NewBuilder()
	alts := make([]string, len(allowed))
	for i, t := range allowed {
		args, err := argsRule(b, i, t)
		if err != nil {
			return "", err
		}
		alts[i] = b.Rule(fmt.Sprintf("call-%d", i), call(b, t, args))
	}
	one := b.Rule("call", strings.Join(alts, " | "))
	root := one
	if c.Parallel {
		root = one + " (" + grammar.Literal(f.sep) + " " + one + ")*"
	}
	if f.open != "" {
		root = grammar.Literal(f.open) + " " + root
	}
	if f.close != "" {
		root += " " + grammar.Literal(f.close)
	}
	b.Rule("root", root)
	return b.String(), nil
}

// argsRule adds the rule for a tool's arguments object.
func argsRule(b *grammar.Builder, i int, t Tool) (string, error) {
	params := bytes.TrimSpace(t.Parameters)
	if len(params) == 0 || bytes.Equal(params, []byte("{}")) {
		return b.Primitive("object"), nil
	}
	name, err := b.AddSchema(fmt.Sprintf("args-%d", i), params)
	if err != nil {
		return "", fmt.Errorf("tool %q: parameters: %w", t.Name, err)
	}
	return name, nil
}

// decodeObject reads the JSON object at the start of s and returns its compact text and the rest.
func decodeObject(s string) (obj json.RawMessage, rest string, ok bool) {
	d := json.NewDecoder(strings.NewReader(s))
	var raw json.RawMessage
	if err := d.Decode(&raw); err != nil || len(raw) == 0 || raw[0] != '{' {
		return nil, s, false
	}
	var buf bytes.Buffer
	json.Compact(&buf, raw)
	return buf.Bytes(), s[d.InputOffset():], true
}

// argumentsText normalises a call's arguments (an object, or a string holding one) to JSON text.
func argumentsText(raw json.RawMessage) string {
	raw = bytes.TrimSpace(raw)
	if len(raw) > 0 && raw[0] == '"' {
		var s string
		if json.Unmarshal(raw, &s) == nil {
			return s
		}
	}
	if len(raw) == 0 || bytes.Equal(raw, []byte("null")) {
		return "{}"
	}
	return string(raw)
}

// ---------------------------------------------------------------- Hermes 2 Pro / Qwen 2.5–3

// hermes writes <tool_call>\n{"name": ..., "arguments": {...}}\n</tool_call>.
type hermes struct{}

func (hermes) Name() string     { return "hermes" }
func (hermes) Starts() []string { return []string{"<tool_call>"} }

func (hermes) Grammar(tools []Tool, c Choice) (string, []string, error) {
	g, err := callsGrammar(tools, c, frame{sep: "\n"}, func(b *grammar.Builder, t Tool, args string) string {
		return grammar.Literal("<tool_call>\n{\"name\": \""+t.Name+"\", \"arguments\": ") + " " + args + " " + grammar.Literal("}\n</tool_call>")
	})
	return g, lazy(c, "<tool_call>"), err
}

func lazy(c Choice, triggers ...string) []string {
	if c.Required || c.Name != "" {
		return nil
	}
	return triggers
}

func (hermes) Parse(text string, _ []Tool) (string, []Call, error) {
	var content strings.Builder
	var calls []Call
	rest := text
	for {
		i := strings.Index(rest, "<tool_call>")
		if i < 0 {
			content.WriteString(rest)
			break
		}
		content.WriteString(rest[:i])
		body := rest[i+len("<tool_call>"):]
		end := strings.Index(body, "</tool_call>")
		if end < 0 {
			break // cut off (a length limit): the complete calls before it stand
		}
		body, next := body[:end], body[end+len("</tool_call>"):]
		var call struct {
			Name      string          `json:"name"`
			Arguments json.RawMessage `json:"arguments"`
		}
		if err := json.Unmarshal([]byte(strings.TrimSpace(body)), &call); err != nil || call.Name == "" {
			return "", nil, fmt.Errorf("a <tool_call> block is not a JSON call: %q", body)
		}
		calls = append(calls, Call{Name: call.Name, Arguments: argumentsText(call.Arguments)})
		rest = next
	}
	return strings.TrimSpace(content.String()), calls, nil
}

// ---------------------------------------------------------------- Qwen3-Coder / Qwen3.5 XML

// qwenXML writes <tool_call>\n<function=NAME>\n<parameter=P>\nVALUE\n</parameter>\n</function>\n</tool_call>.
type qwenXML struct{}

func (qwenXML) Name() string     { return "qwen3-coder-xml" }
func (qwenXML) Starts() []string { return []string{"<tool_call>"} }

func (qwenXML) Grammar(tools []Tool, c Choice) (string, []string, error) {
	var inner error
	g, err := callsGrammar(tools, c, frame{sep: "\n"}, func(b *grammar.Builder, t Tool, _ string) string {
		params, err := xmlParams(b, t)
		if err != nil {
			inner = err
		}
		return grammar.Literal("<tool_call>\n<function="+t.Name+">\n") + " " + params + " " + grammar.Literal("</function>\n</tool_call>")
	})
	if err == nil {
		err = inner
	}
	return g, lazy(c, "<tool_call>"), err
}

// schemaObject is the part of an arguments schema the XML format needs.
type schemaObject struct {
	Properties map[string]json.RawMessage `json:"properties"`
	Required   []string                   `json:"required"`
}

func propertyOrder(params json.RawMessage) []string {
	var top map[string]json.RawMessage
	json.Unmarshal(params, &top)
	keys, _ := grammar.OrderedKeys(top["properties"])
	return keys
}

// plainString tells a string parameter the XML format writes as raw text (bounded by minLength and
// maxLength) from one it writes as JSON (enums, formats, other types), and returns the bounds.
func plainString(s json.RawMessage) (ok bool, lo, hi int) {
	var v map[string]json.RawMessage
	json.Unmarshal(s, &v)
	if string(v["type"]) != `"string"` {
		return false, 0, 0
	}
	hi = -1
	for k, raw := range v {
		switch k {
		case "type", "description", "title", "default", "examples":
		case "minLength":
			json.Unmarshal(raw, &lo)
		case "maxLength":
			json.Unmarshal(raw, &hi)
		default:
			return false, 0, 0
		}
	}
	return true, lo, hi
}

func isStringSchema(s json.RawMessage) bool {
	ok, _, _ := plainString(s)
	return ok
}

// xmlParams writes a tool's parameters in Qwen's XML.
func xmlParams(b *grammar.Builder, t Tool) (string, error) {
	return tagParams(b, t, func(p string, _ bool) (string, string) { return "<parameter=" + p + ">\n", "\n</parameter>\n" })
}

// tagParams writes a tool's parameters in schema order (optional ones may be left out), each
// between the tags tag gives for it: a plain string parameter as raw text, any other as JSON.
func tagParams(b *grammar.Builder, t Tool, tag func(param string, plain bool) (open, close string)) (string, error) {
	var s schemaObject
	if len(bytes.TrimSpace(t.Parameters)) > 0 {
		if err := json.Unmarshal(t.Parameters, &s); err != nil {
			return "", fmt.Errorf("tool %q: parameters must be an object schema", t.Name)
		}
	}
	required := map[string]bool{}
	for _, r := range s.Required {
		required[r] = true
	}
	var parts []string
	for _, p := range propertyOrder(t.Parameters) {
		var value string
		plain, lo, hi := plainString(s.Properties[p])
		if plain {
			// Raw text up to the closing tag: any character but '<' (and, as in JSON strings, no
			// stray UTF-8 continuation bytes; see package grammar).
			b.Rule("xml-char", `[^<\x80-\xBF\uD800-\uDFFF\U00110000-\U003FFFFF]`)
			value = grammar.Repeat("xml-char", lo, hi)
		} else {
			n, err := b.AddSchema(b.FreshName("param-"+t.Name+"-"+p), s.Properties[p])
			if err != nil {
				return "", fmt.Errorf("tool %q: parameter %q: %w", t.Name, p, err)
			}
			value = n
		}
		open, close := tag(p, plain)
		part := grammar.Literal(open) + " " + value + " " + grammar.Literal(close)
		if !required[p] {
			part = "(" + part + ")?"
		}
		parts = append(parts, part)
	}
	if len(parts) == 0 {
		return `""`, nil
	}
	return strings.Join(parts, " "), nil
}

var (
	xmlFunction  = regexp.MustCompile(`(?s)<function=([^>\n]+)>(.*?)</function>`)
	xmlParameter = regexp.MustCompile(`(?s)<parameter=([^>\n]+)>\n?(.*?)\n?</parameter>`)
)

func (qwenXML) Parse(text string, tools []Tool) (string, []Call, error) {
	first := strings.Index(text, "<tool_call>")
	if first < 0 {
		first = strings.Index(text, "<function=")
	}
	if first < 0 {
		return strings.TrimSpace(text), nil, nil
	}
	content := strings.TrimSpace(text[:first])
	var calls []Call
	for _, m := range xmlFunction.FindAllStringSubmatch(text[first:], -1) {
		name := strings.TrimSpace(m[1])
		var schema schemaObject
		for _, t := range tools {
			if t.Name == name {
				json.Unmarshal(t.Parameters, &schema)
			}
		}
		var args bytes.Buffer
		args.WriteByte('{')
		for i, p := range xmlParameter.FindAllStringSubmatch(m[2], -1) {
			if i > 0 {
				args.WriteByte(',')
			}
			key, _ := json.Marshal(strings.TrimSpace(p[1]))
			args.Write(key)
			args.WriteByte(':')
			value := p[2]
			if ps, ok := schema.Properties[strings.TrimSpace(p[1])]; ok && !isStringSchema(ps) && json.Valid([]byte(value)) {
				var buf bytes.Buffer
				json.Compact(&buf, []byte(value))
				args.Write(buf.Bytes())
			} else {
				v, _ := json.Marshal(value)
				args.Write(v)
			}
		}
		args.WriteByte('}')
		calls = append(calls, Call{Name: name, Arguments: args.String()})
	}
	if len(calls) == 0 {
		return "", nil, fmt.Errorf("a <tool_call> block has no <function=...>: %q", text[first:])
	}
	return content, calls, nil
}

// ---------------------------------------------------------------- DeepSeek V4 DSML

// deepseekDSML writes, after the text, <｜DSML｜tool_calls> holding one <｜DSML｜invoke name="…">
// per call with <｜DSML｜parameter name="…" string="true|false"> values (raw text or JSON).
type deepseekDSML struct{}

const dsml = "｜DSML｜"

func (deepseekDSML) Name() string     { return "deepseek-dsml" }
func (deepseekDSML) Starts() []string { return []string{"<" + dsml + "tool_calls>"} }

func (deepseekDSML) Grammar(tools []Tool, c Choice) (string, []string, error) {
	var inner error
	f := frame{open: "<" + dsml + "tool_calls>\n", close: "</" + dsml + "tool_calls>"}
	g, err := callsGrammar(tools, c, f, func(b *grammar.Builder, t Tool, _ string) string {
		params, err := tagParams(b, t, func(p string, plain bool) (string, string) {
			return fmt.Sprintf(`<%sparameter name="%s" string="%t">`, dsml, p, plain), "</" + dsml + "parameter>\n"
		})
		if err != nil {
			inner = err
		}
		return grammar.Literal("<"+dsml+`invoke name="`+t.Name+"\">\n") + " " + params + " " + grammar.Literal("</"+dsml+"invoke>\n")
	})
	if err == nil {
		err = inner
	}
	return g, lazy(c, "<"+dsml+"tool_calls>"), err
}

var (
	dsmlInvoke    = regexp.MustCompile(`(?s)<` + dsml + `invoke name="([^"]+)">(.*?)</` + dsml + `invoke>`)
	dsmlParameter = regexp.MustCompile(`(?s)<` + dsml + `parameter name="([^"]+)" string="(true|false)">(.*?)</` + dsml + `parameter>`)
)

func (deepseekDSML) Parse(text string, _ []Tool) (string, []Call, error) {
	first := strings.Index(text, "<"+dsml+"tool_calls>")
	if first < 0 {
		return strings.TrimSpace(text), nil, nil
	}
	var calls []Call
	for _, m := range dsmlInvoke.FindAllStringSubmatch(text[first:], -1) {
		var args bytes.Buffer
		args.WriteByte('{')
		for i, p := range dsmlParameter.FindAllStringSubmatch(m[2], -1) {
			if i > 0 {
				args.WriteByte(',')
			}
			key, _ := json.Marshal(p[1])
			args.Write(key)
			args.WriteByte(':')
			if p[2] == "false" && json.Valid([]byte(p[3])) {
				json.Compact(&args, []byte(p[3]))
			} else {
				v, _ := json.Marshal(p[3])
				args.Write(v)
			}
		}
		args.WriteByte('}')
		calls = append(calls, Call{Name: m[1], Arguments: args.String()})
	}
	if len(calls) == 0 {
		return "", nil, fmt.Errorf("a tool_calls block has no complete invoke: %q", text[first:])
	}
	return strings.TrimSpace(text[:first]), calls, nil
}

// ---------------------------------------------------------------- Llama 3.x JSON

// llama3 writes a bare {"name": ..., "parameters": {...}} as the whole turn (one call per turn).
type llama3 struct{}

func (llama3) Name() string     { return "llama3-json" }
func (llama3) Starts() []string { return []string{`{"name"`} }

func (llama3) Grammar(tools []Tool, c Choice) (string, []string, error) {
	c.Parallel = false // the format has one call per turn
	g, err := callsGrammar(tools, c, frame{}, func(b *grammar.Builder, t Tool, args string) string {
		return grammar.Literal(`{"name": "`+t.Name+`", "parameters": `) + " " + args + ` "}"`
	})
	return g, lazy(c, `{"name"`), err
}

func (llama3) Parse(text string, tools []Tool) (string, []Call, error) {
	i := strings.Index(text, `{"name"`)
	if i < 0 {
		return strings.TrimSpace(text), nil, nil
	}
	obj, _, ok := decodeObject(text[i:])
	if !ok {
		return "", nil, fmt.Errorf("a call is not a JSON object: %q", text[i:])
	}
	var call struct {
		Name       string          `json:"name"`
		Parameters json.RawMessage `json:"parameters"`
		Arguments  json.RawMessage `json:"arguments"`
	}
	json.Unmarshal(obj, &call)
	args := call.Parameters
	if args == nil {
		args = call.Arguments
	}
	return strings.TrimSpace(text[:i]), []Call{{Name: call.Name, Arguments: argumentsText(args)}}, nil
}

// ---------------------------------------------------------------- Mistral (Ministral 3, Magistral)

// mistral writes [TOOL_CALLS]NAME[ARGS]{...} for each call.
type mistral struct{}

func (mistral) Name() string     { return "mistral" }
func (mistral) Starts() []string { return []string{"[TOOL_CALLS]"} }

func (mistral) Grammar(tools []Tool, c Choice) (string, []string, error) {
	g, err := callsGrammar(tools, c, frame{}, func(b *grammar.Builder, t Tool, args string) string {
		return grammar.Literal("[TOOL_CALLS]"+t.Name+"[ARGS]") + " " + args
	})
	return g, lazy(c, "[TOOL_CALLS]"), err
}

func (mistral) Parse(text string, _ []Tool) (string, []Call, error) {
	parts := strings.Split(text, "[TOOL_CALLS]")
	content := strings.TrimSpace(parts[0])
	var calls []Call
	for _, p := range parts[1:] {
		name, args, ok := strings.Cut(p, "[ARGS]")
		if !ok {
			return "", nil, fmt.Errorf("a [TOOL_CALLS] block has no [ARGS]: %q", p)
		}
		obj, _, ok := decodeObject(args)
		if !ok {
			if len(calls) > 0 {
				break // the last call was cut off
			}
			return "", nil, fmt.Errorf("the arguments of %q are not a JSON object: %q", name, args)
		}
		calls = append(calls, Call{Name: strings.TrimSpace(name), Arguments: string(obj)})
	}
	return content, calls, nil
}
