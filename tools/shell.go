package tools

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os/exec"
	"strings"
	"sync"
	"time"
)

// Shell runs one command line with sh, but only after the user confirms it, with a time limit and a
// bound on the output kept.
type Shell struct {
	// Dir is where the command runs ("" = the current directory).
	Dir string
	// Confirm is asked with the exact command before it runs. Nil means nothing ever runs.
	Confirm Confirmer
	// Timeout kills the command (and everything it started) when reached; 0 = 30 s.
	Timeout time.Duration
	// MaxOutput bounds the combined stdout+stderr kept; the rest is counted, not stored. 0 = 16 KiB.
	MaxOutput int
}

// ShellResult is what a command did.
type ShellResult struct {
	Command  string
	Output   string // combined stdout and stderr, at most MaxOutput bytes
	Dropped  int64  // bytes of output beyond MaxOutput
	ExitCode int    // -1 when it was killed
	TimedOut bool
	Elapsed  time.Duration
}

// ErrEmptyCommand is returned for a command line with nothing to run.
var ErrEmptyCommand = errors.New("empty command")

// Run asks for confirmation and then runs command. A declined command returns ErrDeclined and never
// starts. A command that runs and fails is not an error: its exit code and output are in the result.
func (s *Shell) Run(ctx context.Context, command string) (ShellResult, error) {
	command = strings.TrimSpace(command)
	res := ShellResult{Command: command, ExitCode: -1}
	if command == "" {
		return res, ErrEmptyCommand
	}
	if err := confirm(ctx, s.Confirm, "Run "+quoteForQuestion(command)+"?"); err != nil {
		return res, fmt.Errorf("run %q: %w", command, err)
	}
	timeout := s.Timeout
	if timeout <= 0 {
		timeout = 30 * time.Second
	}
	limit := s.MaxOutput
	if limit <= 0 {
		limit = 16 << 10
	}
	runCtx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()

	cmd := exec.CommandContext(runCtx, "/bin/sh", "-c", command)
	cmd.Dir = s.Dir
	out := &limitedBuffer{limit: limit}
	cmd.Stdout, cmd.Stderr = out, out
	cmd.Stdin = nil // never let a command read the REPL's terminal
	setProcessGroup(cmd)
	// Kill the whole process group: `sleep 100 | cat` must not outlive the timeout.
	cmd.Cancel = func() error { return killProcessGroup(cmd) }
	cmd.WaitDelay = 2 * time.Second

	start := time.Now()
	err := cmd.Run()
	res.Elapsed = time.Since(start)
	res.Output, res.Dropped = out.String(), out.dropped
	if runCtx.Err() == context.DeadlineExceeded && ctx.Err() == nil {
		res.TimedOut = true
		return res, nil
	}
	if ctx.Err() != nil {
		return res, fmt.Errorf("run %q: %w", command, ctx.Err())
	}
	var exitErr *exec.ExitError
	switch {
	case err == nil:
		res.ExitCode = 0
	case errors.As(err, &exitErr):
		res.ExitCode = exitErr.ExitCode()
	default:
		return res, fmt.Errorf("run %q: %w", command, err)
	}
	return res, nil
}

// limitedBuffer keeps the first limit bytes written and counts the rest.
type limitedBuffer struct {
	mu      sync.Mutex
	buf     bytes.Buffer
	limit   int
	dropped int64
}

func (b *limitedBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	room := b.limit - b.buf.Len()
	if room >= len(p) {
		b.buf.Write(p)
		return len(p), nil
	}
	if room > 0 {
		b.buf.Write(p[:room])
	}
	b.dropped += int64(len(p) - max(room, 0))
	return len(p), nil
}

func (b *limitedBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
