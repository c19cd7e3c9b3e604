//go:build !linux

package server

// selfRSS has no cheap portable source outside Linux; the engine's own figure is used instead.
func selfRSS() int64 { return 0 }
