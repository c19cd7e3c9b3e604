package bench

import (
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
)

// PeerArgs are the llama-bench arguments for the workload: stock llama.cpp as users run it on a model
// bigger than RAM (mmap), without the repacking that would copy every weight into RAM at load
// (--repack 0, which is also the numeric path our bit-exact runs use), JSON on stdout.
func PeerArgs(w Workload, repetitions int, warmup bool) []string {
	return peerArgs(w, repetitions, warmup, "--repack", "0", "-lm", "mmap")
}

// PeerDefaultArgs are the llama-bench arguments for stock llama.cpp with its defaults: weights
// repacked for its faster CPU kernels (which copies them into RAM), the in-RAM speed users get. It
// always warms up first, as llama-bench does by default: the weights it leaves mapped (embeddings,
// types without repacked kernels) would otherwise be faulted in from disk during the timed decode,
// which is not the in-RAM speed it stands for.
func PeerDefaultArgs(w Workload, repetitions int) []string {
	return peerArgs(w, repetitions, true)
}

func peerArgs(w Workload, repetitions int, warmup bool, load ...string) []string {
	args := append([]string{"-m", w.Model, "-p", strconv.Itoa(w.PromptTokens), "-n", strconv.Itoa(w.GenTokens),
		"-t", strconv.Itoa(w.Threads)}, load...)
	args = append(args, "-r", strconv.Itoa(max(repetitions, 1)), "-o", "json")
	if !warmup {
		args = append(args, "--no-warmup")
	}
	return args
}

// PeerResult is what llama-bench measured: the prompt test (n_prompt > 0, n_gen = 0) and the
// generation test (n_prompt = 0, n_gen > 0).
type PeerResult struct {
	PromptTokens int
	GenTokens    int
	PrefillTPS   float64
	DecodeTPS    float64
	Build        int
	ModelType    string
}

// peerTest is the part of one llama-bench JSON record we use (b11669's field names).
type peerTest struct {
	BuildNumber *int     `json:"build_number"`
	ModelType   string   `json:"model_type"`
	NPrompt     *int     `json:"n_prompt"`
	NGen        *int     `json:"n_gen"`
	AvgTS       *float64 `json:"avg_ts"`
}

// ParsePeer reads llama-bench's `-o json` output (an array of test records) and returns the prompt
// and generation rates. Missing tests or fields are errors that say what is missing.
func ParsePeer(out []byte) (PeerResult, error) {
	var tests []peerTest
	if err := json.Unmarshal(out, &tests); err != nil {
		return PeerResult{}, fmt.Errorf("parse llama-bench JSON output: %w (output begins %q)", err, head(out, 120))
	}
	if len(tests) == 0 {
		return PeerResult{}, errors.New("parse llama-bench JSON output: no test records")
	}
	var r PeerResult
	var havePP, haveTG bool
	for i, t := range tests {
		if t.NPrompt == nil || t.NGen == nil || t.AvgTS == nil {
			return PeerResult{}, fmt.Errorf("parse llama-bench JSON output: record %d lacks n_prompt, n_gen or avg_ts", i)
		}
		if *t.AvgTS <= 0 {
			return PeerResult{}, fmt.Errorf("parse llama-bench JSON output: record %d has rate %g tok/s", i, *t.AvgTS)
		}
		if t.BuildNumber != nil {
			r.Build = *t.BuildNumber
		}
		r.ModelType = t.ModelType
		switch {
		case *t.NPrompt > 0 && *t.NGen == 0 && !havePP:
			r.PromptTokens, r.PrefillTPS, havePP = *t.NPrompt, *t.AvgTS, true
		case *t.NPrompt == 0 && *t.NGen > 0 && !haveTG:
			r.GenTokens, r.DecodeTPS, haveTG = *t.NGen, *t.AvgTS, true
		}
	}
	if !havePP || !haveTG {
		return PeerResult{}, fmt.Errorf("parse llama-bench JSON output: want a prompt test and a generation test, got prompt=%v generation=%v", havePP, haveTG)
	}
	return r, nil
}

func head(b []byte, n int) string {
	if len(b) > n {
		return string(b[:n]) + "…"
	}
	return string(b)
}
