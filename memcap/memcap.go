// Package memcap runs a child process under a memory cap that includes the page cache, so that a model
// file larger than the cap really does not fit in memory even on a machine with plenty of RAM.
//
// On Linux the cap is a memory cgroup made as a child of the calling process's own cgroup (v1:
// memory.limit_in_bytes, v2: memory.max; whichever the machine has, checked at run time). The child
// joins the cgroup before it executes its program, so everything it allocates and every page it pulls
// into the page cache is charged to it. After the child exits, the cgroup's peak usage and OOM kills
// are read back and the cgroup is removed, also on error and on cancellation. Other platforms get a
// clear ErrUnsupported.
package memcap

import (
	"errors"
	"fmt"
	"io"
	"time"
)

// ErrUnsupported is returned where memory cgroups are not available (non-Linux systems, or a Linux
// system without a writable memory cgroup).
var ErrUnsupported = errors.New("memory caps are not supported on this platform")

// NoLimit runs the child in its own cgroup without a cap, so that its peak usage is still measured.
const NoLimit int64 = -1

// Spec describes the child process to run.
type Spec struct {
	// Path of the program, and its arguments (Args[0] is the program name, as in exec.Cmd).
	Path string
	Args []string
	// Env of the child; nil inherits the caller's environment.
	Env []string
	// Dir is the working directory ("" = the caller's).
	Dir    string
	Stdin  io.Reader
	Stdout io.Writer
	Stderr io.Writer
	// Limit caps memory plus page cache (and swap) in bytes; NoLimit (or 0) means uncapped.
	Limit int64
}

// Result is what happened to the child and how much memory it used.
type Result struct {
	// CgroupVersion is 1 or 2.
	CgroupVersion int
	// Limit is the cap that applied (NoLimit when uncapped).
	Limit int64
	// ExitCode is the child's exit status, or -1 when a signal ended it.
	ExitCode int
	// Signal names the signal that ended the child ("" if it exited).
	Signal string
	// OOMKills counts processes of the cgroup the kernel killed for running out of memory.
	OOMKills int64
	// PeakUsage is the cgroup's high-water mark: resident memory plus page cache charged to it.
	PeakUsage int64
	// PeakBreakdown is the cgroup's memory.stat sampled (every 5 ms) when its usage was highest,
	// headed by that usage: anon, file, file_mapped… say what the peak was made of. Linux only.
	PeakBreakdown string
	// PeakRSS is the child's own maximum resident set size (getrusage), without page cache.
	PeakRSS int64
	// ReadBytes is what the child read from block devices (getrusage ru_inblock × 512): page-cache
	// misses, mmap faults and direct I/O alike, but not reads served from the page cache.
	ReadBytes int64
	// Wall is the child's run time.
	Wall time.Duration
}

// OOMKilled reports whether the kernel killed the child for exceeding its cap.
func (r Result) OOMKilled() bool { return r.OOMKills > 0 && r.Signal != "" }

// Err describes an unsuccessful child (nil when it exited with status 0).
func (r Result) Err() error {
	switch {
	case r.OOMKilled():
		return fmt.Errorf("killed by the kernel for running out of memory under a cap of %s", FormatBytes(r.Limit))
	case r.Signal != "":
		return fmt.Errorf("killed by signal %s", r.Signal)
	case r.ExitCode != 0:
		return fmt.Errorf("exit status %d", r.ExitCode)
	}
	return nil
}

// FormatBytes prints a byte count in binary units (e.g. "4.00 GiB"), or "none" for NoLimit.
func FormatBytes(n int64) string {
	if n < 0 {
		return "none"
	}
	const unit = 1024
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit && exp < 4; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.2f %ciB", float64(n)/float64(div), "KMGTP"[exp])
}
