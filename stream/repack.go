package stream

import (
	"strings"

	"github.com/expertsniper/expertsniper/binding/hookapi"
	"github.com/expertsniper/expertsniper/sniper"
)

// Repacked layouts (issue 16; docs/design.md, "Repacked layouts"). llama.cpp's default load puts the
// weights its CPU kernels repack (Q4_0, Q4_K, IQ4_NL on x86 in b11669) in interleaved layouts; a
// streamed model does the same, so that it computes exactly as the default in-RAM run: pinned
// weights are converted once at load, and each streamed read is converted as it lands in its slot
// (sniper.Convert). Options.NoRepack keeps the file's layout everywhere.

// streamedConversions returns the layout llama.cpp's default load gives streamed tensor t (st is the
// sniper's description of it) and one conversion per part, or nil for the file's layout. Each part is
// converted on its own, so each must be whole rows that convert with the whole tensor's kernels (the
// qwen35moe fused gate_up: its gate rows, then its up rows; repacking is local to groups of rows).
func streamedConversions(t *hookapi.Tensor, st *sniper.StreamedTensor) (hookapi.Layout, []sniper.Convert) {
	if t.Repacking == nil || st == nil {
		return nil, nil
	}
	l := t.Repacking(t.Ne[2] > 1)
	if l == nil {
		return nil, nil
	}
	row := l.RowBytes()
	convs := make([]sniper.Convert, len(st.Parts))
	for i, p := range st.Parts {
		if row <= 0 || p.Len%row != 0 || p.MemOffset%row != 0 || (len(st.Parts) > 1 && !l.Fits(p.Len/row)) {
			return nil, nil
		}
		convs[i] = l.Convert
	}
	return l, convs
}

// pinnedLayout returns the layout llama.cpp's default load gives pinned tensor t, or nil. Only
// weights that are a matmul's left operand qualify (llama.cpp picks a weight's buffer type by the op
// that uses it): not the token embeddings (gathered rows), norms or convolutions.
func pinnedLayout(t *hookapi.Tensor) hookapi.Layout {
	name := t.Name
	if t.Ne[2] != 1 || t.Ne[3] != 1 || !strings.HasSuffix(name, ".weight") || strings.HasPrefix(name, "token_embd") ||
		strings.Contains(name, "norm") || strings.Contains(name, "conv1d") || t.Repacking == nil {
		return nil
	}
	return t.Repacking(false)
}
