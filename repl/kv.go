package repl

import (
	"fmt"

	"github.com/expertsniper/expertsniper/bytesize"
	"github.com/expertsniper/expertsniper/gguf"
)

// KVShape is what the KV cache size depends on: per attention layer, the K and V widths (heads × head
// size). Layers without attention (the recurrent layers of qwen35moe) have no KV cache.
type KVShape struct {
	AttentionLayers int
	Layers          int
	KWidth          []int64 // per attention layer: n_head_kv * key_length
	VWidth          []int64
}

// ReadKVShape reads the KV cache shape of a GGUF model from its metadata.
func ReadKVShape(path string) (KVShape, error) {
	f, err := gguf.Open(path)
	if err != nil {
		return KVShape{}, err
	}
	return kvShapeOf(f)
}

func kvShapeOf(f *gguf.File) (KVShape, error) {
	arch := f.Architecture()
	layers, ok := f.ArchUint("block_count")
	if !ok || layers == 0 {
		return KVShape{}, fmt.Errorf("kv shape: %s.block_count missing", arch)
	}
	embd, _ := f.ArchUint("embedding_length")
	heads := perLayer(f, arch+".attention.head_count", int(layers))
	headsKV := perLayer(f, arch+".attention.head_count_kv", int(layers))
	if headsKV == nil {
		headsKV = heads // no GQA: as many KV heads as query heads
	}
	if heads == nil || headsKV == nil {
		return KVShape{}, fmt.Errorf("kv shape: %s.attention.head_count missing", arch)
	}
	interval, _ := f.ArchUint("full_attention_interval")
	s := KVShape{Layers: int(layers)}
	for il := 0; il < int(layers); il++ {
		if interval > 1 && (il+1)%int(interval) != 0 {
			continue // a recurrent layer: fixed-size state, no KV cache
		}
		if headsKV[il] == 0 {
			continue
		}
		keyLen, ok := f.ArchUint("attention.key_length")
		if !ok && heads[il] > 0 {
			keyLen = embd / heads[il]
		}
		valLen, ok := f.ArchUint("attention.value_length")
		if !ok && heads[il] > 0 {
			valLen = embd / heads[il]
		}
		s.AttentionLayers++
		s.KWidth = append(s.KWidth, int64(headsKV[il]*keyLen))
		s.VWidth = append(s.VWidth, int64(headsKV[il]*valLen))
	}
	return s, nil
}

// perLayer reads a key that is either one number for all layers or an array with one per layer.
func perLayer(f *gguf.File, key string, layers int) []uint64 {
	if v, ok := f.Uint(key); ok {
		out := make([]uint64, layers)
		for i := range out {
			out[i] = v
		}
		return out
	}
	raw, ok := f.Get(key)
	if !ok {
		return nil
	}
	var vals []uint64
	switch a := raw.(type) {
	case []int32:
		for _, x := range a {
			vals = append(vals, uint64(max(x, 0)))
		}
	case []uint32:
		for _, x := range a {
			vals = append(vals, uint64(x))
		}
	case []int64:
		for _, x := range a {
			vals = append(vals, uint64(max(x, 0)))
		}
	case []uint64:
		vals = a
	default:
		return nil
	}
	if len(vals) != layers {
		return nil
	}
	return vals
}

// Bytes is the KV cache size for a context of nCtx tokens with the given cache types, the way
// llama.cpp sizes it: per attention layer, one K row and one V row per cell.
func (s KVShape) Bytes(nCtx int, typeK, typeV string) (int64, error) {
	tk, err := gguf.ParseType(defaultType(typeK))
	if err != nil {
		return 0, fmt.Errorf("cache type k: %w", err)
	}
	tv, err := gguf.ParseType(defaultType(typeV))
	if err != nil {
		return 0, fmt.Errorf("cache type v: %w", err)
	}
	var total int64
	for i := range s.KWidth {
		if s.KWidth[i]%int64(tk.BlockSize()) != 0 || s.VWidth[i]%int64(tv.BlockSize()) != 0 {
			return 0, fmt.Errorf("KV width %d/%d is not a multiple of the %s/%s block size", s.KWidth[i], s.VWidth[i], tk, tv)
		}
		total += tk.RowSize(s.KWidth[i]) + tv.RowSize(s.VWidth[i])
	}
	return total * int64(nCtx), nil
}

func defaultType(t string) string {
	if t == "" {
		return "f16"
	}
	return t
}

// KVReport describes the KV cache for the status: its size and what the quantized types save against
// f16.
func KVReport(s KVShape, nCtx int, typeK, typeV string) (string, error) {
	size, err := s.Bytes(nCtx, typeK, typeV)
	if err != nil {
		return "", err
	}
	f16, err := s.Bytes(nCtx, "f16", "f16")
	if err != nil {
		return "", err
	}
	msg := fmt.Sprintf("KV cache %s for %d tokens (%s/%s, %d attention layers)", bytesize.FormatTenths(size), nCtx,
		defaultType(typeK), defaultType(typeV), s.AttentionLayers)
	if saved := f16 - size; saved > 0 {
		msg += fmt.Sprintf(", saves %s against f16 (%s)", bytesize.FormatTenths(saved), bytesize.FormatTenths(f16))
	}
	return msg, nil
}
