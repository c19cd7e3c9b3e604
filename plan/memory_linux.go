package plan

import (
	"bufio"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// AvailableRAM is what the system can give a new process without swapping: MemAvailable, or less
// when this process runs in a memory cgroup (a container, or a cap like the benchmark's) whose limit
// leaves less room.
func AvailableRAM() (int64, string, error) {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0, "", fmt.Errorf("read available memory: %w", err)
	}
	n, err := parseMeminfo(string(b))
	if err != nil {
		return 0, "", err
	}
	if self, err := os.ReadFile("/proc/self/cgroup"); err == nil {
		if room, where, ok := cgroupHeadroom("/sys/fs/cgroup", string(self)); ok && room < n {
			return max(room, 0), "memory cgroup " + where + " limit", nil
		}
	}
	return n, "MemAvailable", nil
}

// cgroupHeadroom returns how much more memory the cgroups of this process (and their ancestors, whose
// limits apply too) allow: the smallest limit − usage + reclaimable file cache. root is where the
// cgroup filesystems are mounted; self is the text of /proc/self/cgroup. ok is false when no limit is set.
func cgroupHeadroom(root, self string) (room int64, where string, ok bool) {
	sc := bufio.NewScanner(strings.NewReader(self))
	for sc.Scan() {
		// "4:memory:/path" (v1) or "0::/path" (v2)
		parts := strings.SplitN(sc.Text(), ":", 3)
		if len(parts) != 3 {
			continue
		}
		var dir, limitFile, usageFile, inactiveKey string
		switch {
		case parts[0] == "0" && parts[1] == "":
			dir, limitFile, usageFile, inactiveKey = filepath.Join(root, parts[2]), "memory.max", "memory.current", "inactive_file"
			if _, err := os.Stat(filepath.Join(root, "cgroup.controllers")); err != nil {
				continue // a v2 line on a v1 (hybrid) system: no memory controller there
			}
		case strings.Contains(","+parts[1]+",", ",memory,"):
			dir, limitFile, usageFile, inactiveKey = filepath.Join(root, "memory", parts[2]), "memory.limit_in_bytes", "memory.usage_in_bytes", "total_inactive_file"
		default:
			continue
		}
		base := root // the top of this hierarchy: ancestors are walked up to it
		if parts[1] != "" {
			base = filepath.Join(root, "memory")
		}
		for d := dir; ; d = filepath.Dir(d) {
			limit, err1 := readCgroupInt(filepath.Join(d, limitFile))
			usage, err2 := readCgroupInt(filepath.Join(d, usageFile))
			// Unlimited is "max" (v2) or a huge number (v1: close to 2^63).
			if err1 == nil && err2 == nil && limit > 0 && limit < 1<<60 {
				r := limit - usage + cgroupStat(filepath.Join(d, "memory.stat"), inactiveKey)
				if !ok || r < room {
					rel, _ := filepath.Rel(base, d)
					room, where, ok = r, "/"+strings.TrimPrefix(filepath.ToSlash(rel), "."), true
				}
			}
			if d == base || len(d) <= len(base) {
				break
			}
		}
	}
	return room, where, ok
}

func readCgroupInt(path string) (int64, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0, err
	}
	s := strings.TrimSpace(string(b))
	if s == "max" {
		return -1, nil
	}
	return strconv.ParseInt(s, 10, 64)
}

// cgroupStat reads one counter of a memory.stat file (0 if absent).
func cgroupStat(path, key string) int64 {
	b, err := os.ReadFile(path)
	if err != nil {
		return 0
	}
	sc := bufio.NewScanner(strings.NewReader(string(b)))
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) == 2 && f[0] == key {
			n, _ := strconv.ParseInt(f[1], 10, 64)
			return n
		}
	}
	return 0
}
