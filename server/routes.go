package server

import (
	"net/http"
	"sort"
	"strings"
)

// routesHandler is the one route table of the server, wrapped in its middleware.
func (s *Server) routesHandler() http.Handler {
	mux := http.NewServeMux()
	s.routes = map[string][]string{}
	handle := func(method, path string, h http.HandlerFunc) {
		mux.HandleFunc(method+" "+path, h)
		s.routes[path] = append(s.routes[path], method)
	}

	handle("GET", "/health", s.handleHealth)
	handle("GET", "/v1/health", s.handleHealth)
	handle("GET", "/v1/models", s.handleModels)
	handle("GET", "/models", s.handleModels)
	handle("GET", "/props", s.handleProps)

	handle("POST", "/v1/chat/completions", s.handleChat)
	handle("POST", "/chat/completions", s.handleChat)
	handle("POST", "/v1/responses", s.handleResponses)
	handle("POST", "/responses", s.handleResponses)
	handle("POST", "/v1/completions", s.handleTextCompletion)
	handle("POST", "/completions", s.handleTextCompletion)
	handle("POST", "/completion", s.handleNativeCompletion)
	handle("POST", "/v1/embeddings", s.handleEmbeddings)
	handle("POST", "/embeddings", s.handleEmbeddings)

	handle("POST", "/tokenize", s.handleTokenize)
	handle("POST", "/detokenize", s.handleDetokenize)
	handle("POST", "/apply-template", s.handleApplyTemplate)

	handle("GET", "/slots", s.handleSlots)
	handle("POST", "/slots/{id}", s.handleSlotAction)

	handle("POST", "/v1/context/save", s.handleContextSave)
	handle("POST", "/v1/context/load", s.handleContextLoad)
	handle("GET", "/v1/context/list", s.handleContextList)
	handle("POST", "/v1/context/list", s.handleContextList)
	handle("POST", "/v1/context/delete", s.handleContextDelete)
	handle("POST", "/v1/context/upload", s.handleContextUpload)
	handle("POST", "/v1/context/download", s.handleContextDownload)

	handle("GET", "/metrics", s.handleMetrics)
	handle("GET", "/stats", s.handleStats)

	handle("GET", "/{$}", s.handlePage("index.html"))
	handle("GET", "/dashboard", s.handlePage("dashboard.html"))
	handle("GET", "/favicon.ico", s.handleFavicon)
	mux.Handle("GET /static/", staticHandler())
	mux.HandleFunc("/", s.handleNotFound)

	var h http.Handler = mux
	h = s.withAuth(h)
	h = s.withBodyLimit(h)
	h = s.withBodyReadTimeout(h)
	h = s.withCrossSiteCheck(h)
	h = s.withHostCheck(h)
	h = s.withMetrics(h)
	h = s.withRecover(h)
	return h
}

// handleNotFound answers unknown paths with a JSON 404, and known paths with the wrong method
// with 405 and Allow (the mux's own answers are plain text, which OpenAI clients cannot parse).
func (s *Server) handleNotFound(w http.ResponseWriter, r *http.Request) {
	path := r.URL.Path
	if strings.HasPrefix(path, "/slots/") && strings.Count(path, "/") == 2 {
		path = "/slots/{id}"
	}
	if methods, ok := s.routes[path]; ok {
		allow := append([]string(nil), methods...)
		sort.Strings(allow)
		w.Header().Set("Allow", strings.Join(allow, ", "))
		writeError(w, http.StatusMethodNotAllowed, errTypeInvalidRequest,
			r.Method+" is not allowed on "+r.URL.Path+"; use "+strings.Join(allow, " or "))
		return
	}
	writeError(w, http.StatusNotFound, errTypeNotFound, "no endpoint "+r.URL.Path)
}
