//go:build unix

package diskspace

import "golang.org/x/sys/unix"

// Free is the space available to unprivileged users in the filesystem holding dir.
func Free(dir string) (uint64, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return 0, err
	}
	return uint64(st.Bavail) * uint64(st.Bsize), nil
}
