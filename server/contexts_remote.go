package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"os"
	"path/filepath"
	"time"

	"github.com/expertsniper/expertsniper/remote"
)

// Saved contexts travel to and from an S3-compatible remote (--remote): a push sends NAME.state and
// NAME.json as they are; a pull downloads into a part file of its own (".pull-NAME.part", a name no
// saved context can have), verifies it, and only then moves it into place like a save would. A
// failed pull leaves the part file for the next one to resume, and the saved contexts as they were.

// pullPartPath is where a pull of name downloads to.
func (c *contextStore) pullPartPath(name string) string {
	return filepath.Join(c.dir, ".pull-"+name+".part")
}

// toRemoteLocal describes a saved context for a push; the caller holds the name's lock.
func (c *contextStore) toRemoteLocal(name string) (remote.Local, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.load(); err != nil {
		return remote.Local{}, err
	}
	sc, ok := c.index[name]
	if !ok {
		return remote.Local{}, &apiError{status: http.StatusNotFound, typ: errTypeNotFound, message: fmt.Sprintf("no saved context %q here", name)}
	}
	return remote.Local{Name: name, Model: remote.Model{Name: sc.Model, Fingerprint: sc.ModelFingerprint}, Tokens: sc.Tokens,
		MetaPath: c.metaPath(name), StatePath: c.statePath(name)}, nil
}

// loadedModel is the model a pull must match: the zero Model (any) when none is loaded.
func (c *contextStore) loadedModel() remote.Model {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.fingerprint == "" {
		return remote.Model{}
	}
	return remote.Model{Name: c.model, Fingerprint: c.fingerprint}
}

// push uploads a saved context; it holds the name's lock so that no save replaces it half-way.
func (c *contextStore) push(ctx context.Context, rem *remote.Remote, name string, progress remote.Progress) (remote.Manifest, error) {
	unlock, err := c.lock(ctx, contextKey(name))
	if err != nil {
		return remote.Manifest{}, err
	}
	defer unlock()
	l, err := c.toRemoteLocal(name)
	if err != nil {
		return remote.Manifest{}, err
	}
	return rem.Push(ctx, l, progress)
}

// pull downloads a saved context, verifies it and stores it under its name (replacing a local one).
func (c *contextStore) pull(ctx context.Context, rem *remote.Remote, name string, progress remote.Progress) (savedContext, remote.Manifest, error) {
	unlock, err := c.lock(ctx, contextKey(name))
	if err != nil {
		return savedContext{}, remote.Manifest{}, err
	}
	defer unlock()
	if err := privateDir(c.dir); err != nil {
		return savedContext{}, remote.Manifest{}, err
	}
	part := c.pullPartPath(name)
	m, err := rem.Pull(ctx, name, c.loadedModel(), part, progress)
	if err != nil {
		return savedContext{}, m, err
	}
	var sc savedContext
	if err := json.Unmarshal(m.Meta, &sc); err != nil || sc.Name != name || sc.Prompt == "" {
		os.Remove(part)
		return sc, m, fmt.Errorf("pull context %q: %w: its metadata is not a saved context of `agent serve`", name, remote.ErrCorrupt)
	}
	sc.Model, sc.ModelFingerprint = m.Model.Name, m.Model.Fingerprint
	sc, err = c.commitAs(sc, part)
	return sc, m, err
}

// PushContext uploads the saved context name of the context directory dir (`agent context push`).
func PushContext(ctx context.Context, rem *remote.Remote, dir, name string, progress remote.Progress) (remote.Manifest, error) {
	if err := validName("name", name); err != nil {
		return remote.Manifest{}, err
	}
	return newContextStore(dir).push(ctx, rem, name, progress)
}

// PullContext downloads a saved context into dir (`agent context pull`). With no model loaded, the
// model is checked when the context is loaded.
func PullContext(ctx context.Context, rem *remote.Remote, dir, name string, progress remote.Progress) (remote.Manifest, error) {
	if err := validName("name", name); err != nil {
		return remote.Manifest{}, err
	}
	_, m, err := newContextStore(dir).pull(ctx, rem, name, progress)
	return m, err
}

// remoteAPIError gives a remote's failure the HTTP answer it deserves: the client's mistakes are
// 4xx, the remote's are 502 (it answered wrongly) or 504 (it did not answer).
func remoteAPIError(err error) error {
	status, typ := 0, errTypeServer
	switch {
	case errors.Is(err, remote.ErrNoRemote):
		status, typ = http.StatusBadRequest, errTypeInvalidRequest
	case errors.Is(err, remote.ErrNotFound):
		status, typ = http.StatusNotFound, errTypeNotFound
	case errors.Is(err, remote.ErrOtherModel):
		status, typ = http.StatusConflict, errTypeInvalidRequest
	case errors.Is(err, remote.ErrUnreachable):
		status = http.StatusGatewayTimeout
	case errors.Is(err, remote.ErrCredentials), errors.Is(err, remote.ErrNoBucket), errors.Is(err, remote.ErrCorrupt):
		status = http.StatusBadGateway
	default:
		return err
	}
	return &apiError{status: status, typ: typ, message: err.Error()}
}

// remoteOr400 is the configured remote, or a 400 that says how to configure one.
func (s *Server) remoteOr400(w http.ResponseWriter, r *http.Request) *remote.Remote {
	if s.cfg.Remote == nil {
		fail(w, r, remoteAPIError(remote.ErrNoRemote))
		return nil
	}
	return s.cfg.Remote
}

// logProgress logs a transfer every tenth of the way.
func (s *Server) logProgress(what, name string) remote.Progress {
	return remote.EveryTenth(func(_ int, done, total int64) {
		s.log.Info(what, "name", name, "done_bytes", done, "total_bytes", total)
	})
}

func mbPerSecond(bytes int64, since time.Time) float64 {
	sec := time.Since(since).Seconds()
	if sec <= 0 {
		return 0
	}
	return float64(bytes) / 1e6 / sec
}

func (s *Server) handleContextUpload(w http.ResponseWriter, r *http.Request) {
	rem := s.remoteOr400(w, r)
	if rem == nil {
		return
	}
	req, ok := decodeContextName(w, r)
	if !ok {
		return
	}
	start := time.Now()
	m, err := s.contexts.push(r.Context(), rem, req.Name, s.logProgress("upload", req.Name))
	if err != nil {
		fail(w, r, remoteAPIError(err))
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"uploaded": req.Name, "remote": rem.String(), "state_bytes": m.StateBytes,
		"state_sha256": m.StateSHA256, "ms": msSince(start), "mb_per_s": mbPerSecond(m.StateBytes, start)})
}

func (s *Server) handleContextDownload(w http.ResponseWriter, r *http.Request) {
	rem := s.remoteOr400(w, r)
	if rem == nil {
		return
	}
	// A pull is checked against the loaded model, so the model must be there.
	if s.engineOr503(w) == nil {
		return
	}
	req, ok := decodeContextName(w, r)
	if !ok {
		return
	}
	start := time.Now()
	sc, m, err := s.contexts.pull(r.Context(), rem, req.Name, s.logProgress("download", req.Name))
	if err != nil {
		fail(w, r, remoteAPIError(err))
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"downloaded": toContextInfo(sc), "remote": rem.String(),
		"state_sha256": m.StateSHA256, "ms": msSince(start), "mb_per_s": mbPerSecond(m.StateBytes, start)})
}

// remoteContextInfo is a context in the remote as GET /v1/context/list?remote=1 shows it.
type remoteContextInfo struct {
	Name        string    `json:"name"`
	Model       string    `json:"model"`
	Tokens      int       `json:"tokens"`
	StateBytes  int64     `json:"state_bytes"`
	StateSHA256 string    `json:"state_sha256"`
	Pushed      time.Time `json:"pushed"`
}

func (s *Server) handleRemoteContextList(w http.ResponseWriter, r *http.Request) {
	rem := s.remoteOr400(w, r)
	if rem == nil {
		return
	}
	entries, err := rem.List(r.Context())
	if err != nil {
		fail(w, r, remoteAPIError(err))
		return
	}
	out := make([]remoteContextInfo, 0, len(entries))
	for _, e := range entries {
		out = append(out, remoteContextInfo{Name: e.Name, Model: e.Model.Name, Tokens: e.Tokens, StateBytes: e.StateBytes,
			StateSHA256: e.StateSHA256, Pushed: e.Pushed})
	}
	writeJSON(w, http.StatusOK, map[string]any{"object": "list", "remote": rem.String(), "data": out})
}
