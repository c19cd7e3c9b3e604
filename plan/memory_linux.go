package plan

import (
	"fmt"
	"os"
)

// AvailableRAM is what the system can give a new process without swapping (MemAvailable).
func AvailableRAM() (int64, string, error) {
	b, err := os.ReadFile("/proc/meminfo")
	if err != nil {
		return 0, "", fmt.Errorf("read available memory: %w", err)
	}
	n, err := parseMeminfo(string(b))
	return n, "MemAvailable", err
}
