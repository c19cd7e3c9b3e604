package plan

import (
	"context"
	"fmt"
	"os/exec"
	"time"

	"golang.org/x/sys/unix"
)

// AvailableRAM is what macOS can give a new process without swapping: free, inactive, speculative
// and purgeable pages from vm_stat; if vm_stat cannot run, 70% of hw.memsize.
func AvailableRAM() (int64, string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "vm_stat").Output()
	if err == nil {
		if n, perr := parseVMStat(string(out)); perr == nil {
			return n, "vm_stat free+inactive+speculative+purgeable", nil
		}
	}
	total, serr := unix.SysctlUint64("hw.memsize")
	if serr != nil {
		return 0, "", fmt.Errorf("read available memory: vm_stat: %v; sysctl hw.memsize: %w", err, serr)
	}
	return int64(total) * 7 / 10, "70% of hw.memsize", nil
}
