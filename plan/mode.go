package plan

import (
	"fmt"
	"strings"
)

// Mode is how a model's weights are held: all in RAM, or with routed experts (sniper) or dense FFNs
// (stream) read from disk as they are needed. ModeAuto is decided from the memory plan
// (engine/local.Decide). Every command and config.json read modes with ParseMode.
type Mode string

// The modes; "" means ModeAuto.
const (
	ModeAuto   Mode = "auto"
	ModeRAM    Mode = "ram"
	ModeSniper Mode = "sniper"
	ModeStream Mode = "stream"
)

// ParseMode reads a --mode value ("" is auto; case does not matter).
func ParseMode(s string) (Mode, error) {
	switch m := Mode(strings.ToLower(strings.TrimSpace(s))); m {
	case "":
		return ModeAuto, nil
	case ModeAuto, ModeRAM, ModeSniper, ModeStream:
		return m, nil
	}
	return "", fmt.Errorf("mode %q: want auto, ram, sniper or stream", s)
}

// Unlimited, as a --ram or --cache size, sets no bound (sniper.Unlimited: the cache keeps every
// expert it reads).
const Unlimited int64 = -1

// ParseBudget reads a --ram or --cache value: a size such as 8GiB, 512MiB or 0, or "unlimited"
// (Unlimited). Negative sizes are refused in every spelling ("-1" as much as "-1MiB"): "unlimited"
// is the one way to say no bound.
func ParseBudget(s string) (int64, error) {
	t := strings.TrimSpace(s)
	if strings.EqualFold(t, "unlimited") {
		return Unlimited, nil
	}
	if strings.HasPrefix(t, "-") {
		return 0, fmt.Errorf("size %q is negative: want a size such as 512MiB, 0, or unlimited", s)
	}
	return ParseSize(t)
}

// KVTypes are the KV cache types the engine accepts (llama.cpp b11669's, less iq4_nl, which the
// binding does not offer), in the order help texts list them.
var KVTypes = []string{"f16", "q8_0", "q4_0", "f32", "bf16", "q4_1", "q5_0", "q5_1"}

// ParseKVType reads a --cache-type-k/-v value ("" is f16), lower-cased.
func ParseKVType(s string) (string, error) {
	t := strings.ToLower(strings.TrimSpace(s))
	if t == "" {
		return "f16", nil
	}
	if _, ok := kvTypeBytes[t]; !ok {
		return "", fmt.Errorf("KV cache type %q: want one of %s", s, strings.Join(KVTypes, ", "))
	}
	return t, nil
}
