package repl

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"time"

	"github.com/expertsniper/expertsniper/engine"
)

// sessionName keeps names to one plain path element.
var sessionName = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._-]{0,63}$`)

// Session is a saved conversation: the messages, and beside them the KV state of their prompt so that
// /load continues without re-evaluating it.
type Session struct {
	Name  string    `json:"name"`
	Saved time.Time `json:"saved"`
	Model string    `json:"model"`
	// ModelFingerprint identifies the model file (gguf.Fingerprint): a KV state fits no other.
	ModelFingerprint string           `json:"model_fingerprint,omitempty"`
	Mode             string           `json:"mode"`
	Messages         []engine.Message `json:"messages"`
	// Tokens is the length of the saved KV state (0 when none was saved).
	Tokens int `json:"tokens"`
}

// SessionStore keeps sessions in a directory: NAME.json plus NAME.kv.
type SessionStore struct{ Dir string }

func (s SessionStore) paths(name string) (meta, state string, err error) {
	if !sessionName.MatchString(name) || name == "." || name == ".." {
		return "", "", fmt.Errorf("session name %q: use letters, digits, '.', '_' and '-' (at most 64, no paths)", name)
	}
	return filepath.Join(s.Dir, name+".json"), filepath.Join(s.Dir, name+".kv"), nil
}

// Save writes the conversation and asks the engine to store the KV state of its prompt.
func (s SessionStore) Save(ctx context.Context, eng engine.Engine, slot int, sess Session) (Session, error) {
	meta, state, err := s.paths(sess.Name)
	if err != nil {
		return sess, err
	}
	if err := os.MkdirAll(s.Dir, 0o755); err != nil {
		return sess, fmt.Errorf("save session %q: %w", sess.Name, err)
	}
	sess.Saved = time.Now().UTC()
	sess.Tokens = 0
	if len(sess.Messages) > 0 {
		prompt, err := eng.ApplyTemplate(sess.Messages, false)
		if err != nil {
			return sess, fmt.Errorf("save session %q: apply the chat template: %w", sess.Name, err)
		}
		tmp := state + ".tmp"
		saved, err := eng.SaveState(ctx, slot, prompt, tmp)
		if err != nil {
			os.Remove(tmp)
			return sess, fmt.Errorf("save session %q: KV state: %w", sess.Name, err)
		}
		if err := os.Rename(tmp, state); err != nil {
			return sess, fmt.Errorf("save session %q: %w", sess.Name, err)
		}
		sess.Tokens = saved.Tokens
	} else {
		os.Remove(state)
	}
	data, err := json.MarshalIndent(sess, "", "  ")
	if err != nil {
		return sess, fmt.Errorf("save session %q: %w", sess.Name, err)
	}
	tmp := meta + ".tmp"
	if err := os.WriteFile(tmp, data, 0o644); err != nil {
		return sess, fmt.Errorf("save session %q: %w", sess.Name, err)
	}
	if err := os.Rename(tmp, meta); err != nil {
		return sess, fmt.Errorf("save session %q: %w", sess.Name, err)
	}
	return sess, nil
}

// Load reads a session. When it was saved with the model now loaded, its KV state goes back into slot;
// otherwise only the messages come back (the next answer re-evaluates them) and kvErr says why.
func (s SessionStore) Load(ctx context.Context, eng engine.Engine, slot int, name, model string) (sess Session, kvErr, err error) {
	meta, state, err := s.paths(name)
	if err != nil {
		return sess, nil, err
	}
	data, err := os.ReadFile(meta)
	if errors.Is(err, fs.ErrNotExist) {
		return sess, nil, fmt.Errorf("no session named %q in %s", name, s.Dir)
	}
	if err != nil {
		return sess, nil, fmt.Errorf("load session %q: %w", name, err)
	}
	if err := json.Unmarshal(data, &sess); err != nil {
		return sess, nil, fmt.Errorf("load session %q: %s is damaged: %w", name, meta, err)
	}
	if sess.Tokens == 0 {
		return sess, nil, nil
	}
	if fp := eng.Info().Fingerprint; sess.Model != model || (sess.ModelFingerprint != "" && fp != "" && sess.ModelFingerprint != fp) {
		return sess, fmt.Errorf("its KV state belongs to model %q, not %q", sess.Model, model), nil
	}
	loaded, err := eng.LoadState(ctx, slot, state)
	if err != nil {
		if ctx.Err() != nil {
			return sess, nil, ctx.Err()
		}
		return sess, fmt.Errorf("restore KV state: %w", err), nil
	}
	sess.Tokens = loaded.Tokens
	return sess, nil, nil
}

// List returns the names of saved sessions.
func (s SessionStore) List() ([]string, error) {
	matches, err := filepath.Glob(filepath.Join(s.Dir, "*.json"))
	if err != nil {
		return nil, err
	}
	names := make([]string, 0, len(matches))
	for _, m := range matches {
		names = append(names, filepath.Base(m[:len(m)-len(".json")]))
	}
	return names, nil
}
