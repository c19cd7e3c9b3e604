package server

import (
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
// Layout of the context directory: NAME.json (metadata and the prompt), NAME.state (the engine's
// state file), and slots/ for llama-server's /slots save and restore.

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
	Name       string    `json:"name"`
	Model      string    `json:"model"`
	Prompt     string    `json:"prompt"`
	Tokens     int       `json:"tokens"`
	StateBytes int64     `json:"state_bytes"`
	Created    time.Time `json:"created"`
}

type contextStore struct {
	dir string

	mu     sync.Mutex
	model  string
	index  map[string]savedContext
	loaded bool
}

func newContextStore(dir string) *contextStore {
	return &contextStore{dir: dir, index: map[string]savedContext{}}
}

func (c *contextStore) setModel(model string) {
	c.mu.Lock()
	c.model = model
	c.mu.Unlock()
}

func (c *contextStore) statePath(name string) string { return filepath.Join(c.dir, name+".state") }
func (c *contextStore) metaPath(name string) string  { return filepath.Join(c.dir, name+".json") }

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
	if sc.Model != c.model {
		return sc, &apiError{status: http.StatusConflict, typ: errTypeInvalidRequest,
			message: fmt.Sprintf("saved context %q belongs to model %q, not the loaded %q", name, sc.Model, c.model)}
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
		if sc.Model == c.model && len(sc.Prompt) > len(best.Prompt) && strings.HasPrefix(prompt, sc.Prompt) {
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

// tempStatePath is where a state is written before it replaces NAME.state.
func (c *contextStore) tempStatePath(name string) (string, error) {
	if err := os.MkdirAll(c.dir, 0o755); err != nil {
		return "", fmt.Errorf("create the context directory %q: %w", c.dir, err)
	}
	return filepath.Join(c.dir, "."+name+".state.tmp"), nil
}

// commit moves a written state into place and records its metadata.
func (c *contextStore) commit(sc savedContext, tmpState string) (savedContext, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if err := c.load(); err != nil {
		return sc, err
	}
	sc.Model = c.model
	sc.StateBytes = fileSize(tmpState)
	data, err := json.MarshalIndent(sc, "", "  ")
	if err != nil {
		return sc, fmt.Errorf("encode saved context %q: %w", sc.Name, err)
	}
	if err := os.Rename(tmpState, c.statePath(sc.Name)); err != nil {
		return sc, fmt.Errorf("store saved context %q: %w", sc.Name, err)
	}
	if err := writeFileAtomic(c.metaPath(sc.Name), data); err != nil {
		return sc, fmt.Errorf("store saved context %q: %w", sc.Name, err)
	}
	c.index[sc.Name] = sc
	return sc, nil
}

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

// slotFile is the path of a /slots save file (the name was validated).
func (c *contextStore) slotFile(filename string) (string, error) {
	dir := filepath.Join(c.dir, "slots")
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return "", fmt.Errorf("create the slot directory %q: %w", dir, err)
	}
	return filepath.Join(dir, filename), nil
}

// writeSlotMeta keeps the text a slot file holds, so that a restored slot is matched by prefix.
func (c *contextStore) writeSlotMeta(filename, text string) error {
	path, err := c.slotFile(filename)
	if err != nil {
		return err
	}
	return writeFileAtomic(path+".txt", []byte(text))
}

func (c *contextStore) readSlotMeta(filename string) (string, error) {
	path, err := c.slotFile(filename)
	if err != nil {
		return "", err
	}
	if _, err := os.Stat(path); errors.Is(err, fs.ErrNotExist) {
		return "", &apiError{status: http.StatusNotFound, typ: errTypeNotFound, message: fmt.Sprintf("no slot file %q", filename)}
	}
	text, err := os.ReadFile(path + ".txt")
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("read slot file %q: %w", filename, err)
	}
	return string(text), nil
}

func writeFileAtomic(path string, data []byte) error {
	tmp := filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".tmp")
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
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
	tmp, err := s.contexts.tempStatePath(req.Name)
	if err != nil {
		fail(w, r, err)
		return
	}
	defer os.Remove(tmp)
	sl, err := l.slots.acquire(r.Context(), *req.Prompt, -1)
	if err != nil {
		fail(w, r, err)
		return
	}
	defer l.slots.release(sl)
	start := time.Now()
	n, err := l.eng.SaveState(r.Context(), sl.id, *req.Prompt, tmp)
	if err != nil {
		l.slots.setCached(sl, "") // unknown after a failure
		fail(w, r, fmt.Errorf("save context %q: %w", req.Name, err))
		return
	}
	l.slots.setCached(sl, *req.Prompt)
	sc, err := s.contexts.commit(savedContext{Name: req.Name, Prompt: *req.Prompt, Tokens: n, Created: time.Now().UTC()}, tmp)
	if err != nil {
		fail(w, r, err)
		return
	}
	s.metrics.promptTokens.Add(int64(n))
	writeJSON(w, http.StatusOK, map[string]any{"saved": toContextInfo(sc), "id_slot": sl.id, "ms": msSince(start)})
}

func (s *Server) handleContextLoad(w http.ResponseWriter, r *http.Request) {
	l := s.engineOr503(w)
	if l == nil {
		return
	}
	var req contextNameRequest
	if err := decodeJSON(r, &req); err != nil {
		fail(w, r, err)
		return
	}
	if err := validName("name", req.Name); err != nil {
		fail(w, r, err)
		return
	}
	sc, err := s.contexts.get(req.Name)
	if err != nil {
		fail(w, r, err)
		return
	}
	want := -1
	if req.IDSlot != nil {
		want = *req.IDSlot
	}
	sl, err := l.slots.acquire(r.Context(), sc.Prompt, want)
	if err != nil {
		fail(w, r, err)
		return
	}
	defer l.slots.release(sl)
	start := time.Now()
	n, err := l.eng.LoadState(r.Context(), sl.id, s.contexts.statePath(sc.Name))
	if err != nil {
		l.slots.setCached(sl, "")
		fail(w, r, fmt.Errorf("load context %q: %w", req.Name, err))
		return
	}
	l.slots.setCached(sl, sc.Prompt)
	writeJSON(w, http.StatusOK, map[string]any{"loaded": toContextInfo(sc), "id_slot": sl.id, "tokens": n, "ms": msSince(start)})
}

func (s *Server) handleContextList(w http.ResponseWriter, r *http.Request) {
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
	var req contextNameRequest
	if err := decodeJSON(r, &req); err != nil {
		fail(w, r, err)
		return
	}
	if err := validName("name", req.Name); err != nil {
		fail(w, r, err)
		return
	}
	if err := s.contexts.remove(req.Name); err != nil {
		fail(w, r, err)
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"name": req.Name, "deleted": true})
}
