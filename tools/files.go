package tools

import (
	"context"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// ErrOutsideWorkspace is returned for a path that is absolute, climbs with "..", or resolves (through a
// symlink) to somewhere outside the working directory.
var ErrOutsideWorkspace = errors.New("path is outside the working directory")

// Workspace gives read, list and write access to one directory tree and nothing else. Every access goes
// through an os.Root, which refuses escapes even when a symlink changes between our check and the use;
// the explicit checks in clean exist to give the user a clear reason.
type Workspace struct {
	dir  string
	root *os.Root
	// Confirm is asked before every write.
	Confirm Confirmer
	// MaxReadBytes bounds ReadFile (0 = 1 MiB), so that a stray binary does not flood the model.
	MaxReadBytes int64
}

// OpenWorkspace opens dir (usually the current directory) as a workspace; Close releases it.
func OpenWorkspace(dir string, confirm Confirmer) (*Workspace, error) {
	abs, err := filepath.Abs(dir)
	if err != nil {
		return nil, fmt.Errorf("open workspace %q: %w", dir, err)
	}
	root, err := os.OpenRoot(abs)
	if err != nil {
		return nil, fmt.Errorf("open workspace %q: %w", dir, err)
	}
	return &Workspace{dir: abs, root: root, Confirm: confirm}, nil
}

// Dir is the workspace's absolute path.
func (w *Workspace) Dir() string { return w.dir }

// Close releases the workspace.
func (w *Workspace) Close() error { return w.root.Close() }

// clean validates a user- or model-supplied relative path and returns it in slash-free OS form.
func (w *Workspace) clean(name string) (string, error) {
	if strings.TrimSpace(name) == "" {
		return "", errors.New("empty path")
	}
	if filepath.IsAbs(name) || strings.HasPrefix(name, "/") || strings.HasPrefix(name, `\`) || filepath.VolumeName(name) != "" {
		return "", fmt.Errorf("%q: absolute paths are not allowed: %w", name, ErrOutsideWorkspace)
	}
	for _, part := range strings.FieldsFunc(name, func(r rune) bool { return r == '/' || r == '\\' }) {
		if part == ".." {
			return "", fmt.Errorf("%q: \"..\" is not allowed: %w", name, ErrOutsideWorkspace)
		}
	}
	rel := filepath.Clean(filepath.FromSlash(name))
	// Resolve symlinks of the longest existing prefix; a link that leaves the tree is refused by name.
	if err := w.checkResolved(rel); err != nil {
		return "", err
	}
	return rel, nil
}

func (w *Workspace) checkResolved(rel string) error {
	p := filepath.Join(w.dir, rel)
	for {
		resolved, err := filepath.EvalSymlinks(p)
		if err == nil {
			base, berr := filepath.EvalSymlinks(w.dir)
			if berr != nil {
				return fmt.Errorf("resolve workspace %q: %w", w.dir, berr)
			}
			inside, rerr := filepath.Rel(base, resolved)
			if rerr != nil || inside == ".." || strings.HasPrefix(inside, ".."+string(filepath.Separator)) {
				return fmt.Errorf("%q resolves to %q: %w", rel, resolved, ErrOutsideWorkspace)
			}
			return nil
		}
		if !errors.Is(err, fs.ErrNotExist) {
			return fmt.Errorf("resolve %q: %w", rel, err)
		}
		// A dangling symlink is itself suspect: where it points may be created later, outside.
		if fi, lerr := os.Lstat(p); lerr == nil && fi.Mode()&fs.ModeSymlink != 0 {
			target, _ := os.Readlink(p)
			if filepath.IsAbs(target) || strings.HasPrefix(filepath.Clean(target), "..") {
				return fmt.Errorf("%q is a symlink to %q: %w", rel, target, ErrOutsideWorkspace)
			}
		}
		parent := filepath.Dir(p)
		if parent == p || len(parent) < len(w.dir) {
			return nil
		}
		p = parent
	}
}

// ReadFile returns the contents of a file in the workspace, at most MaxReadBytes of it; truncated
// reports whether there was more.
func (w *Workspace) ReadFile(name string) (content string, truncated bool, err error) {
	rel, err := w.clean(name)
	if err != nil {
		return "", false, fmt.Errorf("read %w", err)
	}
	f, err := w.root.Open(rel)
	if err != nil {
		return "", false, fmt.Errorf("read %q: %w", name, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return "", false, fmt.Errorf("read %q: %w", name, err)
	}
	if fi.IsDir() {
		return "", false, fmt.Errorf("read %q: is a directory", name)
	}
	limit := w.MaxReadBytes
	if limit <= 0 {
		limit = 1 << 20
	}
	data, err := io.ReadAll(io.LimitReader(f, limit+1))
	if err != nil {
		return "", false, fmt.Errorf("read %q: %w", name, err)
	}
	if int64(len(data)) > limit {
		return string(data[:limit]), true, nil
	}
	return string(data), false, nil
}

// Entry is one line of a directory listing.
type Entry struct {
	Name  string
	Dir   bool
	Link  bool
	Bytes int64
}

// List returns the entries of a directory in the workspace ("" or "." = the workspace itself), sorted
// by name.
func (w *Workspace) List(name string) ([]Entry, error) {
	if strings.TrimSpace(name) == "" {
		name = "."
	}
	rel, err := w.clean(name)
	if err != nil {
		return nil, fmt.Errorf("list %w", err)
	}
	f, err := w.root.Open(rel)
	if err != nil {
		return nil, fmt.Errorf("list %q: %w", name, err)
	}
	defer f.Close()
	des, err := f.ReadDir(-1)
	if err != nil {
		return nil, fmt.Errorf("list %q: %w", name, err)
	}
	out := make([]Entry, 0, len(des))
	for _, de := range des {
		e := Entry{Name: de.Name(), Dir: de.IsDir(), Link: de.Type()&fs.ModeSymlink != 0}
		if info, err := de.Info(); err == nil && !e.Dir {
			e.Bytes = info.Size()
		}
		out = append(out, e)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Name < out[j].Name })
	return out, nil
}

// WriteFile writes content to a file in the workspace after the user confirms, creating parent
// directories. An existing file is replaced, and the question says so.
func (w *Workspace) WriteFile(ctx context.Context, name, content string) error {
	rel, err := w.clean(name)
	if err != nil {
		return fmt.Errorf("write %w", err)
	}
	verb := "Create"
	if fi, err := w.root.Lstat(rel); err == nil {
		if fi.IsDir() {
			return fmt.Errorf("write %q: is a directory", name)
		}
		verb = "Overwrite"
	}
	question := fmt.Sprintf("%s %s (%d bytes)?", verb, ShowExactly(filepath.Join(w.dir, rel)), len(content))
	if err := confirm(ctx, w.Confirm, question); err != nil {
		return fmt.Errorf("write %q: %w", name, err)
	}
	if dir := filepath.Dir(rel); dir != "." {
		if err := w.root.MkdirAll(dir, 0o755); err != nil {
			return fmt.Errorf("write %q: %w", name, err)
		}
	}
	if err := w.root.WriteFile(rel, []byte(content), 0o644); err != nil {
		return fmt.Errorf("write %q: %w", name, err)
	}
	return nil
}
