//go:build !linux

package sniper

// movePages is Linux only (mremap); elsewhere evicted pages are released and new ones faulted.
func movePages(src, dst []byte) error { return errMoveUnsupported }

func canMovePages() bool { return false }

func maxMovedRanges() int { return 0 }
