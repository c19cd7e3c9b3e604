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

// QuantizeTypes are the llama-quantize types that need no importance matrix.
var QuantizeTypes = []string{"q2_k", "q3_k_s", "q3_k_m", "q3_k_l", "q4_k_s", "q4_k_m", "q5_k_s", "q5_k_m",
	"q6_k", "q4_1", "q5_0", "q5_1", "iq4_nl", "iq4_xs", "bf16", "mxfp4_moe"}

// IsKQuant reports whether a type name is made by llama-quantize rather than written directly.
func IsKQuant(name string) bool {
	for _, t := range QuantizeTypes {
		if strings.EqualFold(t, name) {
			return true
		}
	}
	return false
}

// CheckTypeName accepts the names Write produces directly and the llama-quantize types.
func CheckTypeName(name string) error {
	for _, t := range TypeNames {
		if strings.EqualFold(t, name) {
			return nil
		}
	}
	if IsKQuant(name) {
		return nil
	}
	return fmt.Errorf("unknown model type %q (direct: %s; through llama-quantize: %s)", name,
		strings.Join(TypeNames, ", "), strings.Join(QuantizeTypes, ", "))
}
