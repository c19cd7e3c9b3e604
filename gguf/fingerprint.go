package gguf

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
	"os"
)

// fingerprintSample is how many bytes of tensor data, at the start and at the end of the data
// section, the fingerprint reads.
const fingerprintSample = 1 << 20

// Fingerprint identifies a model file by its contents, cheaply: SHA-256 over the file size, the whole
// header (version, metadata, tensor table: names, shapes, types, offsets) and the first and last MiB
// of tensor data. Hashing every byte of a 20 GB model would take minutes at each start; this reads a
// few MiB and still tells apart files that share a name: another model or quantization changes the
// metadata or the table, and a fine-tune or a re-generated model of the same shape changes the
// weights in the sampled data (the first tensors, usually the token embeddings, and the last). The
// same file under another name or path keeps its fingerprint.
//
// Saved KV state is only valid for the model that produced it, so state stores key it by this.
// The result is "sha256:" and 64 hex digits.
func Fingerprint(path string) (string, error) {
	fh, err := os.Open(path)
	if err != nil {
		return "", fmt.Errorf("fingerprint model: %w", err)
	}
	defer fh.Close()
	st, err := fh.Stat()
	if err != nil {
		return "", fmt.Errorf("fingerprint model %q: %w", path, err)
	}
	f, err := Read(fh, st.Size())
	if err != nil {
		return "", fmt.Errorf("fingerprint model %q: %w", path, err)
	}
	h := sha256.New()
	var size [8]byte
	binary.LittleEndian.PutUint64(size[:], uint64(st.Size()))
	h.Write(size[:])
	dataLen := st.Size() - f.DataOffset
	head := min(dataLen, fingerprintSample)
	tailStart := max(f.DataOffset+head, st.Size()-fingerprintSample)
	for _, part := range []struct{ off, n int64 }{
		{0, f.DataOffset + head},           // header, metadata, tensor table, first data
		{tailStart, st.Size() - tailStart}, // last data (empty when the first part reached the end)
	} {
		if _, err := io.Copy(h, io.NewSectionReader(fh, part.off, part.n)); err != nil {
			return "", fmt.Errorf("fingerprint model %q: read %d bytes at %d: %w", path, part.n, part.off, err)
		}
	}
	return "sha256:" + hex.EncodeToString(h.Sum(nil)), nil
}
