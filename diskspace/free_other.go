//go:build !unix

package diskspace

import "errors"

// Free is not measured on this platform.
func Free(string) (uint64, error) { return 0, errors.New("free space unknown on this platform") }
