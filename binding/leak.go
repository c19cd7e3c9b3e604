//go:build !invariants

package binding

// leakReport logs a handle that was never closed. Build with -tags invariants to panic instead.
func leakReport(msg string) {
	if sink := logger.Load(); sink != nil {
		sink.fn(LogWarn, msg)
	}
}
