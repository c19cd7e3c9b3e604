package binding

import (
	"fmt"
	"strings"

	"github.com/expertsniper/expertsniper/gguf"
)

// llama.cpp b11669's compile-time limits (llama-hparams.h).
const (
	llamaMaxLayers  = 512
	llamaMaxExperts = 512
)

// checkHParams rejects metadata that llama.cpp checks with GGML_ASSERT, which abort()s the whole
// process instead of returning an error, and values it divides by. It only looks at the keys every
// architecture shares; llama.cpp reports the rest (missing keys, wrong shapes) as errors. Integer
// overrides replace the file's values, as they will in llama.cpp.
func checkHParams(f *gguf.File, overrides []KVOverride) error {
	arch := f.Architecture()
	if arch == "" {
		return fmt.Errorf("%w: no general.architecture", errNotGGUF)
	}
	get := func(suffix string) (uint64, bool, error) {
		key := arch + "." + suffix
		for _, o := range overrides {
			if o.Key == key && o.Type == KVInt {
				if o.Int < 0 {
					return 0, true, fmt.Errorf("override %s = %d: want a non-negative integer", key, o.Int)
				}
				return uint64(o.Int), true, nil
			}
		}
		v, present := f.Get(key)
		if !present {
			return 0, false, nil
		}
		if _, isArray := v.([]uint32); isArray {
			return 0, false, nil // per-layer arrays: llama.cpp checks their length itself
		}
		if _, isArray := v.([]int32); isArray {
			return 0, false, nil
		}
		n, ok := f.Uint(key)
		if !ok {
			return 0, true, fmt.Errorf("metadata %s = %v: want a non-negative integer", key, v)
		}
		return n, true, nil
	}
	for _, k := range []string{"context_length", "embedding_length", "block_count"} {
		n, present, err := get(k)
		if err != nil {
			return err
		}
		if present && n == 0 {
			return fmt.Errorf("metadata %s.%s is 0", arch, k)
		}
	}
	if n, _, _ := get("block_count"); n > llamaMaxLayers {
		return fmt.Errorf("metadata %s.block_count = %d: llama.cpp supports at most %d layers", arch, n, llamaMaxLayers)
	}
	if n, present, err := get("attention.head_count"); err != nil {
		return err
	} else if present && n == 0 {
		return fmt.Errorf("metadata %s.attention.head_count is 0", arch)
	}
	nExpert, _, err := get("expert_count")
	if err != nil {
		return err
	}
	nUsed, _, err := get("expert_used_count")
	if err != nil {
		return err
	}
	groups, _, err := get("expert_group_count")
	if err != nil {
		return err
	}
	groupUsed, _, err := get("expert_group_used_count")
	if err != nil {
		return err
	}
	switch {
	case nExpert > llamaMaxExperts:
		return fmt.Errorf("metadata %s.expert_count = %d: llama.cpp supports at most %d experts", arch, nExpert, llamaMaxExperts)
	case nUsed > nExpert:
		return fmt.Errorf("metadata %s.expert_used_count = %d exceeds expert_count = %d", arch, nUsed, nExpert)
	case nExpert > 0 && nUsed == 0:
		return fmt.Errorf("metadata %s: %d experts but expert_used_count is 0", arch, nExpert)
	case nExpert == 0 && groups != 0:
		return fmt.Errorf("metadata %s.expert_group_count = %d without experts", arch, groups)
	case nExpert > 0 && groups >= nExpert:
		return fmt.Errorf("metadata %s.expert_group_count = %d, not fewer than the %d experts", arch, groups, nExpert)
	case groups > 1 && (nExpert%groups != 0 || groupUsed == 0 || groupUsed >= groups):
		return fmt.Errorf("metadata %s: %d experts in %d groups with %d used is inconsistent", arch, nExpert, groups, groupUsed)
	}
	return checkVocab(f)
}

// checkVocab: llama.cpp asserts that token strings are unique (its id→token and token→id tables
// must have the same size). It reads them as C strings, so a NUL byte ends a token.
func checkVocab(f *gguf.File) error {
	v, ok := f.Get("tokenizer.ggml.tokens")
	if !ok {
		return nil
	}
	toks, ok := v.([]string)
	if !ok {
		return fmt.Errorf("metadata tokenizer.ggml.tokens is %T, want an array of strings", v)
	}
	seen := make(map[string]int, len(toks))
	for i, t := range toks {
		if k := strings.IndexByte(t, 0); k >= 0 {
			t = t[:k]
		}
		if j, dup := seen[t]; dup {
			return fmt.Errorf("metadata tokenizer.ggml.tokens: tokens %d and %d are both %q", j, i, t)
		}
		seen[t] = i
	}
	return nil
}
