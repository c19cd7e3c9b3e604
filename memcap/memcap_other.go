//go:build !linux

package memcap

import (
	"context"
	"fmt"
	"runtime"
)

// Supported reports why memory caps are unavailable on this platform.
func Supported() error {
	return fmt.Errorf("%w (%s): memory cgroups are Linux-only", ErrUnsupported, runtime.GOOS)
}

// Run is not available on this platform.
func Run(ctx context.Context, spec Spec) (Result, error) { return Result{}, Supported() }

// DropCaches is not available on this platform.
func DropCaches() error { return Supported() }
