package memcap

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync/atomic"
	"syscall"
	"time"
)

// hierarchy is where the calling process's memory cgroup lives.
type hierarchy struct {
	version int
	dir     string // absolute path of our own memory cgroup
}

// Files differ between the two cgroup versions; everything else is shared.
func (h hierarchy) limitFile() string {
	if h.version == 1 {
		return "memory.limit_in_bytes"
	}
	return "memory.max"
}

func (h hierarchy) peakFile() string {
	if h.version == 1 {
		return "memory.max_usage_in_bytes"
	}
	return "memory.peak"
}

// Supported reports whether Run can cap memory here (nil) or why not.
func Supported() error {
	_, err := findHierarchy()
	return err
}

// findHierarchy locates our own memory cgroup: v1 if a memory controller hierarchy is mounted (that
// is what these machines have), else v2 if the unified hierarchy offers the memory controller.
func findHierarchy() (hierarchy, error) {
	paths, err := readProcCgroup("/proc/self/cgroup")
	if err != nil {
		return hierarchy{}, err
	}
	mounts, err := readCgroupMounts("/proc/self/mountinfo")
	if err != nil {
		return hierarchy{}, err
	}
	if own, ok := paths["memory"]; ok {
		for _, m := range mounts {
			if m.fstype == "cgroup" && m.hasOption("memory") {
				dir := filepath.Join(m.point, relativeTo(own, m.root))
				if isDir(dir) {
					return hierarchy{version: 1, dir: dir}, nil
				}
			}
		}
	}
	if own, ok := paths[""]; ok {
		for _, m := range mounts {
			if m.fstype != "cgroup2" {
				continue
			}
			dir := filepath.Join(m.point, relativeTo(own, m.root))
			ctrl, err := os.ReadFile(filepath.Join(dir, "cgroup.controllers"))
			if err == nil && hasField(string(ctrl), "memory") {
				return hierarchy{version: 2, dir: dir}, nil
			}
		}
	}
	return hierarchy{}, fmt.Errorf("%w: no memory cgroup controller found for this process (/proc/self/cgroup, /proc/self/mountinfo)", ErrUnsupported)
}

// readProcCgroup maps controller name → cgroup path ("" for the v2 unified line "0::/path").
func readProcCgroup(path string) (map[string]string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	out := map[string]string{}
	for _, line := range strings.Split(strings.TrimSpace(string(data)), "\n") {
		parts := strings.SplitN(line, ":", 3)
		if len(parts) != 3 {
			continue
		}
		if parts[1] == "" {
			out[""] = parts[2]
			continue
		}
		for _, c := range strings.Split(parts[1], ",") {
			out[c] = parts[2]
		}
	}
	return out, nil
}

type cgroupMount struct {
	root, point, fstype string
	options             []string
}

func (m cgroupMount) hasOption(o string) bool {
	for _, x := range m.options {
		if x == o {
			return true
		}
	}
	return false
}

// readCgroupMounts lists cgroup (v1) and cgroup2 mounts. mountinfo lines are
// "id parent major:minor root mountpoint options [optional...] - fstype source superoptions".
func readCgroupMounts(path string) ([]cgroupMount, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("open %s: %w", path, err)
	}
	defer f.Close()
	var out []cgroupMount
	sc := bufio.NewScanner(f)
	sc.Buffer(make([]byte, 64<<10), 1<<20)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		sep := -1
		for i, x := range fields {
			if x == "-" {
				sep = i
				break
			}
		}
		if sep < 5 || len(fields) < sep+4 {
			continue
		}
		fstype := fields[sep+1]
		if fstype != "cgroup" && fstype != "cgroup2" {
			continue
		}
		out = append(out, cgroupMount{root: unescapeMount(fields[3]), point: unescapeMount(fields[4]),
			fstype: fstype, options: strings.Split(fields[sep+3], ",")})
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("read %s: %w", path, err)
	}
	return out, nil
}

// unescapeMount undoes mountinfo's octal escapes (\040 for a space and so on).
func unescapeMount(s string) string {
	if !strings.Contains(s, `\`) {
		return s
	}
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		if s[i] == '\\' && i+3 < len(s) {
			if v, err := strconv.ParseUint(s[i+1:i+4], 8, 8); err == nil {
				b.WriteByte(byte(v))
				i += 3
				continue
			}
		}
		b.WriteByte(s[i])
	}
	return b.String()
}

// relativeTo strips a mount's root from a cgroup path (containers often mount their own subtree).
func relativeTo(path, root string) string {
	if root == "/" || root == "" {
		return path
	}
	if rel, ok := strings.CutPrefix(path, root); ok {
		return rel
	}
	return path
}

func isDir(p string) bool {
	st, err := os.Stat(p)
	return err == nil && st.IsDir()
}

func hasField(s, f string) bool {
	for _, x := range strings.Fields(s) {
		if x == f {
			return true
		}
	}
	return false
}

var sequence atomic.Int64

// Run starts the child described by spec inside a fresh memory cgroup capped at spec.Limit, waits for
// it and reports its exit and memory use. A child that fails (non-zero exit, OOM kill) is not an error
// of Run: see Result.Err. Cancelling ctx kills the child and everything it started.
func Run(ctx context.Context, spec Spec) (Result, error) {
	if spec.Path == "" {
		return Result{}, errors.New("memcap: no program to run")
	}
	// The wrapper shell would report a missing program only as exit status 127; check it here.
	if _, err := exec.LookPath(spec.Path); err != nil {
		return Result{}, fmt.Errorf("run %s under a memory cap: %w", spec.Path, err)
	}
	h, err := findHierarchy()
	if err != nil {
		return Result{}, err
	}
	limit := spec.Limit
	if limit == 0 {
		limit = NoLimit
	}
	res := Result{CgroupVersion: h.version, Limit: limit}

	dir := filepath.Join(h.dir, fmt.Sprintf("expertsniper-memcap-%d-%d", os.Getpid(), sequence.Add(1)))
	if err := os.Mkdir(dir, 0o755); err != nil {
		return res, fmt.Errorf("create memory cgroup %s: %w (needs root or a delegated cgroup)", dir, err)
	}
	defer removeCgroup(dir)
	if err := setLimit(h, dir, limit); err != nil {
		return res, err
	}
	procs := filepath.Join(dir, "cgroup.procs")
	// Check now that we can move a process in, so a failure names the file instead of surfacing as the
	// wrapper shell's message.
	if f, err := os.OpenFile(procs, os.O_WRONLY, 0); err != nil {
		return res, fmt.Errorf("open %s for writing: %w", procs, err)
	} else {
		f.Close()
	}

	// A tiny wrapper joins the cgroup and then becomes the target program (exec keeps the pid), so the
	// target is inside before it allocates anything. $0 is the procs file; "$@" the target and its args
	// (the target's argv[0] becomes its path: POSIX sh has no exec -a).
	args := append([]string{"/bin/sh", "-c", `echo $$ > "$0" && exec "$@"`, procs, spec.Path}, spec.Args[min(1, len(spec.Args)):]...)
	cmd := exec.Command(args[0], args[1:]...)
	cmd.Env, cmd.Dir = spec.Env, spec.Dir
	cmd.Stdin, cmd.Stdout, cmd.Stderr = spec.Stdin, spec.Stdout, spec.Stderr

	start := time.Now()
	if err := cmd.Start(); err != nil {
		return res, fmt.Errorf("start %s under a memory cap: %w", spec.Path, err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	var waitErr error
	breakdown := startBreakdownSampler(h, dir)
	select {
	case waitErr = <-done:
	case <-ctx.Done():
		_ = cmd.Process.Kill()
		killAll(procs)
		<-done
		breakdown.stop()
		return res, fmt.Errorf("run %s under a memory cap: %w", spec.Path, ctx.Err())
	}
	res.PeakBreakdown = breakdown.stop()
	res.Wall = time.Since(start)

	if st, ok := cmd.ProcessState.Sys().(syscall.WaitStatus); ok {
		if st.Signaled() {
			res.ExitCode, res.Signal = -1, st.Signal().String()
		} else {
			res.ExitCode = st.ExitStatus()
		}
	}
	if ru, ok := cmd.ProcessState.SysUsage().(*syscall.Rusage); ok {
		res.PeakRSS = ru.Maxrss * 1024 // KiB on Linux
		res.ReadBytes = ru.Inblock * 512
	}
	var exitErr *exec.ExitError
	if waitErr != nil && !errors.As(waitErr, &exitErr) {
		return res, fmt.Errorf("wait for %s: %w", spec.Path, waitErr)
	}
	if res.PeakUsage, err = readInt(filepath.Join(dir, h.peakFile())); err != nil {
		return res, err
	}
	if res.OOMKills, err = readOOMKills(h, dir); err != nil {
		return res, err
	}
	// Other processes the child left behind must not outlive the cgroup.
	killAll(procs)
	return res, nil
}

func setLimit(h hierarchy, dir string, limit int64) error {
	write := func(name, value string) error {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(value), 0); err != nil {
			return fmt.Errorf("write %q to %s: %w", value, p, err)
		}
		return nil
	}
	if h.version == 1 {
		if limit < 0 {
			return nil // a new v1 cgroup is unlimited
		}
		if err := write("memory.limit_in_bytes", strconv.FormatInt(limit, 10)); err != nil {
			return err
		}
		// Swap counts too where the kernel accounts it (memsw must be ≥ the memory limit). Machines
		// without swap accounting lack the file; nothing to cap there.
		if _, err := os.Stat(filepath.Join(dir, "memory.memsw.limit_in_bytes")); err == nil {
			if err := write("memory.memsw.limit_in_bytes", strconv.FormatInt(limit, 10)); err != nil {
				return err
			}
		}
		return nil
	}
	value := "max"
	if limit >= 0 {
		value = strconv.FormatInt(limit, 10)
	}
	if err := write("memory.max", value); err != nil {
		return err
	}
	if limit >= 0 {
		if _, err := os.Stat(filepath.Join(dir, "memory.swap.max")); err == nil {
			if err := write("memory.swap.max", "0"); err != nil {
				return err
			}
		}
	}
	return nil
}

func readInt(path string) (int64, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return 0, fmt.Errorf("read %s: %w", path, err)
	}
	s := strings.TrimSpace(string(data))
	if s == "max" {
		return NoLimit, nil
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return 0, fmt.Errorf("read %s: not a number: %q", path, s)
	}
	return n, nil
}

// readOOMKills reads the "oom_kill N" line of memory.oom_control (v1) or memory.events (v2).
func readOOMKills(h hierarchy, dir string) (int64, error) {
	name := "memory.oom_control"
	if h.version == 2 {
		name = "memory.events"
	}
	p := filepath.Join(dir, name)
	data, err := os.ReadFile(p)
	if err != nil {
		return 0, fmt.Errorf("read %s: %w", p, err)
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(line, "oom_kill "); ok {
			n, err := strconv.ParseInt(strings.TrimSpace(v), 10, 64)
			if err != nil {
				return 0, fmt.Errorf("read %s: bad oom_kill line %q", p, line)
			}
			return n, nil
		}
	}
	return 0, nil // kernels before 4.13 do not count kills
}

// killAll SIGKILLs every process left in the cgroup and waits (briefly) until it is empty.
func killAll(procs string) {
	deadline := time.Now().Add(5 * time.Second)
	for time.Now().Before(deadline) {
		data, err := os.ReadFile(procs)
		if err != nil || len(strings.TrimSpace(string(data))) == 0 {
			return
		}
		for _, f := range strings.Fields(string(data)) {
			if pid, err := strconv.Atoi(f); err == nil && pid > 0 {
				_ = syscall.Kill(pid, syscall.SIGKILL)
			}
		}
		time.Sleep(10 * time.Millisecond)
	}
}

// removeCgroup empties and removes the cgroup. rmdir fails while processes remain, so kill them first;
// page cache still charged to it moves to the parent (v1 after force_empty, v2 by itself).
func removeCgroup(dir string) {
	killAll(filepath.Join(dir, "cgroup.procs"))
	_ = os.WriteFile(filepath.Join(dir, "memory.force_empty"), []byte("0"), 0)
	for i := 0; i < 50; i++ {
		if err := os.Remove(dir); err == nil || errors.Is(err, os.ErrNotExist) {
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// DropCaches writes back dirty pages and drops the page cache (and dentries and inodes), so that the
// next run reads from disk. It needs root.
func DropCaches() error {
	syscall.Sync()
	const p = "/proc/sys/vm/drop_caches"
	if err := os.WriteFile(p, []byte("3\n"), 0); err != nil {
		if errors.Is(err, os.ErrPermission) {
			return fmt.Errorf("drop the page cache: writing 3 to %s needs root: %w", p, err)
		}
		return fmt.Errorf("drop the page cache (write 3 to %s): %w", p, err)
	}
	return nil
}

// breakdownSampler polls the cgroup's usage and keeps its memory.stat from the moment usage was
// highest, so a run over its budget says whether anonymous memory or page cache put it there.
type breakdownSampler struct {
	done chan struct{}
	out  chan string
}

func startBreakdownSampler(h hierarchy, dir string) *breakdownSampler {
	s := &breakdownSampler{done: make(chan struct{}), out: make(chan string, 1)}
	usageFile := "memory.current"
	if h.version == 1 {
		usageFile = "memory.usage_in_bytes"
	}
	go func() {
		var best int64 = -1
		var bestStat string
		t := time.NewTicker(5 * time.Millisecond)
		defer t.Stop()
		for {
			if u, err := readInt(filepath.Join(dir, usageFile)); err == nil && u > best {
				if stat, err := os.ReadFile(filepath.Join(dir, "memory.stat")); err == nil {
					best, bestStat = u, fmt.Sprintf("usage %d\n%s", u, stat)
				}
			}
			select {
			case <-s.done:
				s.out <- bestStat
				return
			case <-t.C:
			}
		}
	}()
	return s
}

func (s *breakdownSampler) stop() string {
	close(s.done)
	return <-s.out
}
