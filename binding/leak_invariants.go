//go:build invariants

package binding

// leakReport panics under the invariants tag, so tests catch every unclosed handle.
func leakReport(msg string) { panic(msg) }
