//go:build !linux

package bench

// evictFile does nothing where memory caps are unavailable anyway (memcap is Linux-only).
func evictFile(string) error { return nil }
