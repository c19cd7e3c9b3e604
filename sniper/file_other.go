//go:build !linux && !darwin

package sniper

import "os"

// Elsewhere files are read through the page cache.
func openDirect(path string) (File, error) { return openBuffered(path) }

func dropCache(*os.File, int64, int64) {}

func noReadAhead(*os.File) {}
