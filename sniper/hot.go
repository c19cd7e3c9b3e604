package sniper

import (
	"cmp"
	"context"
	"fmt"
	"slices"
)

// Pinning the hottest experts: a skewed model's most used experts can be held in the cache for good,
// so that no burst of other experts (a long prompt) evicts them. Which experts are hot comes from an
// earlier run's statistics (Stats.ExpertActivations, `agent run --stats-json`); the pinned experts
// count against the budget like any other and are read once, up front.

// HottestExperts lists every expert with at least one activation in activations (per layer, per
// expert), most activated first; ties go to the lower layer, then the lower expert.
func HottestExperts(activations [][]int64) []Key {
	var keys []Key
	for l, row := range activations {
		for e, n := range row {
			if n > 0 {
				keys = append(keys, Key{Layer: l, Expert: e})
			}
		}
	}
	slices.SortStableFunc(keys, func(a, b Key) int {
		return cmp.Compare(activations[b.Layer][b.Expert], activations[a.Layer][a.Expert])
	})
	return keys
}

// PinHot reads the experts of hot (hottest first) into the cache and keeps them there until Close,
// as many as fit in maxBytes, which may be at most half the cache budget: the other half stays for
// the experts each token needs besides. Keys outside the model are skipped. It returns the experts
// and bytes pinned. Statistics count the reads; ResetStats forgets them.
func (s *Sniper) PinHot(ctx context.Context, hot []Key, maxBytes int64) (experts int, bytes int64, err error) {
	if s.classOf == nil {
		return 0, 0, fmt.Errorf("pin hot experts: only expert streaming (sniper mode) has a cache")
	}
	if s.budget >= 0 && maxBytes > s.budget/2 {
		return 0, 0, fmt.Errorf("pin hot experts: %d bytes asked, but at most half the cache budget (%d bytes) may be pinned", maxBytes, s.budget/2)
	}
	byLayer := map[int][]int32{}
	var order []int
	seen := map[Key]bool{}
	for _, k := range hot {
		if k.Layer < 0 || k.Layer >= s.idx.Layers || k.Expert < 0 || k.Expert >= s.idx.Experts || seen[k] || len(s.layers[k.Layer]) == 0 {
			continue
		}
		per := s.expertBytes(k.Layer)
		if bytes+per > maxBytes {
			break
		}
		seen[k] = true
		bytes += per
		if byLayer[k.Layer] == nil {
			order = append(order, k.Layer)
		}
		byLayer[k.Layer] = append(byLayer[k.Layer], int32(k.Expert))
	}
	slices.Sort(order)
	for _, l := range order {
		p := s.NewPin() // held until Close: its one Ensure is never followed by another
		if err := p.Ensure(ctx, l, byLayer[l]); err != nil {
			p.Release()
			return experts, bytes, fmt.Errorf("pin hot experts of layer %d: %w", l, err)
		}
		s.mu.Lock()
		s.hot = append(s.hot, p)
		s.mu.Unlock()
		experts += len(byLayer[l])
	}
	return experts, bytes, nil
}
