package server

import (
	"net/http"
	"strings"
	"testing"

	"github.com/expertsniper/expertsniper/server/internal/fakeengine"
)

// A page on another site can make a browser POST text/plain (no preflight) with our own Host header.
// Every write such a page could send is refused, and the web chat's own requests still pass.
func TestCrossSiteWritesAreRefused(t *testing.T) {
	ts := newTestServer(t, fakeengine.New(1, 4096))
	host := strings.TrimPrefix(ts.URL, "http://")
	saveBody := `{"name":"x","prompt":"hello"}`
	writes := []struct{ path, body string }{
		{"/v1/context/save", saveBody},
		{"/v1/context/delete", `{"name":"x"}`},
		{"/slots/0?action=save", `{"filename":"x"}`},
		{"/v1/chat/completions", `{"messages":[{"role":"user","content":"hi"}]}`},
		{"/v1/completions", `{"prompt":"hi"}`},
		{"/completion", `{"prompt":"hi"}`},
	}
	post := func(path, body string, headers ...string) (*http.Response, []byte) {
		return ts.do(t, "POST", path, body, headers...)
	}
	for _, w := range writes {
		// The classic form of the attack: a simple text/plain POST from another origin.
		resp, body := post(w.path, w.body, "Content-Type", "text/plain", "Origin", "http://evil.example", "Sec-Fetch-Site", "cross-site")
		expectError(t, resp, body, 403, "permission_error")
		// Without Sec-Fetch-Site (older browsers): the Origin alone.
		resp, body = post(w.path, w.body, "Content-Type", "application/json", "Origin", "http://evil.example")
		expectError(t, resp, body, 403, "permission_error")
		// Another port on localhost is another origin (though the same site).
		resp, body = post(w.path, w.body, "Content-Type", "application/json", "Origin", "http://localhost:1", "Sec-Fetch-Site", "same-site")
		expectError(t, resp, body, 403, "permission_error")
		resp, body = post(w.path, w.body, "Content-Type", "application/json", "Origin", "null")
		expectError(t, resp, body, 403, "permission_error")
		// A body not declared JSON, even with no Origin: a browser never preflights it.
		resp, body = post(w.path, w.body, "Content-Type", "text/plain")
		expectError(t, resp, body, 415, "invalid_request_error")
		resp, body = post(w.path, w.body, "Content-Type", "application/x-www-form-urlencoded")
		expectError(t, resp, body, 415, "invalid_request_error")
	}
	if _, err := ts.srv.contexts.get("x"); err == nil {
		t.Fatal("a refused save was stored")
	}

	// What the web chat sends (same origin, JSON) and what SDKs send (no Origin) pass.
	resp, body := post("/v1/context/save", saveBody, "Content-Type", "application/json; charset=utf-8",
		"Origin", "http://"+host, "Sec-Fetch-Site", "same-origin")
	if resp.StatusCode != 200 {
		t.Fatalf("same-origin save: %d %s", resp.StatusCode, body)
	}
	resp, body = post("/v1/chat/completions", `{"messages":[{"role":"user","content":"hi"}],"max_tokens":2}`, "Content-Type", "application/json")
	if resp.StatusCode != 200 {
		t.Fatalf("a client without Origin: %d %s", resp.StatusCode, body)
	}
	// Reads stay open to GET from anywhere (a page cannot read the answer: no CORS headers).
	resp, body = ts.do(t, "GET", "/v1/models", "", "Origin", "http://evil.example", "Sec-Fetch-Site", "cross-site")
	if resp.StatusCode != 200 || resp.Header.Get("Access-Control-Allow-Origin") != "" {
		t.Fatalf("cross-site GET: %d %v %s", resp.StatusCode, resp.Header, body)
	}
	// A preflight is never granted.
	resp, _ = ts.do(t, "OPTIONS", "/v1/chat/completions", "", "Origin", "http://evil.example", "Access-Control-Request-Method", "POST")
	if resp.StatusCode < 400 || resp.Header.Get("Access-Control-Allow-Origin") != "" {
		t.Fatalf("preflight answered %d with %v", resp.StatusCode, resp.Header)
	}
}

// --allow-host NAME lets a reverse proxy's public name through the loopback Host check and the
// Origin check; other names stay refused.
func TestAllowHostForReverseProxies(t *testing.T) {
	ts := newTestServer(t, fakeengine.New(1, 4096), func(c *Config) { c.AllowedHosts = []string{"chat.example.com"} })
	chat := `{"messages":[{"role":"user","content":"hi"}],"max_tokens":2}`
	resp, body := ts.do(t, "POST", "/v1/chat/completions", chat, "Content-Type", "application/json",
		"Host", "chat.example.com", "Origin", "https://chat.example.com", "Sec-Fetch-Site", "same-origin")
	if resp.StatusCode != 200 {
		t.Fatalf("allowed host: %d %s", resp.StatusCode, body)
	}
	// A proxy that rewrites Host to the backend's address keeps the browser's Origin.
	resp, body = ts.do(t, "POST", "/v1/chat/completions", chat, "Content-Type", "application/json", "Origin", "https://chat.example.com")
	if resp.StatusCode != 200 {
		t.Fatalf("allowed origin behind a Host-rewriting proxy: %d %s", resp.StatusCode, body)
	}
	resp, body = ts.do(t, "GET", "/v1/models", "", "Host", "other.example.com")
	expectError(t, resp, body, 403, "permission_error")
	resp, body = ts.do(t, "POST", "/v1/chat/completions", chat, "Content-Type", "application/json", "Origin", "https://other.example.com")
	expectError(t, resp, body, 403, "permission_error")
}

func TestFavicon(t *testing.T) {
	ts := newTestServer(t, nil, func(c *Config) { c.APIKey = "secret" })
	resp, body := ts.do(t, "GET", "/favicon.ico", "")
	if resp.StatusCode != 200 || resp.Header.Get("Content-Type") != "image/svg+xml" || !strings.Contains(string(body), "<svg") {
		t.Fatalf("favicon: %d %q %.80s", resp.StatusCode, resp.Header.Get("Content-Type"), body)
	}
}
