package server

import (
	"embed"
	"io/fs"
	"net/http"
)

// The web chat and the dashboard are plain files embedded in the binary: no CDN, no build step.
//
//go:embed web
var webFiles embed.FS

func webFS() fs.FS {
	sub, err := fs.Sub(webFiles, "web")
	if err != nil {
		panic(err) // the directory is embedded above; this cannot fail at run time
	}
	return sub
}

// securityHeaders keep the pages to their own scripts: the chat renders model output, which must never
// be able to run code.
func securityHeaders(h http.Header) {
	h.Set("Content-Security-Policy", "default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; frame-ancestors 'none'")
	h.Set("X-Content-Type-Options", "nosniff")
	h.Set("Referrer-Policy", "no-referrer")
}

func (s *Server) handlePage(name string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		data, err := fs.ReadFile(webFS(), name)
		if err != nil {
			fail(w, r, err)
			return
		}
		securityHeaders(w.Header())
		w.Header().Set("Content-Type", "text/html; charset=utf-8")
		w.Header().Set("Cache-Control", "no-cache")
		w.Write(data)
	}
}

func staticHandler() http.Handler {
	files := http.StripPrefix("/static/", http.FileServerFS(webFS()))
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		securityHeaders(w.Header())
		w.Header().Set("Cache-Control", "no-cache")
		files.ServeHTTP(w, r)
	})
}

// handleFavicon answers the browser's /favicon.ico (asked on every page) with the embedded icon.
func (s *Server) handleFavicon(w http.ResponseWriter, r *http.Request) {
	data, err := fs.ReadFile(webFS(), "favicon.svg")
	if err != nil {
		fail(w, r, err)
		return
	}
	securityHeaders(w.Header())
	w.Header().Set("Content-Type", "image/svg+xml")
	w.Header().Set("Cache-Control", "max-age=86400")
	w.Write(data)
}
