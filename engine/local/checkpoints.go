package local

import (
	"fmt"
	"slices"
	"strings"

	"github.com/expertsniper/expertsniper/engine"
)

// Context checkpoints, as llama-server keeps them for recurrent and hybrid models (Qwen3.5's
// Gated DeltaNet layers, Mamba, ...). Key-value cells can be cut back to any prefix, so a request
// that shares a prefix with what its slot holds evaluates only the rest; a recurrent state cannot:
// it is the sum of every token so far. Without a way back, a follow-up in a conversation whose chat
// template renders the previous answer differently from how it was generated (reasoning dropped,
// a tool call reformatted) would evaluate the whole conversation again, every turn.
//
// So while a prompt is evaluated, the step that reaches checkpointBack tokens before its end stops
// there and the sequence's recurrent state is kept (binding.PartialState). The tokens left out are
// where chat templates put the generation prompt ("<think>\n\n</think>\n\n" after Qwen3.5's
// assistant header), the part the next turn renders differently; the conversation before them is
// what the next prompt repeats.
// A caller that knows where its next request will part from this one says so (Request.KeepPrefix:
// an agent's routing call, whose answer renders the same conversation without the instruction),
// and a checkpoint is taken there too.
//
// A later request that diverges from the slot's tokens at or after a checkpoint restores it and cuts
// the key-value cells back to it, then evaluates from there: the same numbers as the step that made
// the checkpoint, so restoring is exact (TestCheckpointRestoreIsExact).
//
// Each checkpoint holds one sequence's recurrent state (plan.Model.RecurrentStateBytes, 63 MiB
// for Qwen3.5-35B-A3B), counted in the memory plan; a slot keeps Options.Checkpoints of them, the
// newest.

// checkpointBack is how many tokens before a prompt's end its checkpoint is taken: at least the
// generation prompt a recurrent family's chat template puts after the assistant header, which the
// next turn renders differently (Qwen3.5: "<think>\n" with thinking on, "<think>\n\n</think>\n\n"
// off: 2 and 4 tokens in its vocabulary; 6 in the test models' generated one, where "<think>" is
// not a special token). Few, because the tokens left out make a step of their own, which in RAM
// reads their experts' weights once more: llama-server's split leaves 4.
const checkpointBack = 8

// DefaultCheckpoints is what agent serve and the REPL keep per slot: the newest checkpoint serves
// a conversation's next turn, the one before it an edit of the last message. (llama-server keeps
// up to 32, spaced 8192 tokens apart; here each costs a recurrent state of RAM the plan counts.)
const DefaultCheckpoints = 2

// maxCheckpoints bounds Options.Checkpoints.
const maxCheckpoints = 32

// checkpoint is a slot's recurrent state after its first n tokens.
type checkpoint struct {
	n     int
	state []byte
}

// checkpointsOf are the prompt positions at which the job's prompt evaluation stops for a
// checkpoint, in order: its Request.KeepPrefix's end, and checkpointBack tokens before the prompt's
// end. There are none unless the model is recurrent, checkpoints are enabled and the job is a
// completion; a position must lie past what the slot already held and before the prompt's end.
func (e *Engine) checkpointsOf(j *job) []int {
	if !e.recurrent || e.opts.Checkpoints <= 0 || !j.generate {
		return nil
	}
	var at []int
	if j.keepAt > j.cached && j.keepAt < len(j.prompt) {
		at = append(at, j.keepAt)
	}
	if end := len(j.prompt) - checkpointBack; end >= checkpointBack && end > j.cached && end != j.keepAt {
		at = append(at, end)
	}
	slices.Sort(at)
	return at
}

// nextCheckpoint is the first checkpoint position past what the job has fed (0: none).
func (e *Engine) nextCheckpoint(j *job) int {
	for _, at := range e.checkpointsOf(j) {
		if at > j.fed {
			return at
		}
	}
	return 0
}

// isCheckpoint reports whether the job's prompt evaluation stops at position n for a checkpoint.
func (e *Engine) isCheckpoint(j *job, n int) bool {
	for _, at := range e.checkpointsOf(j) {
		if at == n {
			return true
		}
	}
	return false
}

// keepPosition is the prompt position of req.KeepPrefix's end in toks (0: none): the tokens the
// prefix alone tokenizes to, as far as the prompt's own tokens agree with them.
func (e *Engine) keepPosition(req engine.Request, toks []int32) (int, error) {
	if req.KeepPrefix == "" || req.PromptTokens != nil || !e.recurrent || e.opts.Checkpoints <= 0 {
		return 0, nil
	}
	if !strings.HasPrefix(req.Prompt, req.KeepPrefix) {
		return 0, fmt.Errorf("the prefix to keep a checkpoint after is not a prefix of the prompt")
	}
	prefix, err := e.model.Tokenize(req.KeepPrefix, true, true)
	if err != nil {
		return 0, fmt.Errorf("tokenize the prefix to keep a checkpoint after: %w", err)
	}
	return commonPrefix(prefix, toks), nil
}

// takeCheckpoint keeps the slot's recurrent state after its first n tokens (all it holds now). A
// state that cannot be read is no checkpoint; the request goes on either way.
func (e *Engine) takeCheckpoint(s *slot, n int) {
	state, err := e.lctx.PartialState(s.id)
	if err != nil {
		return
	}
	s.dropCheckpointsFrom(n)
	s.checkpoints = append(s.checkpoints, checkpoint{n: n, state: state})
	if over := len(s.checkpoints) - e.opts.Checkpoints; over > 0 {
		s.checkpoints = append(s.checkpoints[:0], s.checkpoints[over:]...)
	}
	e.checkpointsTaken.Add(1)
}

// cutSlot cuts the slot's sequence back to at most its first keep tokens and returns how many it
// holds then. A recurrent sequence goes back to its newest checkpoint within keep (restored, its
// cells cut there); without one it is emptied.
func (e *Engine) cutSlot(s *slot, keep int) (int, error) {
	for i := len(s.checkpoints) - 1; i >= 0; i-- {
		c := s.checkpoints[i]
		if c.n > keep {
			continue
		}
		if err := e.lctx.RestorePartialState(s.id, c.state); err != nil {
			break // the sequence was emptied
		}
		kept, err := e.lctx.TrimSequence(s.id, c.n)
		if err != nil {
			return 0, err
		}
		if kept {
			s.tokens = s.tokens[:c.n]
			s.dropCheckpointsFrom(c.n + 1)
			e.checkpointsRestored.Add(1)
			return c.n, nil
		}
		break // emptied by TrimSequence
	}
	kept, err := e.lctx.TrimSequence(s.id, keep)
	if err != nil {
		return 0, err
	}
	if !kept {
		keep = 0 // a recurrent model: the sequence was emptied
	}
	s.tokens = s.tokens[:min(keep, len(s.tokens))]
	s.dropCheckpointsFrom(keep + 1)
	return keep, nil
}

// dropCheckpointsFrom forgets the checkpoints of n tokens or more: the sequence no longer holds
// their tokens.
func (s *slot) dropCheckpointsFrom(n int) {
	keep := s.checkpoints[:0]
	for _, c := range s.checkpoints {
		if c.n < n {
			keep = append(keep, c)
		}
	}
	clear(s.checkpoints[len(keep):])
	s.checkpoints = keep
}
