package sniper

import "golang.org/x/sys/unix"

// evictPages gives the pages of b back to the system: MADV_FREE_REUSABLE makes them leave the
// process's footprint at once (MADV_DONTNEED on macOS only marks them lazily).
func evictPages(b []byte) error {
	if err := unix.Madvise(b, unix.MADV_FREE_REUSABLE); err != nil {
		return unix.Madvise(b, unix.MADV_DONTNEED)
	}
	return nil
}

// CurrentRSS on macOS is the peak resident size (getrusage); the current size needs Mach calls.
func CurrentRSS() int64 {
	var ru unix.Rusage
	if err := unix.Getrusage(unix.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return ru.Maxrss // bytes on macOS
}

// adviseHugePages does nothing on macOS (no transparent huge pages to ask for).
func adviseHugePages([]byte) {}

// populatePages does nothing on macOS: pages are faulted on first use.
func populatePages([]byte) {}
