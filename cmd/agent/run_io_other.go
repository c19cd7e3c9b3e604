//go:build !linux

package main

// ioReadBytes is not available on this platform.
func ioReadBytes() int64 { return -1 }
