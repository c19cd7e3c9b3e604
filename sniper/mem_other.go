//go:build !linux && !darwin

package sniper

import "errors"

var errNoMmap = errors.New("streaming needs mmap (Linux or macOS)")

func mapAnon(int) ([]byte, error) { return nil, errNoMmap }
func unmapAnon([]byte) error      { return nil }
func evictPages([]byte) error     { return nil }

// CurrentRSS is not known on this platform.
func CurrentRSS() int64 { return 0 }

func adviseHugePages([]byte) {}

func populatePages([]byte) {}
