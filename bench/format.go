package bench

import (
	"encoding/json"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
)

var columns = []string{"config", "cap", "prefill tok/s", "decode tok/s", "prefill ×peer", "decode ×peer",
	"prefill ×ram", "decode ×ram", "decode ×default", "decode ×disk bound", "peak RSS", "cgroup peak", "disk read", "read/token", "disk GB/s", "hit rate"}

// rows renders every measurement as table cells; failed ones carry their error in the last column.
func (r *Report) rows() [][]string {
	out := make([][]string, 0, len(r.Results))
	for _, m := range r.Results {
		row := []string{m.Name(), FormatSize(m.Cap)}
		if !m.OK() {
			for len(row) < len(columns)-1 {
				row = append(row, "—")
			}
			row = append(row, "failed: "+m.Err)
			out = append(out, row)
			continue
		}
		row = append(row, rates(m.PrefillTPS, m.PrefillRuns), rates(m.DecodeTPS, m.DecodeRuns), times(m.PrefillVsPeer), times(m.DecodeVsPeer),
			times(m.PrefillVsRAM), times(m.DecodeVsRAM), times(m.DecodeVsDefault), percent(m.DecodeVsDisk), FormatSize(m.PeakRSS), FormatSize(m.PeakUsage), FormatSize(m.DiskRead))
		switch {
		case m.Kind == KindRPC && !m.WirePerToken.Missing(): // what crossed the network instead of the disk
			row = append(row, FormatSize(int64(m.WirePerToken))+" wire", num(m.WireLoadGBps, "%.2f load"), "—")
		case m.ReadPerToken.Missing():
			row = append(row, "—", num(m.DiskGBps, "%.2f"), percent(m.HitRate))
		default:
			row = append(row, FormatSize(int64(m.ReadPerToken)), num(m.DiskGBps, "%.2f"), percent(m.HitRate))
		}
		out = append(out, row)
	}
	return out
}

func rate(v float64) string { return fmt.Sprintf("%.2f", v) }

// rates is a median with the range of the rounds it came from, if there were several.
func rates(v float64, runs []float64) string {
	if len(runs) < 2 {
		return rate(v)
	}
	return fmt.Sprintf("%.2f (%.2f–%.2f)", v, slices.Min(runs), slices.Max(runs))
}

func times(v Num) string {
	if v.Missing() {
		return "—"
	}
	return fmt.Sprintf("%.2f×", float64(v))
}

func num(v Num, format string) string {
	if v.Missing() {
		return "—"
	}
	return fmt.Sprintf(format, float64(v))
}

func percent(v Num) string {
	if v.Missing() {
		return "—"
	}
	return fmt.Sprintf("%.1f%%", 100*float64(v))
}

// header describes the workload, the machine and the disk bound.
func (r *Report) header() []string {
	w := r.Workload
	lines := []string{
		fmt.Sprintf("model %s (%s), prompt %d tokens, %d generated, %d threads", w.Model, FormatSize(r.ModelSize), w.PromptTokens, w.GenTokens, w.Threads),
		"machine: " + r.Machine.String(),
	}
	if w.RPC != "" {
		split := w.TensorSplit
		if split == "" {
			split = "equal"
		}
		lines = append(lines, fmt.Sprintf("rpc workers %s (tensor split %s, running outside the caps): for rpc, read/token is the bytes on the wire per token and disk GB/s the rate the weights went to the workers at load", w.RPC, split))
	}
	if r.Rounds > 1 {
		lines = append(lines, fmt.Sprintf("%d rounds of every configuration: tok/s are medians (range in parentheses), the other columns the median-decode round's", r.Rounds))
	}
	if d := r.DiskBound; d != nil {
		kind := "direct"
		if !d.Direct {
			kind = "buffered (direct I/O refused)"
		}
		lines = append(lines, fmt.Sprintf("disk bound: %.2f GB/s %s reads of %s (%d threads) ÷ %s missed per token (%d reads) = %.2f tok/s at 0%% cache hits",
			d.GBps, kind, FormatSize(d.ReadSize), d.Threads, FormatSize(d.MissBytesPerToken), d.ReadsPerToken, d.TokPerSec))
		seen := map[int64]bool{}
		for _, m := range r.Results {
			if m.Kind != KindStream || seen[m.Budget] {
				continue
			}
			seen[m.Budget] = true
			if kept, uncached, bound, ok := d.Dense(m.Budget); ok && uncached == 0 {
				lines = append(lines, fmt.Sprintf("stream with a cache of %s keeps all %d layers: nothing to read per token", FormatSize(m.Budget), kept))
			} else if ok {
				lines = append(lines, fmt.Sprintf("disk bound, stream with a cache of %s: keeps the first %d of %d layers, %s of FFNs per token not cached ÷ %.2f GB/s = %.2f tok/s",
					FormatSize(m.Budget), kept, len(d.LayerBytes), FormatSize(uncached), d.GBps, bound))
			}
		}
	}
	return lines
}

// WriteText prints the report as an aligned table for a terminal.
func (r *Report) WriteText(w io.Writer) error {
	for _, l := range r.header() {
		if _, err := fmt.Fprintln(w, l); err != nil {
			return err
		}
	}
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, strings.Join(columns, "\t"))
	for _, row := range r.rows() {
		fmt.Fprintln(tw, strings.Join(row, "\t"))
	}
	return tw.Flush()
}

// WriteMarkdown prints the report as a markdown table (for the README).
func (r *Report) WriteMarkdown(w io.Writer) error {
	var b strings.Builder
	for _, l := range r.header() {
		b.WriteString(l + "  \n")
	}
	if r.Command != "" {
		b.WriteString("command: `" + r.Command + "`\n")
	}
	b.WriteString("\n| " + strings.Join(columns, " | ") + " |\n|")
	for range columns {
		b.WriteString("---|")
	}
	b.WriteString("\n")
	for _, row := range r.rows() {
		for i := range row {
			row[i] = strings.ReplaceAll(row[i], "|", `\|`)
		}
		b.WriteString("| " + strings.Join(row, " | ") + " |\n")
	}
	_, err := io.WriteString(w, b.String())
	return err
}

// WriteJSON prints the report as indented JSON (missing numbers are null).
func (r *Report) WriteJSON(w io.Writer) error {
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	return enc.Encode(r)
}
