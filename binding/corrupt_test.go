package binding

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestCorruptHeaderBytesNeverCrash overwrites bytes across the header, metadata and tensor table of
// a valid model, one position at a time, and loads each copy: every load must either fail with an
// error or give a model that closes; none may crash the process (llama.cpp's reader aborts on some
// malformed input, which is why the pure-Go reader checks first).
func TestCorruptHeaderBytesNeverCrash(t *testing.T) {
	good, err := os.ReadFile(tinyModelPath(t))
	if err != nil {
		t.Fatal(err)
	}
	// The end of the tensor table: the data section starts at the first 32-aligned offset after it;
	// the header region of the tiny model is well under 16 KiB.
	region := min(len(good), 16<<10)
	dir := t.TempDir()
	path := filepath.Join(dir, "corrupt.gguf")
	failed, loaded := 0, 0
	for pos := 4; pos < region; pos += 53 {
		for _, v := range []byte{0xFF, 0x00} {
			b := append([]byte(nil), good...)
			if b[pos] == v {
				continue
			}
			b[pos] = v
			if err := os.WriteFile(path, b, 0o644); err != nil {
				t.Fatal(err)
			}
			m, err := LoadModel(context.Background(), path, WithExtraBufts(false))
			if err != nil {
				failed++
				continue
			}
			loaded++
			if err := m.Close(); err != nil {
				t.Fatal(err)
			}
		}
	}
	t.Logf("%d corrupt copies refused with an error, %d still loadable (a changed token text, a value)", failed, loaded)
	if failed == 0 {
		t.Fatal("no corruption was detected at all")
	}
}

// TestAssertedMetadataIsRefused: values llama.cpp would GGML_ASSERT on (aborting the process) are
// refused with an error, whether they come from the file or from an override.
func TestAssertedMetadataIsRefused(t *testing.T) {
	path := tinyModelPath(t)
	for _, o := range []KVOverride{
		{Key: "qwen3moe.expert_used_count", Type: KVInt, Int: 9},
		{Key: "qwen3moe.expert_used_count", Type: KVInt, Int: 0},
		{Key: "qwen3moe.expert_count", Type: KVInt, Int: 100000},
		{Key: "qwen3moe.attention.head_count", Type: KVInt, Int: 0},
		{Key: "qwen3moe.block_count", Type: KVInt, Int: 4096},
	} {
		m, err := LoadModel(context.Background(), path, WithKVOverride(o))
		if err == nil {
			m.Close()
			t.Fatalf("override %s=%d accepted", o.Key, o.Int)
		}
		if !strings.Contains(err.Error(), strings.TrimPrefix(o.Key, "qwen3moe.")) {
			t.Fatalf("override %s=%d: error %q does not name the key", o.Key, o.Int, err)
		}
	}
	good, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	// Two tokens that read the same as C strings: "!" and "!\x00"-like duplicates.
	dup := bytes.Replace(good, []byte("\x01\x00\x00\x00\x00\x00\x00\x00\"\x01"), []byte("\x01\x00\x00\x00\x00\x00\x00\x00!\x01"), 1)
	if bytes.Equal(dup, good) {
		t.Fatal("test setup: token pattern not found")
	}
	p := filepath.Join(t.TempDir(), "dup.gguf")
	os.WriteFile(p, dup, 0o644)
	if _, err := LoadModel(context.Background(), p); err == nil || !strings.Contains(err.Error(), "both") {
		t.Fatalf("duplicate tokens: %v", err)
	}
}
