package server

import (
	"errors"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"time"

	"github.com/expertsniper/expertsniper/engine"
	"github.com/expertsniper/expertsniper/openai"
)

// The engine owns the slots and the queue of requests waiting for one (engine.Engine.Slots); the
// server only shows them (GET /slots, /metrics, /stats) and forwards llama-server's slot actions.

// slotView is one entry of GET /slots, shaped like llama-server's: n_prompt_tokens is what the
// slot's cache holds (its prompt and what it generated), the other counts are of its running or
// last task.
type slotView struct {
	ID                     int                       `json:"id"`
	NCtx                   int                       `json:"n_ctx"`
	Speculative            bool                      `json:"speculative"`
	IsProcessing           bool                      `json:"is_processing"`
	IDTask                 int64                     `json:"id_task"`
	NPromptTokens          int                       `json:"n_prompt_tokens"`
	NPromptTokensProcessed int                       `json:"n_prompt_tokens_processed"`
	NPromptTokensCache     int                       `json:"n_prompt_tokens_cache"`
	Params                 openai.GenerationSettings `json:"params"`
	NextToken              []slotNextToken           `json:"next_token"`
}

type slotNextToken struct {
	HasNextToken bool `json:"has_next_token"`
	HasNewLine   bool `json:"has_new_line"`
	NRemain      int  `json:"n_remain"`
	NDecoded     int  `json:"n_decoded"`
}

// busySlots counts the slots a request runs in.
func busySlots(r engine.SlotsReport) int {
	n := 0
	for _, s := range r.Slots {
		if s.Busy {
			n++
		}
	}
	return n
}

func (s *Server) handleSlots(w http.ResponseWriter, r *http.Request) {
	l := s.engineOr503(w)
	if l == nil {
		return
	}
	report := l.eng.Slots()
	views := make([]slotView, 0, len(report.Slots))
	for _, sl := range report.Slots {
		params := openai.ToGenerationSettings(defaultRequest(s.sampling), false)
		if sl.Task > 0 {
			params = openai.ToGenerationSettings(sl.Request, sl.Request.Stream)
		}
		remain := -1
		if params.NPredict > 0 {
			remain = params.NPredict - sl.Decoded
		}
		views = append(views, slotView{ID: sl.ID, NCtx: l.info.Context, IsProcessing: sl.Busy, IDTask: sl.Task,
			NPromptTokens: len(sl.Tokens), NPromptTokensProcessed: sl.PromptTokens, NPromptTokensCache: sl.CachedTokens,
			Params: params, NextToken: []slotNextToken{{HasNextToken: sl.Busy, NRemain: remain, NDecoded: sl.Decoded}}})
	}
	writeJSON(w, http.StatusOK, views)
}

// slotFileRequest is the body of POST /slots/{id}?action=save|restore.
type slotFileRequest struct {
	Filename string `json:"filename"`
}

// handleSlotAction saves what a slot holds to a file in the slot directory, restores one, or
// empties the slot, as llama-server's /slots/{id}?action=save|restore|erase do. Each waits until
// the slot is free.
func (s *Server) handleSlotAction(w http.ResponseWriter, r *http.Request) {
	l := s.engineOr503(w)
	if l == nil {
		return
	}
	id, err := strconv.Atoi(r.PathValue("id"))
	if err != nil || id < 0 || id >= l.info.Slots {
		fail(w, r, badRequest("slot id %q is not one of 0..%d", r.PathValue("id"), l.info.Slots-1))
		return
	}
	action := r.URL.Query().Get("action")
	start := time.Now()
	switch action {
	case "save", "restore":
	case "erase":
		n, err := l.eng.EraseSlot(r.Context(), id)
		if err != nil {
			fail(w, r, fmt.Errorf("erase slot %d: %w", id, err))
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"id_slot": id, "n_erased": n})
		return
	default:
		fail(w, r, badRequest("action must be save, restore or erase, got %q", action))
		return
	}
	var req slotFileRequest
	if err := decodeJSON(r, &req); err != nil {
		fail(w, r, err)
		return
	}
	if err := validName("filename", req.Filename); err != nil {
		fail(w, r, err)
		return
	}
	unlock, err := s.contexts.lock(r.Context(), slotKey(req.Filename))
	if err != nil {
		fail(w, r, err)
		return
	}
	defer unlock()
	path := s.contexts.slotFile(req.Filename)
	if action == "save" {
		tmp, err := newTempFile(s.contexts.slotDir())
		if err != nil {
			fail(w, r, fmt.Errorf("save slot %d to %q: %w", id, req.Filename, err))
			return
		}
		saved, err := l.eng.SaveSlot(r.Context(), id, tmp)
		if err == nil {
			err = s.contexts.commitSlotFile(req.Filename, tmp)
		}
		if err != nil {
			os.Remove(tmp)
			if errors.Is(err, engine.ErrSlotEmpty) {
				fail(w, r, badRequest("slot %d holds nothing to save", id))
				return
			}
			fail(w, r, fmt.Errorf("save slot %d to %q: %w", id, req.Filename, err))
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"id_slot": id, "filename": req.Filename, "n_saved": saved.Tokens,
			"n_written": fileSize(path), "timings": map[string]float64{"save_ms": msSince(start)}})
		return
	}
	if err := s.contexts.checkSlotFile(req.Filename); err != nil {
		fail(w, r, err)
		return
	}
	loaded, err := l.eng.LoadState(r.Context(), id, path)
	if err != nil {
		fail(w, r, fmt.Errorf("restore slot %d from %q: %w", id, req.Filename, err))
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"id_slot": id, "filename": req.Filename, "n_restored": loaded.Tokens,
		"n_read": fileSize(path), "timings": map[string]float64{"restore_ms": msSince(start)}})
}

func msSince(t time.Time) float64 { return float64(time.Since(t).Microseconds()) / 1000 }
