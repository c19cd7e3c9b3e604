package server

import (
	"context"
	"encoding/json"
	"math"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/expertsniper/expertsniper/server/internal/fakeengine"
)

// The OpenAI Node SDK asks for base64 embeddings by default and decodes them; before, the server sent
// floats anyway and the SDK decoded garbage. Both encodings now give the same L2-normalised vectors.
func TestEmbeddingsBase64FromTheNodeSDKEqualFloatsAndAreNormalised(t *testing.T) {
	node := requireNodeSDK(t)
	fake := fakeengine.New(1, 4096)
	fake.Embeddings = true
	ts := newTestServer(t, fake, func(c *Config) { c.Embeddings = true })
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, "embeddings_check.mjs")
	cmd.Dir = nodeSDKDir
	cmd.Env = append(os.Environ(), "OPENAI_BASE_URL="+ts.URL+"/v1", "OPENAI_API_KEY=none")
	var stderr strings.Builder
	cmd.Stderr = &stderr
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("embeddings_check.mjs: %v\n%s%s", err, stderr.String(), out)
	}
	var got struct{ Default, Float [][]float64 }
	if err := json.Unmarshal(out, &got); err != nil {
		t.Fatalf("decode %s: %v", out, err)
	}
	if len(got.Default) != 2 || len(got.Float) != 2 {
		t.Fatalf("got %d and %d vectors, want 2 and 2", len(got.Default), len(got.Float))
	}
	for i := range got.Float {
		if len(got.Default[i]) != 64 || len(got.Float[i]) != 64 {
			t.Fatalf("vector %d: %d and %d dimensions, want 64", i, len(got.Default[i]), len(got.Float[i]))
		}
		var norm float64
		for j, f := range got.Float[i] {
			// JSON floats are float32 values printed in decimal: equal to the base64 bytes' value.
			if float32(f) != float32(got.Default[i][j]) {
				t.Fatalf("vector %d[%d]: base64 %v, float %v", i, j, got.Default[i][j], f)
			}
			norm += f * f
		}
		if math.Abs(math.Sqrt(norm)-1) > 1e-5 {
			t.Errorf("vector %d has norm %v, want 1", i, math.Sqrt(norm))
		}
	}
}

func TestEmbeddingsRefuseEmptyInputAndUnknownEncodings(t *testing.T) {
	fake := fakeengine.New(1, 4096)
	fake.Embeddings = true
	ts := newTestServer(t, fake, func(c *Config) { c.Embeddings = true })
	for _, body := range []map[string]any{
		{"input": ""}, {"input": []string{}}, {"input": []string{"a", ""}}, {},
		{"input": "a", "encoding_format": "int8"},
	} {
		resp, data := ts.do(t, "POST", "/v1/embeddings", body)
		expectError(t, resp, data, 400, "invalid_request_error")
	}
}

// Error messages name the JSON field a client sent, not the Go struct it lands in.
func TestTypeErrorsNameJSONFields(t *testing.T) {
	ts := newTestServer(t, fakeengine.New(1, 4096))
	resp, body := ts.do(t, "POST", "/v1/chat/completions", `{"messages":[{"role":"user","content":"x"}],"temperature":"hot"}`)
	e := expectError(t, resp, body, 400, "invalid_request_error")
	if msg := e["message"].(string); !strings.Contains(msg, `field "temperature"`) || strings.Contains(msg, "SamplingParams") {
		t.Fatalf("message %q should name the field temperature", msg)
	}
	resp, body = ts.do(t, "POST", "/completion", `{"prompt":"x","top_k":"many"}`)
	e = expectError(t, resp, body, 400, "invalid_request_error")
	if msg := e["message"].(string); !strings.Contains(msg, `field "top_k"`) {
		t.Fatalf("message %q should name the field top_k", msg)
	}
}

// Content parts are joined with a newline, as llama-server joins them.
func TestContentPartsJoinedWithANewline(t *testing.T) {
	ts := newTestServer(t, fakeengine.New(1, 4096))
	resp, body := ts.do(t, "POST", "/apply-template", `{"messages":[{"role":"user","content":[{"type":"text","text":"first"},{"type":"text","text":"second"}]}]}`)
	if resp.StatusCode != 200 || !strings.Contains(decode[map[string]string](t, body)["prompt"], "first\nsecond") {
		t.Fatalf("apply-template: %d %s", resp.StatusCode, body)
	}
}
