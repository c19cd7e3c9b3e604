package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strings"
	"sync"
	"time"

	"github.com/expertsniper/expertsniper/openai"
)

// Saved contexts: a long prompt (a document, a system prompt, a codebase summary) is evaluated once
// and its KV state kept on disk under a name. A later request whose prompt starts with it loads the
// state into a slot and evaluates only the rest.
//
// Layout of the context directory (0700, files 0600: prompts are private): NAME.json (metadata and
// the prompt), NAME.state (the engine's state file), and slots/ for llama-server's /slots save and
// restore: slots/NAME (the state) and slots/.NAME.text (the model that wrote it). Names never start with
// a dot, so no name's file is another's sidecar, and temp files (".tmp-*") collide with nothing.
//
// A KV state is only valid for the model that wrote it: contexts are keyed by the model's
// fingerprint (gguf.Fingerprint), not its file name. Every operation on a name (save, load, delete,
// a resume) holds that name's lock, so two saves of one name run one after the other and a load
// never sees one save's state with another's metadata.

var namePattern = regexp.MustCompile(`^[A-Za-z0-9._-]{1,64}$`)

// validName accepts names that cannot escape the directory: letters, digits, '.', '_' and '-', at
// most 64, not starting with a dot (no "..", no hidden files).
func validName(field, name string) error {
	if !namePattern.MatchString(name) || strings.HasPrefix(name, ".") {
		return badRequest("%s %q is not valid: use 1 to 64 letters, digits, '.', '_' or '-', not starting with '.'", field, name)
	}
	return nil
}

// savedContext is the metadata of one saved context.
type savedContext struct {
	Name  string `json:"name"`
	Model string `json:"model"`
	// ModelFingerprint is the fingerprint of the model that wrote the state; contexts saved before
	// fingerprints existed have none and are never resumed.
	ModelFingerprint string    `json:"model_fingerprint"`
	Prompt           string    `json:"prompt"`
	Tokens           int       `json:"tokens"`
	StateBytes       int64     `json:"state_bytes"`
	Created          time.Time `json:"created"`
}

type contextStore struct {
	dir string

	mu          sync.Mutex
	model       string
	fingerprint string
	index       map[string]savedContext
	loaded      bool
	nameLocks   map[string]chan struct{} // a name's lock is a full one-slot channel
}

func newContextStore(dir string) *contextStore {
	return &contextStore{dir: dir, index: map[string]savedContext{}, nameLocks: map[string]chan struct{}{}}
}

func (c *contextStore) setModel(model, fingerprint string) {
	c.mu.Lock()
	c.model, c.fingerprint = model, fingerprint
	c.mu.Unlock()
}

func (c *contextStore) statePath(name string) string { return filepath.Join(c.dir, name+".state") }
func (c *contextStore) metaPath(name string) string  { return filepath.Join(c.dir, name+".json") }
func (c *contextStore) slotDir() string              { return filepath.Join(c.dir, "slots") }

// slotFile is the path of a /slots save file (the name was validated); slotText is its sidecar
// (named for the text it once held).
func (c *contextStore) slotFile(filename string) string { return filepath.Join(c.slotDir(), filename) }
func (c *contextStore) slotText(filename string) string {
	return filepath.Join(c.slotDir(), "."+filename+".text")
}

// contextKey and slotKey name the locks of a saved context and of a slot file: separate namespaces.
func contextKey(name string) string  { return "context/" + name }
func slotKey(filename string) string { return "slot/" + filename }

// lockChan is key's lock: a channel with room for one, full while someone holds it.
func (c *contextStore) lockChan(key string) chan struct{} {
	c.mu.Lock()
	defer c.mu.Unlock()
	ch, ok := c.nameLocks[key]
	if !ok {
		ch = make(chan struct{}, 1)
		c.nameLocks[key] = ch
	}
	return ch
}

// lock takes the lock of key, waiting for whoever holds it (or until ctx ends). The returned
// function releases it.
func (c *contextStore) lock(ctx context.Context, key string) (func(), error) {
	ch := c.lockChan(key)
	select {
	case ch <- struct{}{}:
		return func() { <-ch }, nil
	case <-ctx.Done():
		return nil, fmt.Errorf("wait for another request on %s: %w", key, ctx.Err())
	}
}

// tryLock takes the lock of key only if it is free.
func (c *contextStore) tryLock(key string) (func(), bool) {
	ch := c.lockChan(key)
	select {
	case ch <- struct{}{}:
		return func() { <-ch }, true
	default:
		return nil, false
	}
}

// privateDir creates dir as 0700, and takes group and other access away from an existing one: it
// holds prompts and KV caches, which are as private as the conversations they come from.
func privateDir(dir string) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("create the directory %q: %w", dir, err)
	}
	fi, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("create the directory %q: %w", dir, err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		if err := os.Chmod(dir, fi.Mode().Perm()&0o700); err != nil {
			return fmt.Errorf("make the directory %q private: %w", dir, err)
		}
	}
	return nil
}

// newTempFile creates an empty 0600 file with a unique name in dir (".tmp-*", which no saved name
// can be). The engine then writes it in place: opening an existing file keeps its mode.
func newTempFile(dir string) (string, error) {
	if err := privateDir(dir); err != nil {
		return "", err
	}
	f, err := os.CreateTemp(dir, ".tmp-*")
	if err != nil {
		return "", fmt.Errorf("create a temporary file in %q: %w", dir, err)
	}
	if err := f.Close(); err != nil {
		os.Remove(f.Name())
		return "", fmt.Errorf("create a temporary file in %q: %w", dir, err)
	}
	return f.Name(), nil
}

// writeFileAtomic replaces path with data through a unique 0600 temp file.
func writeFileAtomic(path string, data []byte) error {
	tmp, err := newTempFile(filepath.Dir(path))
	if err != nil {
		return err
	}
	if err := os.WriteFile(tmp, data, 0o600); err != nil {
		os.Remove(tmp)
		return err
	}
	if err := os.Rename(tmp, path); err != nil {
		os.Remove(tmp)
		return err
	}
	return nil
}

// load reads the directory's metadata once. Caller holds mu.
func (c *contextStore) load() error {
	if c.loaded {
		return nil
	}
	entries, err := os.ReadDir(c.dir)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("read the context directory %q: %w", c.dir, err)
	}
	for _, e := range entries {
		name, ok := strings.CutSuffix(e.Name(), ".json")
		if !ok || e.IsDir() || validName("name", name) != nil {
			continue
		}
		data, err := os.ReadFile(c.metaPath(name))
		if err != nil {
			return fmt.Errorf("read saved context %q: %w", name, err)
		}
		var sc savedContext
		if err := json.Unmarshal(data, &sc); err != nil || sc.Name != name {
			continue // not ours, or damaged: ignore rather than fail every request
		}
		c.index[name] = sc
	}
	c.loaded = true
	return nil
}

// get returns a saved context of the loaded model.
func (c *contextStore) get(name string) (savedContext, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.load(); err != nil {
		return savedContext{}, err
	}
	sc, ok := c.index[name]
	if !ok {
		return sc, &apiError{status: http.StatusNotFound, typ: errTypeNotFound, message: fmt.Sprintf("no saved context %q", name)}
	}
	if sc.ModelFingerprint != c.fingerprint {
		return sc, &apiError{status: http.StatusConflict, typ: errTypeInvalidRequest,
			message: fmt.Sprintf("saved context %q was saved with another model (%q, fingerprint %q), not the loaded %q (fingerprint %q); save it again",
				name, sc.Model, sc.ModelFingerprint, c.model, c.fingerprint)}
	}
	return sc, nil
}

// bestPrefix finds the longest saved context of this model whose prompt starts prompt.
func (c *contextStore) bestPrefix(prompt string) (savedContext, bool) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.load(); err != nil {
		return savedContext{}, false
	}
	var best savedContext
	found := false
	for _, sc := range c.index {
		if sc.ModelFingerprint == c.fingerprint && len(sc.Prompt) > len(best.Prompt) && strings.HasPrefix(prompt, sc.Prompt) {
			best, found = sc, true
		}
	}
	return best, found
}

func (c *contextStore) list() ([]savedContext, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.load(); err != nil {
		return nil, err
	}
	out := make([]savedContext, 0, len(c.index))
	for _, sc := range c.index {
		out = append(out, sc)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// commit moves a written state into place and records its metadata. The caller holds the name's
// lock. The old metadata goes first: a crash in between leaves a context that is invisible, never
// one whose metadata describes another state.
func (c *contextStore) commit(sc savedContext, tmpState string) (savedContext, error) {
	c.mu.Lock()
	sc.Model, sc.ModelFingerprint = c.model, c.fingerprint
	c.mu.Unlock()
	return c.commitAs(sc, tmpState)
}

// commitAs is commit for a state made elsewhere (a pulled context): it keeps sc's model.
func (c *contextStore) commitAs(sc savedContext, tmpState string) (savedContext, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.load(); err != nil {
		return sc, err
	}
	sc.StateBytes = fileSize(tmpState)
	data, err := json.MarshalIndent(sc, "", "  ")
	if err != nil {
		return sc, fmt.Errorf("encode saved context %q: %w", sc.Name, err)
	}
	if err := os.Remove(c.metaPath(sc.Name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return sc, fmt.Errorf("replace saved context %q: %w", sc.Name, err)
	}
	delete(c.index, sc.Name)
	if err := os.Rename(tmpState, c.statePath(sc.Name)); err != nil {
		return sc, fmt.Errorf("store saved context %q: %w", sc.Name, err)
	}
	if err := writeFileAtomic(c.metaPath(sc.Name), data); err != nil {
		return sc, fmt.Errorf("store saved context %q: %w", sc.Name, err)
	}
	c.index[sc.Name] = sc
	return sc, nil
}

// remove deletes a saved context; the caller holds the name's lock.
func (c *contextStore) remove(name string) error {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.load(); err != nil {
		return err
	}
	if _, ok := c.index[name]; !ok {
		return &apiError{status: http.StatusNotFound, typ: errTypeNotFound, message: fmt.Sprintf("no saved context %q", name)}
	}
	// Metadata first: a context without it is invisible, while a state without metadata is harmless.
	if err := os.Remove(c.metaPath(name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("delete saved context %q: %w", name, err)
	}
	if err := os.Remove(c.statePath(name)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("delete saved context %q: %w", name, err)
	}
	delete(c.index, name)
	return nil
}

// slotSidecar is a slot file's sidecar: the model that wrote the state. (Files written before the
// engine owned the slots also carry the text the state held; it is no longer needed.)
type slotSidecar struct {
	ModelFingerprint string `json:"model_fingerprint"`
}

// commitSlotFile moves a written slot state into place with its sidecar; the caller holds the
// file's lock. The old sidecar goes first, so that a crash never pairs a state with another's.
func (c *contextStore) commitSlotFile(filename, tmpState string) error {
	c.mu.Lock()
	side, err := json.Marshal(slotSidecar{ModelFingerprint: c.fingerprint})
	c.mu.Unlock()
	if err != nil {
		return fmt.Errorf("encode slot file %q: %w", filename, err)
	}
	if err := os.Remove(c.slotText(filename)); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("replace slot file %q: %w", filename, err)
	}
	if err := os.Rename(tmpState, c.slotFile(filename)); err != nil {
		return fmt.Errorf("store slot file %q: %w", filename, err)
	}
	if err := writeFileAtomic(c.slotText(filename), side); err != nil {
		return fmt.Errorf("store slot file %q: %w", filename, err)
	}
	return nil
}

// checkSlotFile refuses a slot file that does not exist or that another model wrote. A file
// without a sidecar (copied in by hand) is restored as it is: the engine checks its format.
func (c *contextStore) checkSlotFile(filename string) error {
	if _, err := os.Stat(c.slotFile(filename)); errors.Is(err, fs.ErrNotExist) {
		return &apiError{status: http.StatusNotFound, typ: errTypeNotFound, message: fmt.Sprintf("no slot file %q", filename)}
	}
	data, err := os.ReadFile(c.slotText(filename))
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("read slot file %q: %w", filename, err)
	}
	var side slotSidecar
	if err := json.Unmarshal(data, &side); err != nil {
		return fmt.Errorf("read slot file %q: its sidecar %q is damaged: %w", filename, c.slotText(filename), err)
	}
	c.mu.Lock()
	fp := c.fingerprint
	c.mu.Unlock()
	if side.ModelFingerprint != fp {
		return &apiError{status: http.StatusConflict, typ: errTypeInvalidRequest,
			message: fmt.Sprintf("slot file %q was saved with another model (fingerprint %q), not the loaded one (%q)", filename, side.ModelFingerprint, fp)}
	}
	return nil
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}

func fileSize(path string) int64 {
	fi, err := os.Stat(path)
	if err != nil {
		return 0
	}
	return fi.Size()
}

// ---------------------------------------------------------------- handlers

// contextSaveRequest names a prompt to save: raw text, or chat messages rendered with the model's
// template (without the assistant header), so that chat requests starting with the same messages
// resume from it.
type contextSaveRequest struct {
	Name     string               `json:"name"`
	Prompt   *string              `json:"prompt"`
	Messages []openai.ChatMessage `json:"messages"`
}

type contextNameRequest struct {
	Name   string `json:"name"`
	IDSlot *int   `json:"id_slot,omitempty"`
}

// decodeContextName reads a request that names a saved context and checks the name; when it returns
// false it has already answered with the error.
func decodeContextName(w http.ResponseWriter, r *http.Request) (contextNameRequest, bool) {
	var req contextNameRequest
	if err := decodeJSON(r, &req); err != nil {
		fail(w, r, err)
		return req, false
	}
	if err := validName("name", req.Name); err != nil {
		fail(w, r, err)
		return req, false
	}
	return req, true
}

// contextInfo is a saved context as the API shows it (the prompt abbreviated).
type contextInfo struct {
	Name          string    `json:"name"`
	Model         string    `json:"model"`
	Tokens        int       `json:"tokens"`
	PromptChars   int       `json:"prompt_chars"`
	PromptPreview string    `json:"prompt_preview"`
	StateBytes    int64     `json:"state_bytes"`
	Created       time.Time `json:"created"`
}

func toContextInfo(sc savedContext) contextInfo {
	return contextInfo{Name: sc.Name, Model: sc.Model, Tokens: sc.Tokens, PromptChars: len(sc.Prompt),
		PromptPreview: truncate(sc.Prompt, 120), StateBytes: sc.StateBytes, Created: sc.Created}
}

func (s *Server) handleContextSave(w http.ResponseWriter, r *http.Request) {
	l := s.engineOr503(w)
	if l == nil {
		return
	}
	var req contextSaveRequest
	if err := decodeJSON(r, &req); err != nil {
		fail(w, r, err)
		return
	}
	if err := validName("name", req.Name); err != nil {
		fail(w, r, err)
		return
	}
	switch {
	case req.Prompt != nil && req.Messages != nil:
		fail(w, r, badRequest("send either prompt or messages, not both"))
		return
	case req.Messages != nil:
		if err := checkMessageCount("messages", len(req.Messages)); err != nil {
			fail(w, r, err)
			return
		}
		msgs, err := openai.ToEngineMessages(req.Messages)
		if err != nil {
			fail(w, r, err)
			return
		}
		text, err := l.eng.ApplyTemplate(msgs, false)
		if err != nil {
			fail(w, r, fmt.Errorf("apply the chat template: %w", err))
			return
		}
		req.Prompt = &text
	}
	if req.Prompt == nil || *req.Prompt == "" {
		fail(w, r, badRequest("prompt (or messages) is required and must not be empty"))
		return
	}
	if err := checkFits(r.Context(), l, *req.Prompt); err != nil {
		fail(w, r, err)
		return
	}
	unlock, err := s.contexts.lock(r.Context(), contextKey(req.Name))
	if err != nil {
		fail(w, r, err)
		return
	}
	defer unlock()
	tmp, err := newTempFile(s.contexts.dir)
	if err != nil {
		fail(w, r, fmt.Errorf("save context %q: %w", req.Name, err))
		return
	}
	committed := false
	defer func() {
		if !committed {
			os.Remove(tmp)
		}
	}()
	start := time.Now()
	saved, err := l.eng.SaveState(r.Context(), -1, *req.Prompt, tmp)
	if err != nil {
		fail(w, r, fmt.Errorf("save context %q: %w", req.Name, err))
		return
	}
	sc, err := s.contexts.commit(savedContext{Name: req.Name, Prompt: *req.Prompt, Tokens: saved.Tokens, Created: time.Now().UTC()}, tmp)
	if err != nil {
		fail(w, r, err)
		return
	}
	committed = true
	s.metrics.promptTokens.Add(int64(saved.Tokens))
	writeJSON(w, http.StatusOK, map[string]any{"saved": toContextInfo(sc), "id_slot": saved.Slot, "ms": msSince(start)})
}

func (s *Server) handleContextLoad(w http.ResponseWriter, r *http.Request) {
	l := s.engineOr503(w)
	if l == nil {
		return
	}
	req, ok := decodeContextName(w, r)
	if !ok {
		return
	}
	unlock, err := s.contexts.lock(r.Context(), contextKey(req.Name))
	if err != nil {
		fail(w, r, err)
		return
	}
	defer unlock()
	sc, err := s.contexts.get(req.Name)
	if err != nil {
		fail(w, r, err)
		return
	}
	want := -1
	if req.IDSlot != nil {
		want = *req.IDSlot
	}
	if want >= l.info.Slots || want < -1 {
		fail(w, r, badRequest("slot %d does not exist (the server has %d slots)", want, l.info.Slots))
		return
	}
	start := time.Now()
	loaded, err := l.eng.LoadState(r.Context(), want, s.contexts.statePath(sc.Name))
	if err != nil {
		fail(w, r, fmt.Errorf("load context %q: %w", req.Name, err))
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"loaded": toContextInfo(sc), "id_slot": loaded.Slot, "tokens": loaded.Tokens, "ms": msSince(start)})
}

func (s *Server) handleContextList(w http.ResponseWriter, r *http.Request) {
	switch r.URL.Query().Get("remote") {
	case "", "0", "false":
	case "1", "true":
		s.handleRemoteContextList(w, r)
		return
	default:
		fail(w, r, badRequest("remote must be 1 or 0"))
		return
	}
	all, err := s.contexts.list()
	if err != nil {
		fail(w, r, err)
		return
	}
	out := make([]contextInfo, 0, len(all))
	for _, sc := range all {
		out = append(out, toContextInfo(sc))
	}
	writeJSON(w, http.StatusOK, map[string]any{"object": "list", "data": out})
}

func (s *Server) handleContextDelete(w http.ResponseWriter, r *http.Request) {
	req, ok := decodeContextName(w, r)
	if !ok {
		return
	}
	unlock, err := s.contexts.lock(r.Context(), contextKey(req.Name))
	if err != nil {
		fail(w, r, err)
		return
	}
	defer unlock()
	if err := s.contexts.remove(req.Name); err != nil {
		fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"name": req.Name, "deleted": true})
}
