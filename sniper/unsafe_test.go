package sniper_test

import "unsafe"

func unsafeBytes(p unsafe.Pointer, n int64) []byte { return unsafe.Slice((*byte)(p), n) }

// alignedBytes is n bytes starting on a 4096-byte boundary (what direct I/O needs).
func alignedBytes(n int) []byte {
	b := make([]byte, n+4096)
	skip := (4096 - int(uintptr(unsafe.Pointer(&b[0]))%4096)) % 4096
	return b[skip : skip+n : skip+n]
}
