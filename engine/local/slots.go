package local

import (
	"context"
	"fmt"
	"slices"

	"github.com/expertsniper/expertsniper/engine"
)

// What the engine tells about its slots (Slots, for /slots, /metrics and /stats) and the calls that
// work on one slot's cache as it is (SaveSlot, EraseSlot, for llama-server's /slots actions). The
// loop owns the slots; it publishes a copy of their state after every step and every job's end.

// slotTask describes the job running in a slot, or the last one.
type slotTask struct {
	task                    int64
	req                     engine.Request // without its prompt
	prompt, cached, decoded int
}

// note copies the running completion's progress into s.last. Called by the loop.
func (s *slot) note() {
	if j := s.job; j != nil && j.generate {
		s.last.prompt, s.last.cached, s.last.decoded = j.fed-j.cached, j.cached, j.nGen
	}
}

// publishSlots copies the slots' state for Slots (the loop owns the slots themselves).
func (e *Engine) publishSlots() {
	e.mu.Lock()
	defer e.mu.Unlock()
	for i, s := range e.slots {
		s.note()
		e.published[i] = engine.SlotState{ID: s.id, Busy: s.job != nil, Tokens: append(e.published[i].Tokens[:0], s.tokens...),
			Task: s.last.task, PromptTokens: s.last.prompt, CachedTokens: s.last.cached, Decoded: s.last.decoded, Request: s.last.req}
	}
}

// Slots reports every slot (as of the last step) and the requests waiting for one.
func (e *Engine) Slots() engine.SlotsReport {
	e.mu.Lock()
	defer e.mu.Unlock()
	out := engine.SlotsReport{Slots: make([]engine.SlotState, len(e.published)), Queued: len(e.queue)}
	for i, s := range e.published {
		s.Tokens = slices.Clone(s.Tokens)
		out.Slots[i] = s
	}
	return out
}

// SaveSlot writes what the slot holds to path, once the slot is free.
func (e *Engine) SaveSlot(ctx context.Context, slotID int, path string) (engine.StateInfo, error) {
	info := engine.StateInfo{Slot: slotID}
	if err := e.checkOneSlot(slotID); err != nil {
		return info, fmt.Errorf("save slot: %w", err)
	}
	j := &job{want: slotID, asIs: true, onSlot: func(s *slot) error {
		if len(s.tokens) == 0 {
			return fmt.Errorf("%w (slot %d)", engine.ErrSlotEmpty, s.id)
		}
		info.Tokens = len(s.tokens)
		return e.lctx.SaveSequence(s.id, path, s.tokens)
	}}
	if err := e.submit(ctx, j, nil); err != nil {
		return info, fmt.Errorf("save slot: %w", err)
	}
	return info, nil
}

// EraseSlot empties the slot's cache, once the slot is free, and returns how many tokens it held.
func (e *Engine) EraseSlot(ctx context.Context, slotID int) (int, error) {
	if err := e.checkOneSlot(slotID); err != nil {
		return 0, fmt.Errorf("erase slot: %w", err)
	}
	erased := 0
	j := &job{want: slotID, asIs: true, onSlot: func(s *slot) error {
		if _, err := e.lctx.TrimSequence(s.id, 0); err != nil {
			return err
		}
		erased, s.tokens = len(s.tokens), s.tokens[:0]
		s.dropCheckpointsFrom(0)
		return nil
	}}
	if err := e.submit(ctx, j, nil); err != nil {
		return 0, fmt.Errorf("erase slot: %w", err)
	}
	return erased, nil
}

// checkOneSlot refuses anything but one of the engine's slots (-1, any, included).
func (e *Engine) checkOneSlot(want int) error {
	if want < 0 || want >= len(e.slots) {
		return fmt.Errorf("slot %d does not exist (the engine has %d: 0..%d)", want, len(e.slots), len(e.slots)-1)
	}
	return nil
}
