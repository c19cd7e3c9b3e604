package bench

import (
	"encoding/binary"
	"fmt"
	"math"
	"math/rand/v2"
	"os"

	"github.com/expertsniper/expertsniper/gguf"
	"github.com/expertsniper/expertsniper/modelgen"
)

// TokenEmbeddingName is the tensor CorrelateRouting rewrites.
const TokenEmbeddingName = "token_embd.weight"

// CorrelateRouting turns a generated model with random weights, whose router picks experts almost
// uniformly and independently from one token to the next (the worst case for a cache), into one with
// skewed and temporally correlated routing, the way real models route. It rewrites the token
// embeddings in place: every row e_t becomes e_t + strength·rms(e_t)·c for one shared random
// direction c (unit RMS). Every token's hidden state then carries the same component, so each layer's
// router gives the same few experts a persistent boost (w_e·c is fixed per expert): those experts win
// for most tokens (skew) and consecutive tokens share most of their choices (correlation), while the
// token's own component still varies the rest. strength 0 changes nothing; 1 makes the shared part as
// large as the token's own. Apply it once, to a freshly generated model (it does not mark the file).
func CorrelateRouting(path string, strength float64, seed uint64) error {
	if strength < 0 || math.IsNaN(strength) || math.IsInf(strength, 0) {
		return fmt.Errorf("correlate routing: strength %g must be a finite number ≥ 0", strength)
	}
	f, err := gguf.Open(path)
	if err != nil {
		return fmt.Errorf("correlate routing: %w", err)
	}
	t, ok := f.Tensor(TokenEmbeddingName)
	if !ok {
		return fmt.Errorf("correlate routing: %q has no %s", path, TokenEmbeddingName)
	}
	if len(t.Dims) != 2 {
		return fmt.Errorf("correlate routing: %s of %q has %d dimensions, want 2", TokenEmbeddingName, path, len(t.Dims))
	}
	switch t.Type {
	case gguf.TypeF32, gguf.TypeF16, gguf.TypeQ8_0, gguf.TypeQ4_0:
	default:
		return fmt.Errorf("correlate routing: %s of %q is %s; only F32, F16, Q8_0 and Q4_0 embeddings can be rewritten (apply it before llama-quantize)", TokenEmbeddingName, path, t.Type)
	}
	n, rows := t.Dims[0], t.Dims[1]
	rowBytes := t.Type.RowSize(n)
	base := f.TensorFileOffset(t)

	rng := rand.New(rand.NewPCG(seed, 0xc0441a7e))
	shared := make([]float32, n)
	var ss float64
	for i := range shared {
		v := rng.NormFloat64()
		shared[i] = float32(v)
		ss += v * v
	}
	norm := math.Sqrt(ss / float64(n))
	for i := range shared {
		shared[i] = float32(float64(shared[i]) / norm)
	}

	file, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		return fmt.Errorf("correlate routing: %w", err)
	}
	buf := make([]byte, rowBytes)
	row := make([]float32, n)
	for r := int64(0); r < rows; r++ {
		off := base + r*rowBytes
		if _, err := file.ReadAt(buf, off); err != nil {
			file.Close()
			return fmt.Errorf("correlate routing: read row %d of %s at offset %d of %q: %w", r, TokenEmbeddingName, off, path, err)
		}
		decodeRow(t.Type, buf, row)
		var rs float64
		for _, v := range row {
			rs += float64(v) * float64(v)
		}
		scale := float32(strength * math.Sqrt(rs/float64(n)))
		for i := range row {
			row[i] += scale * shared[i]
		}
		enc, err := modelgen.Encode(t.Type, row)
		if err != nil {
			file.Close()
			return fmt.Errorf("correlate routing: encode row %d: %w", r, err)
		}
		if _, err := file.WriteAt(enc, off); err != nil {
			file.Close()
			return fmt.Errorf("correlate routing: write row %d at offset %d of %q: %w", r, off, path, err)
		}
	}
	if err := file.Sync(); err != nil {
		file.Close()
		return fmt.Errorf("correlate routing: sync %q: %w", path, err)
	}
	return file.Close()
}

// decodeRow converts one row of F32, F16, Q8_0 or Q4_0 bytes to float32 (ggml's reference layouts).
func decodeRow(t gguf.Type, b []byte, out []float32) {
	switch t {
	case gguf.TypeF32:
		for i := range out {
			out[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
		}
	case gguf.TypeF16:
		for i := range out {
			out[i] = halfToFloat(binary.LittleEndian.Uint16(b[2*i:]))
		}
	case gguf.TypeQ8_0: // blocks of 32: fp16 scale, 32 int8
		for blk := 0; blk < len(out)/32; blk++ {
			p := b[blk*34:]
			d := halfToFloat(binary.LittleEndian.Uint16(p))
			for j := 0; j < 32; j++ {
				out[blk*32+j] = d * float32(int8(p[2+j]))
			}
		}
	case gguf.TypeQ4_0: // blocks of 32: fp16 scale, 16 bytes; low nibble j, high nibble j+16, minus 8
		for blk := 0; blk < len(out)/32; blk++ {
			p := b[blk*18:]
			d := halfToFloat(binary.LittleEndian.Uint16(p))
			for j := 0; j < 16; j++ {
				out[blk*32+j] = d * float32(int(p[2+j]&0x0f)-8)
				out[blk*32+j+16] = d * float32(int(p[2+j]>>4)-8)
			}
		}
	}
}

// halfToFloat converts IEEE binary16 to float32.
func halfToFloat(h uint16) float32 {
	sign := uint32(h>>15) << 31
	exp := uint32(h>>10) & 0x1f
	mant := uint32(h) & 0x3ff
	switch {
	case exp == 0 && mant == 0:
		return math.Float32frombits(sign)
	case exp == 0: // subnormal
		e := uint32(127 - 15 + 1)
		for mant&0x400 == 0 {
			mant <<= 1
			e--
		}
		return math.Float32frombits(sign | e<<23 | (mant&0x3ff)<<13)
	case exp == 0x1f:
		return math.Float32frombits(sign | 0xff<<23 | mant<<13)
	}
	return math.Float32frombits(sign | (exp+127-15)<<23 | mant<<13)
}
