package sniper

import (
	"bytes"
	"context"
	"errors"
	"os"
	"path/filepath"
	"testing"
)

// TestPoolFallsBackWhereAIOIsRefused: on a kernel without AIO (io_setup fails: ENOSYS, or EAGAIN
// once aio-max-nr is reached) the pool reads with its goroutines instead, and stops asking; a
// closed file's batches fail with ErrClosed.
func TestPoolFallsBackWhereAIOIsRefused(t *testing.T) {
	data := bytes.Repeat([]byte("expertsniper"), 4096)
	path := filepath.Join(t.TempDir(), "f.bin")
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
	f, err := openDirect(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	d, ok := f.(*directFile)
	if !ok {
		t.Fatalf("%s: no direct I/O here (%T); this test needs a directory with O_DIRECT", path, f)
	}
	d.aio.broken = true // as after a failed io_setup
	p := NewPool(f, 4)
	reqs := []ReadRequest{{Offset: 0, Dst: alignedBuffer(8192, pageSize)}, {Offset: 16384, Dst: alignedBuffer(4096, pageSize)}}
	if err := p.Read(context.Background(), reqs); err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(reqs[0].Dst, data[:8192]) || !bytes.Equal(reqs[1].Dst, data[16384:20480]) {
		t.Fatal("wrong bytes through the fallback")
	}
	if !p.noBatch.Load() {
		t.Fatal("the pool did not remember that batches are refused")
	}

	d.aio.broken = false
	d.aio.close()
	err = d.ReadBatch(context.Background(), []VectorRead{{Bufs: [][]byte{alignedBuffer(4096, pageSize)}}}, 4, nil)
	if !errors.Is(err, ErrClosed) {
		t.Fatalf("batch on a closed file: %v", err)
	}
}
