package plan

import (
	"bufio"
	"fmt"
	"strconv"
	"strings"

	"github.com/expertsniper/expertsniper/bytesize"
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

// Headroom is what DefaultBudget leaves to the rest of the system out of the memory available: a
// tenth, at least 256 MiB (the desktop, the page cache of other programs, estimates that fall short).
func Headroom(available int64) int64 { return max(available/10, 256<<20) }

// DefaultBudget is the memory budget a model gets when none is given (--ram): what the machine can
// give without swapping (AvailableRAM: MemAvailable, the memory cgroup's room, or macOS's free and
// reclaimable pages), less Headroom. Every command uses it, so the default means the same in run,
// inspect, serve and the REPL; it covers everything the model takes (weights in RAM, expert cache,
// KV cache, compute buffers).
func DefaultBudget() (int64, string, error) {
	avail, source, err := AvailableRAM()
	if err != nil {
		return 0, "", err
	}
	budget := avail - Headroom(avail)
	if budget <= 0 {
		return 0, "", fmt.Errorf("only %d MiB of memory is available (%s)", avail>>20, source)
	}
	return budget, fmt.Sprintf("%s %s less %s for the system", source, bytesize.Format(avail), bytesize.Format(Headroom(avail))), nil
}
