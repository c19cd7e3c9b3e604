//go:build !linux && !darwin

package plan

import "errors"

// AvailableRAM is not known on this platform; pass --ram.
func AvailableRAM() (int64, string, error) {
	return 0, "", errors.New("available memory is unknown on this platform; pass --ram")
}
