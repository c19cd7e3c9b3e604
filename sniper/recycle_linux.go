package sniper

import (
	"os"
	"strconv"
	"strings"
	"unsafe"

	"golang.org/x/sys/unix"
)

// movePages moves the physical pages of src under dst (same length, both page aligned) with
// mremap(MREMAP_MAYMOVE|MREMAP_FIXED|MREMAP_DONTUNMAP): dst's old pages are dropped, src stays
// mapped but empty (untouched, it reads zeros and costs nothing). DONTUNMAP matters: without it src
// would become a hole that another thread's mmap could claim before we mapped it again.
func movePages(src, dst []byte) error {
	if len(src) != len(dst) || len(src) == 0 {
		return unix.EINVAL
	}
	_, _, errno := unix.Syscall6(unix.SYS_MREMAP,
		uintptr(unsafe.Pointer(&src[0])), uintptr(len(src)), uintptr(len(dst)),
		unix.MREMAP_MAYMOVE|unix.MREMAP_FIXED|unix.MREMAP_DONTUNMAP, uintptr(unsafe.Pointer(&dst[0])), 0)
	if errno != 0 {
		return errno
	}
	return nil
}

// canMovePages reports whether movePages works here (MREMAP_DONTUNMAP on private anonymous memory
// needs Linux 5.7): it moves one page between two fresh mappings and checks the byte arrived.
func canMovePages() bool {
	ps := int(sysPageSize)
	m, err := mapAnon(2 * ps)
	if err != nil {
		return false
	}
	defer unmapAnon(m)
	m[0] = 42
	if err := movePages(m[:ps], m[ps:]); err != nil {
		return false
	}
	return m[ps] == 42 && m[0] == 0
}

// maxMovedRanges bounds how many distinct ranges may receive moved pages: each becomes its own kernel
// mapping (and splits its neighbour), and a process may hold vm.max_map_count of them; keep well
// under half of it for everything else the process maps.
func maxMovedRanges() int {
	limit := 65530
	if b, err := os.ReadFile("/proc/sys/vm/max_map_count"); err == nil {
		if n, err := strconv.Atoi(strings.TrimSpace(string(b))); err == nil && n > 0 {
			limit = n
		}
	}
	return limit / 3
}
