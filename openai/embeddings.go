package openai

import (
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"math"
)

// EmbeddingVector is one embedding as the client asked for it: an array of numbers, or with
// encoding_format "base64" (the default of OpenAI's SDKs) the vector's little-endian float32 bytes in
// base64, which the SDKs decode.
type EmbeddingVector struct {
	Values []float32
	Base64 bool
}

func (v EmbeddingVector) MarshalJSON() ([]byte, error) {
	if !v.Base64 {
		if v.Values == nil {
			return []byte("[]"), nil
		}
		return json.Marshal(v.Values)
	}
	raw := make([]byte, 4*len(v.Values))
	for i, f := range v.Values {
		binary.LittleEndian.PutUint32(raw[4*i:], math.Float32bits(f))
	}
	return json.Marshal(base64.StdEncoding.EncodeToString(raw))
}

// Base64Encoding validates encoding_format: "float" (or absent) or "base64".
func (r EmbeddingRequest) Base64Encoding() (bool, error) {
	switch r.EncodingFormat {
	case "", "float":
		return false, nil
	case "base64":
		return true, nil
	}
	return false, badField("encoding_format", "must be \"float\" or \"base64\", got %q", r.EncodingFormat)
}

// NormalizeL2 scales v to length 1 (llama-server's default, embd_normalize 2), so that a dot product
// is the cosine similarity. A zero vector stays zero.
func NormalizeL2(v []float32) {
	var sum float64
	for _, f := range v {
		sum += float64(f) * float64(f)
	}
	if sum == 0 {
		return
	}
	inv := 1 / math.Sqrt(sum)
	for i := range v {
		v[i] = float32(float64(v[i]) * inv)
	}
}
