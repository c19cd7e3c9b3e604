package repl

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"text/tabwriter"
	"time"

	"github.com/expertsniper/expertsniper/bytesize"
	"github.com/expertsniper/expertsniper/remote"
)

// Saved conversations travel through the remote (--remote) under PREFIX/sessions/, apart from the
// server's saved contexts: /save NAME, /push NAME on one machine; /pull NAME, /load NAME on another.

// SessionsRemote is the part of a remote that holds saved conversations.
func SessionsRemote(r *remote.Remote) *remote.Remote { return r.Sub("sessions") }

// Push uploads a saved session (its messages and KV state).
func (s SessionStore) Push(ctx context.Context, rem *remote.Remote, name string, progress remote.Progress) (remote.Manifest, error) {
	meta, state, err := s.paths(name)
	if err != nil {
		return remote.Manifest{}, err
	}
	data, err := os.ReadFile(meta)
	if errors.Is(err, fs.ErrNotExist) {
		return remote.Manifest{}, fmt.Errorf("no session named %q in %s (/save %s first)", name, s.Dir, name)
	}
	if err != nil {
		return remote.Manifest{}, fmt.Errorf("push session %q: %w", name, err)
	}
	var sess Session
	if err := json.Unmarshal(data, &sess); err != nil {
		return remote.Manifest{}, fmt.Errorf("push session %q: %s is damaged: %w", name, meta, err)
	}
	if sess.Tokens == 0 {
		return remote.Manifest{}, fmt.Errorf("session %q has no KV state to push: /save it after the conversation has started", name)
	}
	return SessionsRemote(rem).Push(ctx, remote.Local{Name: name, Model: remote.Model{Name: sess.Model, Fingerprint: sess.ModelFingerprint},
		Tokens: sess.Tokens, MetaPath: meta, StatePath: state}, progress)
}

// Pull downloads a session, verifies it and stores it under its name (replacing a local one only once
// the download is complete and verified). want is the loaded model: another model's session is refused.
func (s SessionStore) Pull(ctx context.Context, rem *remote.Remote, name string, want remote.Model, progress remote.Progress) (Session, remote.Manifest, error) {
	meta, state, err := s.paths(name)
	if err != nil {
		return Session{}, remote.Manifest{}, err
	}
	if err := os.MkdirAll(s.Dir, 0o700); err != nil {
		return Session{}, remote.Manifest{}, fmt.Errorf("pull session %q: %w", name, err)
	}
	// Session names start with a letter or digit, so this name is no session's.
	part := filepath.Join(s.Dir, ".pull-"+name+".part")
	m, err := SessionsRemote(rem).Pull(ctx, name, want, part, progress)
	if err != nil {
		return Session{}, m, err
	}
	var sess Session
	if err := json.Unmarshal(m.Meta, &sess); err != nil || sess.Name != name {
		os.Remove(part)
		return sess, m, fmt.Errorf("pull session %q: %w: its metadata is not a saved conversation", name, remote.ErrCorrupt)
	}
	// The old metadata goes first, so that a crash never pairs it with the new state.
	if err := os.Remove(meta); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return sess, m, fmt.Errorf("pull session %q: %w", name, err)
	}
	if err := os.Rename(part, state); err != nil {
		return sess, m, fmt.Errorf("pull session %q: %w", name, err)
	}
	tmp := meta + ".tmp"
	if err := os.WriteFile(tmp, m.Meta, 0o600); err != nil {
		return sess, m, fmt.Errorf("pull session %q: %w", name, err)
	}
	if err := os.Rename(tmp, meta); err != nil {
		return sess, m, fmt.Errorf("pull session %q: %w", name, err)
	}
	return sess, m, nil
}

func (r *REPL) remoteOrErr() (*remote.Remote, error) {
	if r.opts.Remote == nil {
		return nil, remote.ErrNoRemote
	}
	return r.opts.Remote, nil
}

// transferProgress prints a transfer's percentage on one line, every tenth of the way.
func (r *REPL) transferProgress(verb, name string) remote.Progress {
	return remote.EveryTenth(func(tenth int, _, total int64) {
		fmt.Fprintf(r.err, "\r%s %s: %3d%% of %s", verb, name, tenth*10, bytesize.Format(total))
	})
}

func (r *REPL) cmdPush(ctx context.Context, name string) (bool, error) {
	if name == "" {
		return false, errors.New("usage: /push NAME (a conversation saved with /save NAME)")
	}
	rem, err := r.remoteOrErr()
	if err != nil {
		return false, err
	}
	start := time.Now()
	var m remote.Manifest
	err = r.op(ctx, func(ctx context.Context) error {
		m, err = r.sessions.Push(ctx, rem, name, r.transferProgress("pushing", name))
		return err
	})
	fmt.Fprintln(r.err)
	if err != nil {
		return false, err
	}
	fmt.Fprintf(r.err, "pushed %s to %s: KV state of %d tokens, %s in %.1fs\n", name, SessionsRemote(rem), m.Tokens,
		bytesize.Format(m.StateBytes), time.Since(start).Seconds())
	return false, nil
}

func (r *REPL) cmdPull(ctx context.Context, name string) (bool, error) {
	if name == "" {
		return false, errors.New("usage: /pull NAME (see /ls-remote)")
	}
	rem, err := r.remoteOrErr()
	if err != nil {
		return false, err
	}
	start := time.Now()
	var sess Session
	want := remote.Model{Name: r.model.Name, Fingerprint: r.eng.Info().Fingerprint}
	err = r.op(ctx, func(ctx context.Context) error {
		sess, _, err = r.sessions.Pull(ctx, rem, name, want, r.transferProgress("pulling", name))
		return err
	})
	fmt.Fprintln(r.err)
	if err != nil {
		return false, err
	}
	fmt.Fprintf(r.err, "pulled %s: %d messages, KV state of %d tokens in %.1fs; /load %s resumes it\n", name,
		len(sess.Messages), sess.Tokens, time.Since(start).Seconds(), name)
	return false, nil
}

func (r *REPL) cmdListRemote(ctx context.Context, _ string) (bool, error) {
	rem, err := r.remoteOrErr()
	if err != nil {
		return false, err
	}
	var entries []remote.Entry
	err = r.op(ctx, func(ctx context.Context) error {
		entries, err = SessionsRemote(rem).List(ctx)
		return err
	})
	if err != nil {
		return false, err
	}
	if len(entries) == 0 {
		fmt.Fprintf(r.err, "no conversations in %s yet (/save NAME, then /push NAME)\n", SessionsRemote(rem))
		return false, nil
	}
	tw := tabwriter.NewWriter(r.err, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tTOKENS\tSIZE\tMODEL\tPUSHED")
	for _, e := range entries {
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\n", e.Name, e.Tokens, bytesize.Format(e.StateBytes), e.Model.Name,
			e.Pushed.Local().Format("2006-01-02 15:04"))
	}
	return false, tw.Flush()
}
