package sniper

import (
	"fmt"
	"os"
	"unsafe"
)

// sysPageSize is the granularity madvise works in (16 KiB on Apple Silicon).
var sysPageSize = int64(os.Getpagesize())

// pageSize is the granularity of eviction and of the aligned supersets the sniper reads. 4096 is the
// page size on x86-64 Linux; on Apple Silicon pages are 16 KiB, where evicting the interior of a
// 4 KiB-aligned range simply keeps a little more resident (madvise needs page alignment: see evict).
const pageSize = 4096

// region is memory the sniper owns for one streamed tensor: an anonymous, private, unreserved
// mapping, so untouched parts cost nothing and a model whose experts exceed RAM+swap still maps.
// data is placed at a chosen offset within a page: for a tensor whose memory mirrors the file, its
// address ≡ the tensor's file offset (mod pageSize), so a page-aligned read of the file lands exactly
// where those bytes belong; a synthesized tensor is placed so that its parts' bytes can be read
// straight in as well (see Sniper.Bind).
type region struct {
	mapping []byte
	// data is the tensor's first byte inside mapping (what tensor->data is pointed at).
	data unsafe.Pointer
	size int64
	// fileBase is the file offset that corresponds to mapping[0] (mirrored tensors only).
	fileBase int64
}

// newRegion maps size bytes whose first byte's address ≡ lead (mod pageSize).
func newRegion(size, lead int64) (*region, error) {
	lead = (lead%pageSize + pageSize) % pageSize
	n := alignUp(lead+size, pageSize)
	m, err := mapAnon(int(n))
	if err != nil {
		return nil, fmt.Errorf("map %d bytes for streamed tensor: %w", n, err)
	}
	return &region{mapping: m, data: unsafe.Pointer(&m[lead]), size: size}, nil
}

// newMirrorRegion maps size bytes that mirror the file from fileOffset on.
func newMirrorRegion(size, fileOffset int64) (*region, error) {
	r, err := newRegion(size, fileOffset)
	if err != nil {
		return nil, err
	}
	r.fileBase = fileOffset - fileOffset%pageSize
	return r, nil
}

// slice returns the tensor's bytes [off, off+n).
func (r *region) slice(off, n int64) []byte {
	return unsafe.Slice((*byte)(unsafe.Add(r.data, off)), n)
}

// fileSlice returns the mapping's bytes that mirror file bytes [off, off+n) (mirrored tensors only);
// ok is false if the range is not inside the mapping.
func (r *region) fileSlice(off, n int64) (b []byte, ok bool) {
	start := off - r.fileBase
	if start < 0 || start+n > int64(len(r.mapping)) {
		return nil, false
	}
	return r.mapping[start : start+n], true
}

// evictRange drops the pages entirely inside the tensor's bytes [off, off+n) from memory. Pages at the
// edges shared with neighbouring experts stay (they may be in use); what stays is at most two pages.
func (r *region) evictRange(off, n int64) error {
	base := int64(uintptr(r.data) - uintptr(unsafe.Pointer(&r.mapping[0])))
	start := alignUp(base+off, sysPageSize)
	end := alignDown(base+off+n, sysPageSize)
	if end <= start {
		return nil
	}
	return evictPages(r.mapping[start:end])
}

func (r *region) close() error {
	if r.mapping == nil {
		return nil
	}
	err := unmapAnon(r.mapping)
	r.mapping, r.data = nil, nil
	return err
}

func alignUp(x, a int64) int64   { return (x + a - 1) / a * a }
func alignDown(x, a int64) int64 { return x / a * a }

// alignedBuffer returns an n-byte slice whose address is a multiple of align, for direct reads.
func alignedBuffer(n, align int) []byte {
	b := make([]byte, n+align)
	skip := 0
	if r := int(uintptr(unsafe.Pointer(&b[0])) % uintptr(align)); r != 0 {
		skip = align - r
	}
	return b[skip : skip+n : skip+n]
}
