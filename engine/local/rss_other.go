//go:build !linux

package local

import "syscall"

// residentBytes on systems without /proc: the peak resident set from getrusage (ru_maxrss is bytes
// on darwin), an upper bound of the current one.
func residentBytes() int64 {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return ru.Maxrss
}
