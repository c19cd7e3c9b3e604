package plan

import (
	"bufio"
	"fmt"
	"strconv"
	"strings"
)

// parseMeminfo returns MemAvailable from the text of /proc/meminfo, in bytes.
func parseMeminfo(text string) (int64, error) {
	sc := bufio.NewScanner(strings.NewReader(text))
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) >= 2 && fields[0] == "MemAvailable:" {
			kb, err := strconv.ParseInt(fields[1], 10, 64)
			if err != nil {
				return 0, fmt.Errorf("parse /proc/meminfo MemAvailable %q: %w", fields[1], err)
			}
			return kb << 10, nil
		}
	}
	return 0, fmt.Errorf("/proc/meminfo has no MemAvailable line (kernel older than 3.14?)")
}

// parseVMStat returns what macOS could give a new process without swapping, from the output of
// vm_stat: free, inactive, speculative and purgeable pages (file cache and memory apps no longer
// use are reclaimed on demand; wired, active and compressed memory is not).
func parseVMStat(text string) (int64, error) {
	sc := bufio.NewScanner(strings.NewReader(text))
	pageSize := int64(0)
	pages := map[string]int64{}
	for sc.Scan() {
		line := sc.Text()
		if strings.HasPrefix(line, "Mach Virtual Memory Statistics") {
			// "Mach Virtual Memory Statistics: (page size of 16384 bytes)"
			if i := strings.Index(line, "page size of "); i >= 0 {
				f := strings.Fields(line[i+len("page size of "):])
				if len(f) > 0 {
					pageSize, _ = strconv.ParseInt(f[0], 10, 64)
				}
			}
			continue
		}
		name, val, ok := strings.Cut(line, ":")
		if !ok {
			continue
		}
		n, err := strconv.ParseInt(strings.TrimSuffix(strings.TrimSpace(val), "."), 10, 64)
		if err == nil {
			pages[strings.TrimSpace(name)] = n
		}
	}
	if pageSize <= 0 {
		return 0, fmt.Errorf("vm_stat: no page size in the header")
	}
	free, ok := pages["Pages free"]
	if !ok {
		return 0, fmt.Errorf("vm_stat: no \"Pages free\" line")
	}
	total := free + pages["Pages inactive"] + pages["Pages speculative"] + pages["Pages purgeable"]
	return total * pageSize, nil
}
