package server

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"

	"github.com/expertsniper/expertsniper/server/internal/fakeengine"
)

// testServer runs a Server over a fake engine behind httptest.
type testServer struct {
	*httptest.Server
	srv  *Server
	fake *fakeengine.Engine
}

func newTestServer(t *testing.T, fake *fakeengine.Engine, configure ...func(*Config)) *testServer {
	t.Helper()
	cfg := Config{Host: "127.0.0.1", ContextDir: t.TempDir()}
	for _, c := range configure {
		c(&cfg)
	}
	srv, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	if fake != nil {
		if err := srv.SetEngine(fake); err != nil {
			t.Fatal(err)
		}
	}
	hs := httptest.NewServer(srv.Handler())
	t.Cleanup(hs.Close)
	return &testServer{Server: hs, srv: srv, fake: fake}
}

// do sends a request and returns the response with its whole body.
func (ts *testServer) do(t *testing.T, method, path string, body any, headers ...string) (*http.Response, []byte) {
	t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case string:
		rd = strings.NewReader(b)
	case []byte:
		rd = bytes.NewReader(b)
	default:
		data, err := json.Marshal(b)
		if err != nil {
			t.Fatal(err)
		}
		rd = bytes.NewReader(data)
	}
	req, err := http.NewRequest(method, ts.URL+path, rd)
	if err != nil {
		t.Fatal(err)
	}
	if rd != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Set(headers[i], headers[i+1])
		if headers[i] == "Host" {
			req.Host = headers[i+1]
		}
	}
	resp, err := ts.Client().Do(req)
	if err != nil {
		t.Fatalf("%s %s: %v", method, path, err)
	}
	defer resp.Body.Close()
	data, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("%s %s: read body: %v", method, path, err)
	}
	return resp, data
}

func decode[T any](t *testing.T, data []byte) T {
	t.Helper()
	var v T
	if err := json.Unmarshal(data, &v); err != nil {
		t.Fatalf("decode %s: %v", data, err)
	}
	return v
}

// expectError checks an OpenAI-style error body with the given status and type.
func expectError(t *testing.T, resp *http.Response, body []byte, status int, typ string) map[string]any {
	t.Helper()
	if resp.StatusCode != status {
		t.Fatalf("status %d, want %d; body %s", resp.StatusCode, status, body)
	}
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "application/json") {
		t.Fatalf("error Content-Type %q, want JSON; body %s", ct, body)
	}
	v := decode[map[string]map[string]any](t, body)
	e := v["error"]
	if e == nil {
		t.Fatalf("no error object in %s", body)
	}
	if int(e["code"].(float64)) != status || e["type"] != typ || e["message"] == "" {
		t.Fatalf("error %v, want code %d type %q and a message", e, status, typ)
	}
	return e
}

// sseEvents reads "data: ..." payloads until EOF.
func sseEvents(t *testing.T, r io.Reader) []string {
	t.Helper()
	var out []string
	sc := bufio.NewScanner(r)
	sc.Buffer(make([]byte, 1<<20), 1<<20)
	for sc.Scan() {
		line := sc.Text()
		if line == "" {
			continue
		}
		payload, ok := strings.CutPrefix(line, "data: ")
		if !ok {
			t.Fatalf("unexpected SSE line %q", line)
		}
		out = append(out, payload)
	}
	return out
}

// stream posts body and returns the response for reading events.
func (ts *testServer) stream(t *testing.T, ctx context.Context, path string, body any) *http.Response {
	t.Helper()
	data, _ := json.Marshal(body)
	req, err := http.NewRequestWithContext(ctx, "POST", ts.URL+path, bytes.NewReader(data))
	if err != nil {
		t.Fatal(err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := ts.Client().Do(req)
	if err != nil {
		t.Fatal(err)
	}
	return resp
}
