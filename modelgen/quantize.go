package modelgen

import (
	"bytes"
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// Quantize converts in to out with llama.cpp's llama-quantize (e.g. qtype "Q4_K_M"), writing a
// temporary file first and renaming it, so out is never partial.
func Quantize(ctx context.Context, in, out, qtype string, threads int) error {
	bin, err := exec.LookPath("llama-quantize")
	if err != nil {
		return fmt.Errorf("quantize %q to %s: %w", in, qtype, ErrNoQuantizer)
	}
	tmp := filepath.Join(filepath.Dir(out), "."+filepath.Base(out)+fmt.Sprintf(".tmp-%d", os.Getpid()))
	args := []string{in, tmp, strings.ToUpper(qtype)}
	if threads > 0 {
		args = append(args, fmt.Sprint(threads))
	}
	cmd := exec.CommandContext(ctx, bin, args...)
	var output bytes.Buffer
	cmd.Stdout, cmd.Stderr = &output, &output
	if err := cmd.Run(); err != nil {
		os.Remove(tmp)
		if ctxErr := ctx.Err(); ctxErr != nil {
			return fmt.Errorf("quantize %q to %s: %w", in, qtype, ctxErr)
		}
		return fmt.Errorf("quantize %q to %s: %s: %w\n%s", in, qtype, bin, err, lastLines(output.String(), 15))
	}
	if err := os.Rename(tmp, out); err != nil {
		os.Remove(tmp)
		return fmt.Errorf("quantize %q to %s: %w", in, qtype, err)
	}
	return nil
}

func lastLines(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	if len(lines) > n {
		lines = lines[len(lines)-n:]
	}
	return strings.Join(lines, "\n")
}

// IsKQuant reports whether a type name needs llama-quantize (anything Write does not produce).
func IsKQuant(name string) bool {
	for _, t := range TypeNames {
		if strings.EqualFold(t, name) {
			return false
		}
	}
	return true
}

