// Package bytesize formats byte counts for people, in binary units (KiB, MiB, ...), the one way
// every command prints sizes so that the same number reads the same in inspect, pull and the REPL.
package bytesize

import "fmt"

const unit = 1024

var units = []string{"KiB", "MiB", "GiB", "TiB", "PiB"}

// Format prints n with three significant digits: "512 B", "1.50 KiB", "18.3 GiB", "120 GiB".
// Negative counts (differences) keep their sign.
func Format(n int64) string {
	if n < unit && n > -unit {
		return fmt.Sprintf("%d B", n)
	}
	f := float64(n)
	for _, u := range units {
		f /= unit
		if f < unit && f > -unit || u == units[len(units)-1] {
			switch {
			case f >= 100 || f <= -100:
				return fmt.Sprintf("%.0f %s", f, u)
			case f >= 10 || f <= -10:
				return fmt.Sprintf("%.1f %s", f, u)
			}
			return fmt.Sprintf("%.2f %s", f, u)
		}
	}
	return fmt.Sprintf("%d B", n) // unreachable: the last unit always returns
}

// FormatTenths prints n with one decimal in the largest unit that keeps it at least 1: "8.0 MiB",
// "1023.9 KiB". Status lines use it, where a fixed width matters more than precision.
func FormatTenths(n int64) string {
	if n < unit {
		return fmt.Sprintf("%d B", n)
	}
	div, exp := int64(unit), 0
	for m := n / unit; m >= unit && exp < len(units)-1; m /= unit {
		div *= unit
		exp++
	}
	return fmt.Sprintf("%.1f %s", float64(n)/float64(div), units[exp])
}
