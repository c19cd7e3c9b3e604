package bench

import (
	"bufio"
	"os"
	"runtime"
	"strconv"
	"strings"
)

// Machine describes where a bench ran, for the report.
type Machine struct {
	OS     string `json:"os"`
	Arch   string `json:"arch"`
	CPU    string `json:"cpu"`
	Cores  int    `json:"cores"`
	RAM    int64  `json:"ram_bytes"`
	Kernel string `json:"kernel,omitempty"`
}

// String is a one-line description, e.g. "linux/amd64, AMD EPYC (2 cores), 23.4 GiB RAM, kernel 6.1".
func (m Machine) String() string {
	var b strings.Builder
	b.WriteString(m.OS + "/" + m.Arch)
	if m.CPU != "" {
		b.WriteString(", " + m.CPU)
	}
	b.WriteString(" (" + strconv.Itoa(m.Cores) + " cores)")
	if m.RAM > 0 {
		b.WriteString(", " + FormatSize(m.RAM) + " RAM")
	}
	if m.Kernel != "" {
		b.WriteString(", kernel " + m.Kernel)
	}
	return b.String()
}

// ThisMachine reads what it can about the current machine; fields it cannot read stay empty.
func ThisMachine() Machine {
	m := Machine{OS: runtime.GOOS, Arch: runtime.GOARCH, Cores: runtime.NumCPU()}
	if f, err := os.Open("/proc/cpuinfo"); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			if k, v, ok := strings.Cut(sc.Text(), ":"); ok && strings.TrimSpace(k) == "model name" {
				m.CPU = strings.TrimSpace(v)
				break
			}
		}
		f.Close()
	}
	if data, err := os.ReadFile("/proc/meminfo"); err == nil {
		for _, line := range strings.Split(string(data), "\n") {
			if v, ok := strings.CutPrefix(line, "MemTotal:"); ok {
				fields := strings.Fields(v)
				if len(fields) > 0 {
					if kib, err := strconv.ParseInt(fields[0], 10, 64); err == nil {
						m.RAM = kib * 1024
					}
				}
			}
		}
	}
	if data, err := os.ReadFile("/proc/sys/kernel/osrelease"); err == nil {
		m.Kernel = strings.TrimSpace(string(data))
	}
	return m
}
