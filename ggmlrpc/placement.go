package ggmlrpc

import (
	"fmt"
	"math"
	"strconv"
	"strings"
)

// Placement is how a model's layers are spread over the local machine and the workers, in llama.cpp's
// own terms: the last OffloadLayers of the n_layer+1 placeable units (the repeating layers plus the
// output layer) go to the workers' devices, divided among them by DeviceSplit (one weight per
// device, llama_model_params.tensor_split); the rest, and the token embeddings, stay local.
type Placement struct {
	Units         int       // n_layer + 1
	LocalLayers   int       // units kept on the local CPU
	OffloadLayers int       // n_gpu_layers
	DeviceSplit   []float32 // per worker device, in device order
	// WorkerLayers is how many units each worker gets (same order as the workers), for reports.
	WorkerLayers []int
}

// ParseSplit reads a --tensor-split value: comma-separated non-negative weights, the first for the
// local machine and then one per worker in --rpc order ("1,1,1": a third each; "0,1,1": everything on
// the two workers).
func ParseSplit(s string, workers int) ([]float64, error) {
	if strings.TrimSpace(s) == "" {
		return nil, nil
	}
	parts := strings.Split(s, ",")
	if len(parts) != workers+1 {
		return nil, fmt.Errorf("--tensor-split has %d weights; want %d: the local machine's first, then one per --rpc worker", len(parts), workers+1)
	}
	ws := make([]float64, len(parts))
	sum := 0.0
	for i, p := range parts {
		w, err := strconv.ParseFloat(strings.TrimSpace(p), 64)
		if err != nil || w < 0 || math.IsInf(w, 0) || math.IsNaN(w) {
			return nil, fmt.Errorf("--tensor-split weight %q: want a non-negative number", p)
		}
		ws[i] = w
		sum += w
	}
	if sum == 0 {
		return nil, fmt.Errorf("--tensor-split weights are all zero")
	}
	return ws, nil
}

// Place divides nLayer repeating layers (+1 output layer) by weights (local first, then one per
// worker; nil = equal shares) and spreads each worker's share evenly over its devices
// (devicesPerWorker[i] devices for worker i).
func Place(nLayer int, weights []float64, devicesPerWorker []int) (Placement, error) {
	workers := len(devicesPerWorker)
	if nLayer <= 0 {
		return Placement{}, fmt.Errorf("the model has %d layers", nLayer)
	}
	if workers == 0 {
		return Placement{}, fmt.Errorf("no workers to place layers on")
	}
	if weights == nil {
		weights = make([]float64, workers+1)
		for i := range weights {
			weights[i] = 1
		}
	}
	if len(weights) != workers+1 {
		return Placement{}, fmt.Errorf("%d split weights for the local machine and %d workers", len(weights), workers)
	}
	sum := 0.0
	for _, w := range weights {
		sum += w
	}
	if sum <= 0 {
		return Placement{}, fmt.Errorf("split weights are all zero")
	}
	units := nLayer + 1
	// Largest remainder, so that the shares add up to units exactly and a zero weight gets nothing.
	shares := make([]int, len(weights))
	type rem struct {
		i int
		r float64
	}
	var rems []rem
	given := 0
	for i, w := range weights {
		exact := float64(units) * w / sum
		shares[i] = int(math.Floor(exact))
		given += shares[i]
		rems = append(rems, rem{i, exact - math.Floor(exact)})
	}
	for given < units {
		best := -1
		for j, r := range rems {
			if weights[r.i] > 0 && (best < 0 || r.r > rems[best].r) {
				best = j
			}
		}
		shares[rems[best].i]++
		rems[best].r = -1
		given++
	}
	p := Placement{Units: units, LocalLayers: shares[0], OffloadLayers: units - shares[0], WorkerLayers: shares[1:]}
	for i, n := range devicesPerWorker {
		if n <= 0 {
			return Placement{}, fmt.Errorf("worker %d offers no device", i)
		}
		for d := 0; d < n; d++ {
			p.DeviceSplit = append(p.DeviceSplit, float32(shares[i+1])/float32(n))
		}
	}
	return p, nil
}

// Share is what one device holds of a model spread by a Placement.
type Share struct {
	Layers      int   `json:"layers"`
	WeightBytes int64 `json:"weight_bytes"`
	KVBytes     int64 `json:"kv_bytes"`
}

// Shares divides a model's bytes along p, in llama.cpp's order: the local machine holds the input
// tensors (token embeddings) and the first LocalLayers units; then each worker device takes the next
// units by its DeviceSplit share; the last unit is the output layer. layerBytes are the repeating
// layers' tensor bytes, kvPerLayer a layer's share of the KV cache and recurrent state. The result has
// the local machine first, then one entry per device. (llama.cpp rounds the devices' boundaries its
// own way, so a device may end up with a layer more or less.)
func Shares(p Placement, layerBytes []int64, outputBytes, inputBytes, kvPerLayer int64) []Share {
	unitBytes := func(u int) (int64, int64) {
		if u < len(layerBytes) {
			return layerBytes[u], kvPerLayer
		}
		return outputBytes, 0
	}
	out := make([]Share, 1+len(p.DeviceSplit))
	out[0].WeightBytes = inputBytes
	next := 0
	take := func(s *Share, n int) {
		for i := 0; i < n && next < p.Units; i++ {
			w, kv := unitBytes(next)
			s.Layers++
			s.WeightBytes += w
			s.KVBytes += kv
			next++
		}
	}
	take(&out[0], p.LocalLayers)
	given := 0.0
	for i, f := range p.DeviceSplit {
		given += float64(f)
		n := int(math.Round(given)) - (next - p.LocalLayers)
		if i == len(p.DeviceSplit)-1 {
			n = p.Units - next
		}
		take(&out[i+1], n)
	}
	return out
}
