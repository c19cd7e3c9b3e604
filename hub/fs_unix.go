//go:build unix

package hub

import (
	"os"

	"golang.org/x/sys/unix"
)

// freeBytes is the space available to unprivileged users in the filesystem holding dir.
func freeBytes(dir string) (uint64, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return 0, err
	}
	return uint64(st.Bavail) * uint64(st.Bsize), nil
}

// lockFile takes an exclusive advisory lock on f without waiting; it is released when f is closed.
func lockFile(f *os.File) error {
	return unix.Flock(int(f.Fd()), unix.LOCK_EX|unix.LOCK_NB)
}
