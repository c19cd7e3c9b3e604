// Package diskspace answers whether a file of a given size fits where it is about to be written, so
// that commands refuse a write that cannot finish before they start it.
package diskspace

import (
	"fmt"

	"github.com/expertsniper/expertsniper/bytesize"
)

// Check returns an error naming what and both sizes if fewer than need bytes are free in the
// filesystem holding dir. Where free space cannot be measured, it returns nil: the write itself will
// then report a full disk.
func Check(dir string, need int64, what string) error {
	free, err := Free(dir)
	if err != nil || need <= 0 || uint64(need) <= free {
		return nil
	}
	return fmt.Errorf("%s needs %s but %s has only %s free", what, bytesize.FormatTenths(need), dir, bytesize.FormatTenths(int64(free)))
}
