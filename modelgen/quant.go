package modelgen

import (
	"encoding/binary"
	"fmt"
	"math"

	"github.com/expertsniper/expertsniper/gguf"
)

// fp32ToFP16 converts with round-to-nearest-even, as F16C's vcvtps2ph (which ggml uses on x86) and
// ggml's portable GGML_COMPUTE_FP32_TO_FP16 do.
func fp32ToFP16(f float32) uint16 {
	b := math.Float32bits(f)
	sign := uint16(b>>16) & 0x8000
	exp := int32(b>>23) & 0xff
	mant := b & 0x7fffff
	switch {
	case exp == 0xff: // Inf or NaN
		if mant != 0 {
			return sign | 0x7e00
		}
		return sign | 0x7c00
	case exp > 142: // overflow (unbiased > 15)
		return sign | 0x7c00
	case exp >= 113: // normal half
		h := uint32(exp-112)<<10 | mant>>13
		rest := mant & 0x1fff
		if rest > 0x1000 || (rest == 0x1000 && h&1 == 1) {
			h++ // may carry into the exponent, which is right (and to Inf at the top)
		}
		return sign | uint16(h)
	case exp >= 102: // subnormal half
		m := mant | 0x800000
		shift := uint32(126 - exp) // 14..24
		h := m >> shift
		rest := m & (1<<shift - 1)
		half := uint32(1) << (shift - 1)
		if rest > half || (rest == half && h&1 == 1) {
			h++
		}
		return sign | uint16(h)
	default:
		return sign
	}
}

// fp16ToFP32 is exact.
func fp16ToFP32(h uint16) float32 {
	sign := uint32(h&0x8000) << 16
	exp := uint32(h>>10) & 0x1f
	mant := uint32(h & 0x3ff)
	switch {
	case exp == 0x1f:
		return math.Float32frombits(sign | 0x7f800000 | mant<<13)
	case exp != 0:
		return math.Float32frombits(sign | (exp+112)<<23 | mant<<13)
	case mant == 0:
		return math.Float32frombits(sign)
	}
	// subnormal: normalise
	e := uint32(113)
	for mant&0x400 == 0 {
		mant <<= 1
		e--
	}
	return math.Float32frombits(sign | e<<23 | (mant&0x3ff)<<13)
}

const qk = 32 // elements per Q4_0 / Q8_0 block

// quantizeQ8_0 appends the Q8_0 encoding of x (len a multiple of 32), exactly as ggml's
// quantize_row_q8_0_ref: d = amax/127 stored as fp16, q = round(x/d) half away from zero.
func quantizeQ8_0(dst []byte, x []float32) []byte {
	for b := 0; b+qk <= len(x); b += qk {
		blk := x[b : b+qk]
		var amax float32
		for _, v := range blk {
			amax = max(amax, float32(math.Abs(float64(v))))
		}
		d := amax / 127
		var id float32
		if d != 0 {
			id = 1 / d
		}
		dst = binary.LittleEndian.AppendUint16(dst, fp32ToFP16(d))
		for _, v := range blk {
			dst = append(dst, byte(int8(math.Round(float64(v*id)))))
		}
	}
	return dst
}

// quantizeQ4_0 appends the Q4_0 encoding of x, exactly as ggml's quantize_row_q4_0_ref: the value of
// largest magnitude maps to -8, d = max/-8 as fp16, nibble j holds element j (low) and j+16 (high).
func quantizeQ4_0(dst []byte, x []float32) []byte {
	for b := 0; b+qk <= len(x); b += qk {
		blk := x[b : b+qk]
		var amax, mx float32
		for _, v := range blk {
			if a := float32(math.Abs(float64(v))); amax < a {
				amax, mx = a, v
			}
		}
		d := mx / -8
		var id float32
		if d != 0 {
			id = 1 / d
		}
		dst = binary.LittleEndian.AppendUint16(dst, fp32ToFP16(d))
		for j := 0; j < qk/2; j++ {
			x0 := blk[j] * id
			x1 := blk[qk/2+j] * id
			xi0 := min(15, int8(x0+8.5))
			xi1 := min(15, int8(x1+8.5))
			dst = append(dst, byte(xi0)|byte(xi1)<<4)
		}
	}
	return dst
}

// Direct random blocks for benchmark-sized models: generating Gaussian floats and quantizing them
// would take minutes for 20 GB; random quants with a plausible scale are equally real bytes for the
// kernels and the disk, and come out of the generator at memory speed.
const (
	// Uniform nibbles -8..7 have a standard deviation of about 4.6; scale to a weight std of ~0.05.
	q4Scale = 0.05 / 4.61
	// Uniform int8 -127..127 have a standard deviation of about 73.6.
	q8Scale = 0.05 / 73.6
)

// randomQ4_0's scales take both signs, as ggml's own quantizer's do (its d is max/-8 for the element
// of largest magnitude, so its sign follows that element). Uniform nibbles mean -0.5, not 0: with
// positive scales only, every row would share a bias of -0.5·d, each matrix would amplify the all-ones
// direction by about -0.5·d·n_in, and after a few layers that one direction would dominate the hidden
// state of every token — so every token would route to the same experts (measured: ~10 distinct
// experts per layer over 36 prompt tokens, 99.9% decode cache hits). Random signs cancel the bias.
func randomQ4_0(dst []byte, r *rng, blocks int) []byte {
	for i := 0; i < blocks; i++ {
		d := float32(q4Scale) * (0.75 + 0.5*r.uniform()) * randomSign(r)
		dst = binary.LittleEndian.AppendUint16(dst, fp32ToFP16(d))
		dst = binary.LittleEndian.AppendUint64(dst, r.next())
		dst = binary.LittleEndian.AppendUint64(dst, r.next())
	}
	return dst
}

func randomQ8_0(dst []byte, r *rng, blocks int) []byte {
	for i := 0; i < blocks; i++ {
		d := float32(q8Scale) * (0.75 + 0.5*r.uniform()) * randomSign(r)
		dst = binary.LittleEndian.AppendUint16(dst, fp32ToFP16(d))
		for j := 0; j < 4; j++ {
			v := r.next()
			for k := 0; k < 8; k++ {
				q := int8(byte(v >> (8 * k)))
				if q == -128 { // ggml's quantizer never produces -128
					q = -127
				}
				dst = append(dst, byte(q))
			}
		}
	}
	return dst
}

// randomSign is +1 or -1 with equal odds.
func randomSign(r *rng) float32 {
	if r.next()&1 == 0 {
		return 1
	}
	return -1
}

// Encode converts float32 values to the bytes of type t (F32, F16, Q8_0 or Q4_0) exactly as ggml's
// reference conversions do; for block types len(x) must be a multiple of 32.
func Encode(t gguf.Type, x []float32) ([]byte, error) {
	if err := checkType(t); err != nil {
		return nil, err
	}
	if len(x)%t.BlockSize() != 0 {
		return nil, fmt.Errorf("encode %s: %d values are not whole blocks of %d", t, len(x), t.BlockSize())
	}
	dst := make([]byte, 0, t.RowSize(int64(len(x))))
	switch t {
	case gguf.TypeF32:
		for _, v := range x {
			dst = binary.LittleEndian.AppendUint32(dst, math.Float32bits(v))
		}
	case gguf.TypeF16:
		for _, v := range x {
			dst = binary.LittleEndian.AppendUint16(dst, fp32ToFP16(v))
		}
	case gguf.TypeQ8_0:
		dst = quantizeQ8_0(dst, x)
	case gguf.TypeQ4_0:
		dst = quantizeQ4_0(dst, x)
	}
	return dst, nil
}
