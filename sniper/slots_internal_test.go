package sniper

import (
	"context"
	"os"
	"path/filepath"
	"testing"
)

// TestSlotReuseDoesNotNeedPageMoving: where pages cannot be moved (macOS; rec disabled), an evicted
// expert's slot still keeps its pages for the next expert: only NoRecycle releases them.
func TestSlotReuseDoesNotNeedPageMoving(t *testing.T) {
	const per, experts = 8192, 4
	path := filepath.Join(t.TempDir(), "model.gguf")
	var tensors []TensorDesc
	off := int64(4096)
	for _, kind := range []string{"gate", "up", "down"} {
		tensors = append(tensors, TensorDesc{Name: "blk.0.ffn_" + kind + "_exps.weight",
			Dims: []uint64{per / 4, 1, experts}, FileOffset: off, Bytes: per * experts})
		off += per * experts
	}
	if err := os.WriteFile(path, make([]byte, off+4096), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, noRecycle := range []bool{false, true} {
		idx, err := NewIndex(path, tensors, ModeExperts, false)
		if err != nil {
			t.Fatal(err)
		}
		s, err := Open(idx, Options{CacheBudget: 3 * per, NoRecycle: noRecycle}) // one expert
		if err != nil {
			t.Fatal(err)
		}
		s.rec.enabled = false // as on a platform that cannot move pages
		for _, td := range tensors {
			if _, err := s.Bind(td.Name, per, per*experts); err != nil {
				t.Fatal(err)
			}
		}
		for e := int32(0); e < experts; e++ {
			if err := s.Ensure(context.Background(), 0, []int32{e}); err != nil {
				t.Fatal(err)
			}
		}
		st := s.Stats()
		s.Close()
		if st.Evictions == 0 {
			t.Fatal("no evictions: the test does not exercise slot reuse")
		}
		if noRecycle != (st.Released > 0) || noRecycle == (st.Recycled > 0) {
			t.Fatalf("NoRecycle %v: %d slots reused, %d released", noRecycle, st.Recycled, st.Released)
		}
	}
}
