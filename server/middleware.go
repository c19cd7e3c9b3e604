package server

import (
	"crypto/subtle"
	"fmt"
	"mime"
	"net"
	"net/http"
	"net/url"
	"runtime/debug"
	"strings"
	"time"
)

// withRecover turns a panic in a handler into a 500 (when nothing was written yet) and a log line;
// the server keeps serving. http.ErrAbortHandler is passed on: it is how a handler aborts on purpose.
func (s *Server) withRecover(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		rw := &recordingWriter{ResponseWriter: w}
		defer func() {
			v := recover()
			if v == nil {
				return
			}
			if v == http.ErrAbortHandler {
				panic(v)
			}
			s.metrics.panics.Add(1)
			s.log.Error("handler panic", "method", r.Method, "path", r.URL.Path, "panic", fmt.Sprint(v),
				"stack", string(debug.Stack()))
			if !rw.wroteHeader {
				writeError(rw, http.StatusInternalServerError, errTypeServer, fmt.Sprintf("internal error: %v", v))
			}
		}()
		next.ServeHTTP(rw, r)
	})
}

// recordingWriter remembers the status; Unwrap keeps http.ResponseController (Flush) working.
type recordingWriter struct {
	http.ResponseWriter
	wroteHeader bool
	status      int
}

func (w *recordingWriter) WriteHeader(code int) {
	if !w.wroteHeader {
		w.wroteHeader = true
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *recordingWriter) Write(p []byte) (int, error) {
	if !w.wroteHeader {
		w.wroteHeader = true
		w.status = http.StatusOK
	}
	return w.ResponseWriter.Write(p)
}

func (w *recordingWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// withMetrics counts requests by status and logs one line per request.
func (s *Server) withMetrics(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		start := time.Now()
		rw := &recordingWriter{ResponseWriter: w}
		defer func() {
			status := rw.status
			if !rw.wroteHeader {
				status = http.StatusOK
			}
			v := recover()
			if v != nil {
				status = http.StatusInternalServerError
			}
			s.metrics.countRequest(status)
			s.log.Info("request", "method", r.Method, "path", r.URL.Path, "status", status,
				"ms", time.Since(start).Milliseconds())
			if v != nil {
				panic(v) // withRecover, outside, answers it
			}
		}()
		next.ServeHTTP(rw, r)
	})
}

// isLoopbackHost tells whether a bind address only accepts local connections.
func isLoopbackHost(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(strings.Trim(host, "[]"))
	return ip != nil && ip.IsLoopback()
}

// hostAllowed tells whether a Host header (or an Origin's host) names this server on a loopback
// bind: a loopback name, or one given with --allow-host (a reverse proxy's public name).
func (s *Server) hostAllowed(hostport string) bool {
	host := hostport
	if h, _, err := net.SplitHostPort(hostport); err == nil {
		host = h
	}
	if isLoopbackHost(host) {
		return true
	}
	for _, a := range s.cfg.AllowedHosts {
		if strings.EqualFold(a, host) {
			return true
		}
	}
	return false
}

// withHostCheck refuses requests whose Host header is not a loopback name (or an allowed one) when
// the server binds to loopback: a web page on another origin could otherwise reach it by rebinding
// its DNS name to 127.0.0.1.
func (s *Server) withHostCheck(next http.Handler) http.Handler {
	if !isLoopbackHost(s.cfg.Host) {
		return next
	}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !s.hostAllowed(r.Host) {
			writeError(w, http.StatusForbidden, errTypePermission,
				fmt.Sprintf("Host header %q is not allowed on a loopback bind (use localhost or 127.0.0.1, or start the server with --allow-host NAME)", r.Host))
			return
		}
		next.ServeHTTP(w, r)
	})
}

// withCrossSiteCheck refuses writes from other web sites. A page elsewhere can make the browser send
// a "simple" POST (text/plain, form data) to us without asking first, and our Host check passes
// because the browser sends our own Host. So a request that changes anything (every method but GET,
// HEAD and OPTIONS) is refused with 403 when the browser says it comes from another site
// (Sec-Fetch-Site: cross-site, or an Origin whose host is not the one the request was sent to, nor an
// --allow-host name), and its body must be declared JSON, which a browser only sends cross-site after
// a CORS preflight that this server never grants. Clients outside browsers send no Origin and pass;
// the web chat, same origin, passes too.
func (s *Server) withCrossSiteCheck(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		switch r.Method {
		case http.MethodGet, http.MethodHead, http.MethodOptions:
			next.ServeHTTP(w, r)
			return
		}
		if r.Header.Get("Sec-Fetch-Site") == "cross-site" {
			writeError(w, http.StatusForbidden, errTypePermission, "cross-site requests may not change anything here (Sec-Fetch-Site: cross-site)")
			return
		}
		if origin := r.Header.Get("Origin"); origin != "" && !s.sameOrigin(origin, r.Host) {
			writeError(w, http.StatusForbidden, errTypePermission,
				fmt.Sprintf("requests from origin %q may not change anything here (start the server with --allow-host NAME to allow a proxy's name)", origin))
			return
		}
		if r.ContentLength != 0 && !isJSONContentType(r.Header.Get("Content-Type")) {
			writeError(w, http.StatusUnsupportedMediaType, errTypeInvalidRequest,
				fmt.Sprintf("the body must be JSON sent with Content-Type: application/json, got %q (with curl: -H 'Content-Type: application/json')", r.Header.Get("Content-Type")))
			return
		}
		next.ServeHTTP(w, r)
	})
}

// sameOrigin tells whether a browser's Origin header names the host the request was sent to, or an
// allowed name. "null" (sandboxed frames, files) is never ours.
func (s *Server) sameOrigin(origin, requestHost string) bool {
	u, err := url.Parse(origin)
	if err != nil || u.Host == "" || (u.Scheme != "http" && u.Scheme != "https") {
		return false
	}
	if strings.EqualFold(u.Host, requestHost) {
		return true
	}
	for _, a := range s.cfg.AllowedHosts {
		if strings.EqualFold(a, u.Hostname()) {
			return true
		}
	}
	return false
}

func isJSONContentType(ct string) bool {
	mt, _, err := mime.ParseMediaType(ct)
	return err == nil && (mt == "application/json" || strings.HasSuffix(mt, "+json"))
}

// publicPaths need no API key: health checks and the static pages (which ask for the key).
func publicPath(path string) bool {
	switch path {
	case "/health", "/v1/health", "/", "/dashboard", "/favicon.ico":
		return true
	}
	return strings.HasPrefix(path, "/static/")
}

// withAuth checks the API key in constant time.
func (s *Server) withAuth(next http.Handler) http.Handler {
	if s.cfg.APIKey == "" {
		return next
	}
	want := []byte(s.cfg.APIKey)
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if publicPath(r.URL.Path) {
			next.ServeHTTP(w, r)
			return
		}
		got := r.Header.Get("X-Api-Key")
		if auth := r.Header.Get("Authorization"); auth != "" {
			scheme, token, ok := strings.Cut(auth, " ")
			if ok && strings.EqualFold(scheme, "Bearer") {
				got = strings.TrimSpace(token)
			}
		}
		if subtle.ConstantTimeCompare([]byte(got), want) != 1 {
			w.Header().Set("WWW-Authenticate", `Bearer realm="agent serve"`)
			writeError(w, http.StatusUnauthorized, errTypeAuthentication, "invalid or missing API key")
			return
		}
		next.ServeHTTP(w, r)
	})
}

// withBodyLimit caps request bodies; reading past the cap fails with *http.MaxBytesError (413).
func (s *Server) withBodyLimit(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.ContentLength > s.cfg.MaxBodyBytes {
			writeError(w, http.StatusRequestEntityTooLarge, errTypeRequestTooLarge,
				fmt.Sprintf("request body is larger than the limit of %d bytes", s.cfg.MaxBodyBytes))
			return
		}
		r.Body = http.MaxBytesReader(w, r.Body, s.cfg.MaxBodyBytes)
		next.ServeHTTP(w, r)
	})
}
