package sniper_test

import (
	"bytes"
	"context"
	"errors"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/expertsniper/expertsniper/sniper"
)

// reversed is a stand-in for a layout conversion: every byte of src, in reverse order, so that a
// part converted at the wrong offset, or not at all, shows.
func reversed(dst, src []byte) error {
	for i, b := range src {
		dst[len(src)-1-i] = b
	}
	return nil
}

func reverse(b []byte) []byte {
	out := make([]byte, len(b))
	_ = reversed(out, b)
	return out
}

// TestConvertedExpertsLandConverted: with a conversion bound, each expert's bytes (each part of a
// fused tensor on its own) reach its slot converted, whatever the cache does, for experts read one by
// one and back to back; the time and bytes are counted.
func TestConvertedExpertsLandConverted(t *testing.T) {
	const per = 10_000
	for _, fuse := range []bool{false, true} {
		m := newFakeModel(t, t.TempDir(), 3, 8, per, false)
		var calls atomic.Int64
		conv := func(dst, src []byte) error { calls.Add(1); return reversed(dst, src) }
		for _, budget := range []int64{0, sniper.Unlimited} {
			s, mem := bindAll(t, m, sniper.ModeExperts, fuse, sniper.Options{CacheBudget: budget}, conv)
			ctx := context.Background()
			for _, ids := range [][]int32{{3, 5, 3, 7}, {0, 1, 2, 3, 4, 5, 6, 7}, {6}} {
				if err := s.Ensure(ctx, 1, ids); err != nil {
					t.Fatal(err)
				}
				for _, e := range ids {
					down := "blk.1.ffn_down_exps.weight"
					if got := mem.expert(down, 1, int(e), per); !bytes.Equal(got, reverse(m.expert(down, int(e)))) {
						t.Fatalf("fuse %v budget %d: %s expert %d is not the file's bytes converted", fuse, budget, down, e)
					}
					if fuse {
						got := mem.expert(sniper.FusedGateUpName(1), 1, int(e), 2*per)
						want := append(reverse(m.expert("blk.1.ffn_gate_exps.weight", int(e))), reverse(m.expert("blk.1.ffn_up_exps.weight", int(e)))...)
						if !bytes.Equal(got, want) {
							t.Fatalf("budget %d: fused expert %d is not gate and up each converted", budget, e)
						}
						continue
					}
					for _, kind := range []string{"gate", "up"} {
						name := "blk.1.ffn_" + kind + "_exps.weight"
						if got := mem.expert(name, 1, int(e), per); !bytes.Equal(got, reverse(m.expert(name, int(e)))) {
							t.Fatalf("budget %d: %s expert %d is not the file's bytes converted", budget, name, e)
						}
					}
				}
			}
			st := s.Stats()
			if st.ConvertedBytes != st.BytesRead || st.ConvertedBytes == 0 || st.ConvertTime <= 0 {
				t.Fatalf("fuse %v budget %d: converted %d bytes in %v, read %d", fuse, budget, st.ConvertedBytes, st.ConvertTime, st.BytesRead)
			}
		}
		if calls.Load() == 0 {
			t.Fatal("the conversion never ran")
		}
	}
}

// TestConvertedDenseTensors: stream mode converts a dense FFN tensor whole into its memory.
func TestConvertedDenseTensors(t *testing.T) {
	const per = 20_000
	m := newFakeModel(t, t.TempDir(), 2, 1, per, true)
	s, mem := bindAll(t, m, sniper.ModeDense, false, sniper.Options{}, reversed)
	for l := 0; l < 2; l++ {
		if err := s.Ensure(context.Background(), l, nil); err != nil {
			t.Fatal(err)
		}
		for _, kind := range []string{"gate", "up", "down"} {
			name := "blk." + itoa(l) + ".ffn_" + kind + ".weight"
			if !bytes.Equal(mem.mem[name], reverse(m.expert(name, 0))) {
				t.Fatalf("%s is not the file's bytes converted", name)
			}
		}
	}
}

// TestConversionErrorFailsTheRead: a conversion that fails fails the Ensure with its error, and
// every later one (the slots may hold unconverted bytes); a wrong number of conversions is refused.
func TestConversionErrorFailsTheRead(t *testing.T) {
	m := newFakeModel(t, t.TempDir(), 2, 4, 6000, false)
	bad := func(dst, src []byte) error { return errors.New("no such layout") }
	s, _ := bindAll(t, m, sniper.ModeExperts, false, sniper.Options{CacheBudget: sniper.Unlimited}, bad)
	for i := 0; i < 2; i++ {
		if err := s.Ensure(context.Background(), 0, []int32{1}); err == nil || !strings.Contains(err.Error(), "no such layout") {
			t.Fatalf("Ensure %d: err = %v, want the conversion's error", i, err)
		}
	}
	idx, err := sniper.NewIndex(m.path, m.tensors, sniper.ModeExperts, false)
	if err != nil {
		t.Fatal(err)
	}
	s2, err := sniper.Open(idx, sniper.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer s2.Close()
	st := idx.Tensors()[0]
	if _, err := s2.BindConverted(st.Name, st.ExpertBytes, st.ExpertBytes*int64(st.Experts), []sniper.Convert{reversed, reversed}); err == nil {
		t.Fatal("two conversions for a one-part tensor were accepted")
	}
}
