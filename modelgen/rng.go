package modelgen

// rng is xoshiro256** seeded through splitmix64: fast, tiny, and fully specified here, so that a seed
// gives the same bytes with every Go version and on every machine.
type rng struct{ s [4]uint64 }

func splitmix64(x *uint64) uint64 {
	*x += 0x9e3779b97f4a7c15
	z := *x
	z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9
	z = (z ^ (z >> 27)) * 0x94d049bb133111eb
	return z ^ (z >> 31)
}

// newRNG derives an independent stream from the model seed and a stream identity (tensor and chunk),
// so that chunks can be generated in any order, on any number of goroutines, with identical results.
func newRNG(seed uint64, stream ...uint64) *rng {
	x := seed
	for _, s := range stream {
		x = splitmix64(&x) ^ s
	}
	r := &rng{}
	for i := range r.s {
		r.s[i] = splitmix64(&x)
	}
	return r
}

func (r *rng) next() uint64 {
	s := &r.s
	result := bits64rotl(s[1]*5, 7) * 9
	t := s[1] << 17
	s[2] ^= s[0]
	s[3] ^= s[1]
	s[1] ^= s[2]
	s[0] ^= s[3]
	s[2] ^= t
	s[3] = bits64rotl(s[3], 45)
	return result
}

func bits64rotl(x uint64, k uint) uint64 { return (x << k) | (x >> (64 - k)) }

// uniform returns a float32 in [0, 1).
func (r *rng) uniform() float32 { return float32(r.next()>>40) / (1 << 24) }

// normal returns an approximately standard normal float32: the sum of four uniforms (Irwin–Hall),
// centred and scaled to unit variance. No transcendental functions, so it is fast and exact to
// reproduce; the tails stop at ±2√3, which is fine for random weights.
func (r *rng) normal() float32 {
	var sum uint64
	for i := 0; i < 4; i++ {
		sum += r.next() >> 40
	}
	const scale = 1.7320508075688772 / (1 << 24) // √3 / 2^24: variance of one uniform is 1/12
	return float32((float64(sum) - 2*(1<<24)) * scale)
}
