package tools

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// recorder is a Confirmer that answers a fixed value and remembers what it was asked.
type recorder struct {
	answer    bool
	questions []string
}

func (r *recorder) Confirm(_ context.Context, q string) (bool, error) {
	r.questions = append(r.questions, q)
	return r.answer, nil
}

func newWorkspace(t *testing.T, answer bool) (*Workspace, *recorder, string) {
	t.Helper()
	parent := t.TempDir()
	dir := filepath.Join(parent, "work")
	if err := os.MkdirAll(filepath.Join(dir, "sub"), 0o755); err != nil {
		t.Fatal(err)
	}
	must(t, os.WriteFile(filepath.Join(parent, "secret.txt"), []byte("outside"), 0o644))
	must(t, os.WriteFile(filepath.Join(dir, "notes.txt"), []byte("hello notes"), 0o644))
	must(t, os.WriteFile(filepath.Join(dir, "sub", "a.txt"), []byte("aaa"), 0o644))
	must(t, os.Symlink(filepath.Join(parent, "secret.txt"), filepath.Join(dir, "abs-link")))
	must(t, os.Symlink("../secret.txt", filepath.Join(dir, "rel-link")))
	must(t, os.Symlink(parent, filepath.Join(dir, "up-dir")))
	must(t, os.Symlink("sub/a.txt", filepath.Join(dir, "inside-link")))
	rec := &recorder{answer: answer}
	w, err := OpenWorkspace(dir, rec)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Close() })
	return w, rec, parent
}

func must(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}

func TestWorkspaceReadsAndListsInside(t *testing.T) {
	w, _, _ := newWorkspace(t, false)
	got, truncated, err := w.ReadFile("notes.txt")
	if err != nil || got != "hello notes" || truncated {
		t.Fatalf("ReadFile = %q, %v, %v", got, truncated, err)
	}
	if got, _, err := w.ReadFile("sub/a.txt"); err != nil || got != "aaa" {
		t.Fatalf("ReadFile(sub/a.txt) = %q, %v", got, err)
	}
	if got, _, err := w.ReadFile("inside-link"); err != nil || got != "aaa" {
		t.Fatalf("a symlink that stays inside must work: %q, %v", got, err)
	}
	entries, err := w.List("")
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range entries {
		names = append(names, e.Name)
	}
	if strings.Join(names, ",") != "abs-link,inside-link,notes.txt,rel-link,sub,up-dir" {
		t.Fatalf("List = %v", names)
	}
	w.MaxReadBytes = 5
	if got, truncated, err := w.ReadFile("notes.txt"); err != nil || got != "hello" || !truncated {
		t.Fatalf("bounded ReadFile = %q, %v, %v", got, truncated, err)
	}
}

func TestWorkspaceRefusesPathsOutside(t *testing.T) {
	w, rec, parent := newWorkspace(t, true)
	bad := []string{
		"../secret.txt", "sub/../../secret.txt", "..", filepath.Join(parent, "secret.txt"), "/etc/passwd",
		"abs-link", "rel-link", "up-dir/secret.txt", "up-dir",
	}
	for _, name := range bad {
		if _, _, err := w.ReadFile(name); !errors.Is(err, ErrOutsideWorkspace) {
			t.Errorf("ReadFile(%q) err = %v, want ErrOutsideWorkspace", name, err)
		}
		if _, err := w.List(name); !errors.Is(err, ErrOutsideWorkspace) {
			t.Errorf("List(%q) err = %v, want ErrOutsideWorkspace", name, err)
		}
		if err := w.WriteFile(context.Background(), name, "pwned"); !errors.Is(err, ErrOutsideWorkspace) {
			t.Errorf("WriteFile(%q) err = %v, want ErrOutsideWorkspace", name, err)
		}
	}
	if len(rec.questions) != 0 {
		t.Fatalf("the user was asked about refused writes: %q", rec.questions)
	}
	if data, _ := os.ReadFile(filepath.Join(parent, "secret.txt")); string(data) != "outside" {
		t.Fatalf("the file outside was changed: %q", data)
	}
	if _, err := os.Stat(filepath.Join(parent, "pwned")); err == nil {
		t.Fatal("a file was created outside")
	}
}

func TestWorkspaceRefusesDanglingSymlinkOut(t *testing.T) {
	w, _, parent := newWorkspace(t, true)
	must(t, os.Symlink(filepath.Join(parent, "later.txt"), filepath.Join(w.Dir(), "dangling")))
	if err := w.WriteFile(context.Background(), "dangling", "x"); !errors.Is(err, ErrOutsideWorkspace) {
		t.Fatalf("write through a dangling link out: err = %v", err)
	}
	if _, err := os.Stat(filepath.Join(parent, "later.txt")); err == nil {
		t.Fatal("the write went through the link")
	}
}

func TestWorkspaceWriteNeedsConfirmation(t *testing.T) {
	w, rec, _ := newWorkspace(t, false)
	err := w.WriteFile(context.Background(), "new/out.txt", "data")
	if !errors.Is(err, ErrDeclined) {
		t.Fatalf("declined write: err = %v", err)
	}
	if _, err := os.Stat(filepath.Join(w.Dir(), "new")); err == nil {
		t.Fatal("a declined write created something")
	}
	if len(rec.questions) != 1 || !strings.Contains(rec.questions[0], "Create") || !strings.Contains(rec.questions[0], "out.txt") {
		t.Fatalf("questions = %q", rec.questions)
	}
	rec.answer = true
	must(t, w.WriteFile(context.Background(), "new/out.txt", "data"))
	if data, _ := os.ReadFile(filepath.Join(w.Dir(), "new", "out.txt")); string(data) != "data" {
		t.Fatalf("written %q", data)
	}
	must(t, w.WriteFile(context.Background(), "new/out.txt", "more"))
	if !strings.Contains(rec.questions[2], "Overwrite") {
		t.Fatalf("overwriting must say so: %q", rec.questions[2])
	}
	w.Confirm = nil
	if err := w.WriteFile(context.Background(), "x.txt", "y"); !errors.Is(err, ErrNoConfirmer) {
		t.Fatalf("no confirmer: err = %v", err)
	}
}

func TestShellNeverRunsWithoutConfirmation(t *testing.T) {
	dir := t.TempDir()
	marker := filepath.Join(dir, "ran")
	cmd := "touch " + marker
	for name, c := range map[string]Confirmer{
		"declined": &recorder{answer: false},
		"nil":      nil,
		"error": ConfirmFunc(func(context.Context, string) (bool, error) {
			return true, errors.New("terminal closed") // an error is never a yes, even with true
		}),
	} {
		s := &Shell{Dir: dir, Confirm: c}
		if _, err := s.Run(context.Background(), cmd); err == nil {
			t.Errorf("%s: Run returned no error", name)
		}
		if _, err := os.Stat(marker); err == nil {
			t.Fatalf("%s: the command ran without a yes", name)
		}
	}
	rec := &recorder{answer: true}
	s := &Shell{Dir: dir, Confirm: rec}
	res, err := s.Run(context.Background(), cmd)
	if err != nil || res.ExitCode != 0 {
		t.Fatalf("confirmed run: %+v, %v", res, err)
	}
	if _, err := os.Stat(marker); err != nil {
		t.Fatal("the confirmed command did not run")
	}
	if len(rec.questions) != 1 || !strings.Contains(rec.questions[0], cmd) {
		t.Fatalf("the question must show the exact command: %q", rec.questions)
	}
}

func TestShellOutputExitCodeAndLimit(t *testing.T) {
	s := &Shell{Dir: t.TempDir(), Confirm: &recorder{answer: true}, MaxOutput: 10}
	res, err := s.Run(context.Background(), "printf 0123456789abcdef; echo err >&2; exit 3")
	if err != nil {
		t.Fatal(err)
	}
	if res.ExitCode != 3 || res.Output != "0123456789" || res.Dropped != 10 {
		t.Fatalf("result = %+v", res)
	}
}

func TestShellTimeoutKillsTheProcessGroup(t *testing.T) {
	s := &Shell{Dir: t.TempDir(), Confirm: &recorder{answer: true}, Timeout: 200 * time.Millisecond}
	start := time.Now()
	res, err := s.Run(context.Background(), "sleep 30 | cat; echo never")
	if err != nil {
		t.Fatal(err)
	}
	if !res.TimedOut || strings.Contains(res.Output, "never") {
		t.Fatalf("result = %+v", res)
	}
	if el := time.Since(start); el > 5*time.Second {
		t.Fatalf("timeout took %v", el)
	}
}

func TestShellCancelledContext(t *testing.T) {
	s := &Shell{Dir: t.TempDir(), Confirm: &recorder{answer: true}}
	ctx, cancel := context.WithCancel(context.Background())
	go func() { time.Sleep(100 * time.Millisecond); cancel() }()
	_, err := s.Run(ctx, "sleep 30")
	if !errors.Is(err, context.Canceled) {
		t.Fatalf("err = %v, want context.Canceled", err)
	}
}
