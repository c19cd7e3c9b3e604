// Package server is `agent serve`: an HTTP server compatible with OpenAI's API and llama-server's own
// endpoints, over an engine.Engine, with saved contexts, a web chat and a live dashboard. It uses only
// the standard library's net/http; wire formats live in package openai, and this package only moves
// requests between HTTP and the engine.
package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"time"

	"github.com/expertsniper/expertsniper/chatfmt"
	"github.com/expertsniper/expertsniper/engine"
	"github.com/expertsniper/expertsniper/openai"
	"github.com/expertsniper/expertsniper/remote"
)

// Config is everything the server needs besides the engine.
type Config struct {
	// Host is the address the server binds to; on a loopback bind the Host header is checked so that a
	// web page cannot reach the server through DNS rebinding.
	Host string
	// AllowedHosts are further names accepted in the Host header on a loopback bind and in a
	// browser's Origin (--allow-host): the public name of a reverse proxy in front of the server.
	AllowedHosts []string
	// APIKey, when set, is required as "Authorization: Bearer KEY" (or "X-Api-Key") on every endpoint
	// but /health and the static pages.
	APIKey string
	// MaxBodyBytes limits request bodies (413 beyond); 0 means DefaultMaxBodyBytes.
	MaxBodyBytes int64
	// BodyReadTimeout is how long a client may take to send a body (408 after); 0 means
	// DefaultBodyReadTimeout.
	BodyReadTimeout time.Duration
	// ContextDir stores saved contexts and slot files; "" means DefaultContextDir().
	ContextDir string
	// ModelAlias is the model id reported by /v1/models; "" means the model's file name.
	ModelAlias string
	// Sampling is used for every field a request does not send; zero means openai.DefaultSampling.
	Sampling *engine.Sampling
	// Fingerprint is reported as system_fingerprint.
	Fingerprint string
	// Embeddings enables /v1/embeddings; without it the endpoint answers 501 as llama-server does
	// without --embeddings.
	Embeddings bool
	// Remote, when set, is where /v1/context/upload and /download move saved contexts (--remote).
	Remote *remote.Remote
	// Log receives one line per request and server events; nil discards them.
	Log io.Writer
}

// DefaultMaxBodyBytes is large enough for a long document in a prompt.
const DefaultMaxBodyBytes = 16 << 20

// DefaultContextDir is $XDG_DATA_HOME/expertsniper/contexts (~/.local/share/... when unset).
func DefaultContextDir() (string, error) {
	base := os.Getenv("XDG_DATA_HOME")
	if base == "" {
		home, err := os.UserHomeDir()
		if err != nil {
			return "", fmt.Errorf("find the data directory for saved contexts: %w", err)
		}
		base = filepath.Join(home, ".local", "share")
	}
	return filepath.Join(base, "expertsniper", "contexts"), nil
}

// Server serves one engine. Until SetEngine is called (while the model loads), /health answers 503
// and every model endpoint answers 503 too.
type Server struct {
	cfg      Config
	log      *slog.Logger
	sampling engine.Sampling
	started  time.Time

	eng       atomic.Pointer[loaded]
	loadErr   atomic.Pointer[error]
	setupOnce sync.Mutex

	contexts *contextStore
	metrics  *metrics
	handler  http.Handler
	routes   map[string][]string // path → methods, for 405 answers
}

// loaded is what exists once the model is loaded.
type loaded struct {
	eng  engine.Engine
	info engine.ModelInfo
	tmpl *chatfmt.Template // the model's chat template as Jinja (nil: llama.cpp's handling)
}

// New makes a server; the model is attached later with SetEngine.
func New(cfg Config) (*Server, error) {
	if cfg.MaxBodyBytes <= 0 {
		cfg.MaxBodyBytes = DefaultMaxBodyBytes
	}
	if cfg.BodyReadTimeout <= 0 {
		cfg.BodyReadTimeout = DefaultBodyReadTimeout
	}
	if cfg.ContextDir == "" {
		dir, err := DefaultContextDir()
		if err != nil {
			return nil, err
		}
		cfg.ContextDir = dir
	}
	if cfg.Fingerprint == "" {
		cfg.Fingerprint = "expertsniper"
	}
	logOut := cfg.Log
	if logOut == nil {
		logOut = io.Discard
	}
	s := &Server{
		cfg:      cfg,
		log:      slog.New(slog.NewTextHandler(logOut, nil)),
		sampling: openai.DefaultSampling,
		started:  time.Now(),
		metrics:  newMetrics(),
	}
	if cfg.Sampling != nil {
		s.sampling = *cfg.Sampling
	}
	s.contexts = newContextStore(cfg.ContextDir)
	s.handler = s.routesHandler()
	return s, nil
}

// SetEngine attaches the loaded model; the server is ready from then on. The server does not close
// the engine: its owner does, after Serve returns.
func (s *Server) SetEngine(e engine.Engine) error {
	s.setupOnce.Lock()
	defer s.setupOnce.Unlock()
	if s.eng.Load() != nil {
		return errors.New("server: the engine is already set")
	}
	info := e.Info()
	info.Slots = max(info.Slots, 1)
	s.contexts.setModel(info.Name, info.Fingerprint)
	s.eng.Store(&loaded{eng: e, info: info, tmpl: s.compileTemplate(info)})
	return nil
}

// SetLoadError records why the model could not be loaded; /health then reports it with 500.
func (s *Server) SetLoadError(err error) { s.loadErr.Store(&err) }

// Handler is the whole server as an http.Handler (for tests and embedding).
func (s *Server) Handler() http.Handler { return s.handler }

// modelName is the id clients see.
func (s *Server) modelName(l *loaded) string {
	if s.cfg.ModelAlias != "" {
		return s.cfg.ModelAlias
	}
	return l.info.Name
}

// errShuttingDown is the cause of every request context's cancellation when the server stops: it
// tells a stop from a client that went away.
var errShuttingDown = errors.New("the server is shutting down")

// Serve answers on ln until ctx is cancelled, then stops: running generations and queued requests
// are cancelled and answered 503 (a stream ends with an error event), and the server waits up to
// 10 s for handlers to return.
func (s *Server) Serve(ctx context.Context, ln net.Listener) error {
	baseCtx, cancelBase := context.WithCancelCause(context.Background())
	defer cancelBase(errShuttingDown)
	hs := &http.Server{
		Handler:           s.handler,
		ReadHeaderTimeout: 10 * time.Second,
		IdleTimeout:       2 * time.Minute,
		BaseContext:       func(net.Listener) context.Context { return baseCtx },
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("serve on %s: %w", ln.Addr(), err)
	case <-ctx.Done():
	}
	s.log.Info("shutting down")
	cancelBase(errShuttingDown)
	shutCtx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := hs.Shutdown(shutCtx); err != nil {
		hs.Close()
		return fmt.Errorf("shut down the HTTP server: %w", err)
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve on %s: %w", ln.Addr(), err)
	}
	return nil
}
