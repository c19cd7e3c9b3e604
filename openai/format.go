package openai

import (
	"bytes"
	"encoding/json"
	"errors"

	"github.com/expertsniper/expertsniper/engine"
	"github.com/expertsniper/expertsniper/grammar"
)

// ResponseFormat is OpenAI's response_format: "text", "json_object" (any JSON object; llama-server
// also takes a "schema" here) or "json_schema" with json_schema.schema.
type ResponseFormat struct {
	Type       string          `json:"type"`
	JSONSchema *JSONSchemaSpec `json:"json_schema,omitempty"`
	Schema     json.RawMessage `json:"schema,omitempty"`
}

// JSONSchemaSpec is response_format.json_schema.
type JSONSchemaSpec struct {
	Name   string          `json:"name"`
	Schema json.RawMessage `json:"schema"`
	Strict *bool           `json:"strict,omitempty"`
}

// grammarFor returns the grammar that enforces a response format ("" for plain text).
func (f *ResponseFormat) grammarFor() (string, error) {
	if f == nil {
		return "", nil
	}
	switch f.Type {
	case "", "text":
		return "", nil
	case "json_object":
		if len(f.Schema) > 0 {
			return schemaGrammar("response_format.schema", f.Schema)
		}
		return grammar.JSONValue(), nil
	case "json_schema":
		if f.JSONSchema == nil || len(bytes.TrimSpace(f.JSONSchema.Schema)) == 0 {
			if len(f.Schema) > 0 {
				return schemaGrammar("response_format.schema", f.Schema)
			}
			return "", badField("response_format.json_schema.schema", "is required for type json_schema")
		}
		return schemaGrammar("response_format.json_schema.schema", f.JSONSchema.Schema)
	}
	return "", badField("response_format.type", "must be text, json_object or json_schema, got %q", f.Type)
}

// schemaGrammar converts a schema, blaming field for what it cannot enforce.
func schemaGrammar(field string, schema json.RawMessage) (string, error) {
	g, err := grammar.FromJSONSchema(schema)
	var se *grammar.SchemaError
	if errors.As(err, &se) {
		return "", badField(field, "%s", se.Error())
	}
	return g, err
}

// constrain sets the one grammar a request may carry: from response_format, a raw GBNF grammar or
// a JSON schema (llama-server's /completion fields). Two at once is an error naming both.
func constrain(req *engine.Request, sources ...grammarSource) error {
	from := ""
	for _, s := range sources {
		if !s.present {
			continue
		}
		g, err := s.build()
		if err != nil {
			return err
		}
		if g == "" {
			continue
		}
		if from != "" {
			return badField(s.field, "cannot be combined with %s", from)
		}
		from, req.Grammar = s.field, g
	}
	return nil
}

type grammarSource struct {
	field   string
	present bool
	build   func() (string, error)
}
