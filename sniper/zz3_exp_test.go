package sniper

import (
	"os"
	"syscall"
	"testing"
	"time"
	"unsafe"
)

func sum64(b []byte) (s uint64) {
	u := unsafe.Slice((*uint64)(unsafe.Pointer(&b[0])), len(b)/8)
	for _, v := range u {
		s += v
	}
	return
}

func TestZZRead(t *testing.T) {
	path := os.Getenv("EXPERTSNIPER_BENCH_MODEL")
	if path == "" {
		t.Skip()
	}
	fd, _ := syscall.Open(path, syscall.O_RDONLY|syscall.O_DIRECT, 0)
	const n = 576 << 10
	const count = 256
	a, _ := mapAnon(n * count)
	b, _ := mapAnon(n * count)
	c, _ := mapAnon(n * count)
	for i := range a {
		a[i] = 1
	}
	off := func(i int) int64 { return int64(i) * 7919 * 4096 * 13 % (18 << 30) / 4096 * 4096 }
	var s1, s2 time.Duration
	var sink uint64
	for i := 0; i < count; i++ {
		syscall.Pread(fd, a[i*n:(i+1)*n], off(i))
		s := time.Now()
		sink += sum64(a[i*n : (i+1)*n])
		s1 += time.Since(s)
		s = time.Now()
		sink += sum64(a[i*n : (i+1)*n])
		s2 += time.Since(s)
	}
	t.Logf("resident: first sum %v second %v", s1/count, s2/count)
	s1, s2 = 0, 0
	for i := 0; i < count; i++ {
		movePages(a[i*n:(i+1)*n], b[i*n:(i+1)*n])
		syscall.Pread(fd, b[i*n:(i+1)*n], off(i+count))
		s := time.Now()
		sink += sum64(b[i*n : (i+1)*n])
		s1 += time.Since(s)
		s = time.Now()
		sink += sum64(b[i*n : (i+1)*n])
		s2 += time.Since(s)
	}
	t.Logf("moved: first sum %v second %v", s1/count, s2/count)
	s1, s2 = 0, 0
	for i := 0; i < count; i++ {
		syscall.Pread(fd, c[i*n:(i+1)*n], off(i+2*count))
		s := time.Now()
		sink += sum64(c[i*n : (i+1)*n])
		s1 += time.Since(s)
		s = time.Now()
		sink += sum64(c[i*n : (i+1)*n])
		s2 += time.Since(s)
	}
	t.Logf("fresh: first sum %v second %v", s1/count, s2/count)
	t.Log(sink)
}
