package server

import (
	"context"
	"fmt"
	"net/http"
	"os"
	"strconv"
	"sync"
	"time"

	"github.com/expertsniper/expertsniper/openai"
)

// slot is the server's view of one engine slot: whether a request holds it and what its KV cache
// holds, so that a new request goes where most of its prompt is already evaluated.
type slot struct {
	id int
	// Fields below are guarded by slotPool.mu.
	busy     bool
	cached   string // the text the slot's KV cache holds (prompt and generation of its last task)
	task     int64
	decoded  int
	nPrompt  int // prompt tokens of the last task, evaluated and cached
	nCached  int
	params   openai.GenerationSettings
	lastUsed time.Time
}

// slotPool hands slots to requests; when all are busy, requests wait in FIFO order (or until their
// client goes away). A request may ask for one slot by id.
type slotPool struct {
	mu       sync.Mutex
	slots    []*slot
	waiters  []*slotWaiter
	nextTask int64
}

type slotWaiter struct {
	want int
	ch   chan *slot // buffered: release never blocks
}

func newSlotPool(n int) *slotPool {
	p := &slotPool{}
	for i := 0; i < n; i++ {
		p.slots = append(p.slots, &slot{id: i})
	}
	return p
}

func commonPrefix(a, b string) int {
	n := 0
	for n < len(a) && n < len(b) && a[n] == b[n] {
		n++
	}
	return n
}

// pick returns the best free slot for prompt: the requested one, else the one whose cache shares
// the longest prefix with the prompt, else the least recently used. Caller holds mu.
func (p *slotPool) pick(prompt string, want int) *slot {
	if want >= 0 {
		if s := p.slots[want]; !s.busy {
			return s
		}
		return nil
	}
	var best *slot
	bestPrefix := -1
	for _, s := range p.slots {
		if s.busy {
			continue
		}
		n := commonPrefix(s.cached, prompt)
		if n > bestPrefix || (n == bestPrefix && s.lastUsed.Before(best.lastUsed)) {
			best, bestPrefix = s, n
		}
	}
	return best
}

// acquire waits for a slot. want = -1 takes any.
func (p *slotPool) acquire(ctx context.Context, prompt string, want int) (*slot, error) {
	p.mu.Lock()
	if want >= len(p.slots) {
		p.mu.Unlock()
		return nil, badRequest("slot %d does not exist (the server has %d slots)", want, len(p.slots))
	}
	// A free slot can be taken at once even when others wait: release hands every slot to the first
	// waiter that can use it, so a slot stays free only while all waiters want other, busy slots.
	if s := p.pick(prompt, want); s != nil {
		p.take(s, prompt)
		p.mu.Unlock()
		return s, nil
	}
	w := &slotWaiter{want: want, ch: make(chan *slot, 1)}
	p.waiters = append(p.waiters, w)
	p.mu.Unlock()

	select {
	case s := <-w.ch:
		return s, nil
	case <-ctx.Done():
		p.mu.Lock()
		for i, x := range p.waiters {
			if x == w {
				p.waiters = append(p.waiters[:i], p.waiters[i+1:]...)
				p.mu.Unlock()
				return nil, ctx.Err()
			}
		}
		p.mu.Unlock()
		// A slot was handed to us just as the client left: pass it on.
		p.release(<-w.ch)
		return nil, ctx.Err()
	}
}

// take marks s busy for a new task. Caller holds mu.
func (p *slotPool) take(s *slot, prompt string) {
	s.busy = true
	p.nextTask++
	s.task = p.nextTask
	s.decoded = 0
}

// finished records the prompt accounting of a slot's task.
func (p *slotPool) finished(s *slot, prompt, cached int) {
	p.mu.Lock()
	s.nPrompt, s.nCached = prompt, cached
	p.mu.Unlock()
}

// release frees s, or hands it straight to the first waiter that can use it.
func (p *slotPool) release(s *slot) {
	p.mu.Lock()
	defer p.mu.Unlock()
	s.busy = false
	s.lastUsed = time.Now()
	for i, w := range p.waiters {
		if w.want < 0 || w.want == s.id {
			p.waiters = append(p.waiters[:i], p.waiters[i+1:]...)
			p.take(s, "")
			w.ch <- s
			return
		}
	}
}

// setCached records what the slot's cache holds after a task.
func (p *slotPool) setCached(s *slot, text string) {
	p.mu.Lock()
	s.cached = text
	p.mu.Unlock()
}

func (p *slotPool) cachedText(s *slot) string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return s.cached
}

func (p *slotPool) progress(s *slot, decoded int, params openai.GenerationSettings) {
	p.mu.Lock()
	s.decoded = decoded
	s.params = params
	p.mu.Unlock()
}

// counts reports busy slots and waiting requests.
func (p *slotPool) counts() (busy, waiting int) {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, s := range p.slots {
		if s.busy {
			busy++
		}
	}
	return busy, len(p.waiters)
}

func truncate(s string, n int) string {
	if len(s) <= n {
		return s
	}
	return s[:n]
}

// slotView is one entry of GET /slots, shaped like llama-server's.
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

func (s *Server) handleSlots(w http.ResponseWriter, r *http.Request) {
	l := s.engineOr503(w)
	if l == nil {
		return
	}
	l.slots.mu.Lock()
	views := make([]slotView, 0, len(l.slots.slots))
	for _, sl := range l.slots.slots {
		params := sl.params
		if params.Stop == nil {
			params = openai.ToGenerationSettings(defaultRequest(s.sampling), false)
		}
		remain := -1
		if params.NPredict > 0 {
			remain = params.NPredict - sl.decoded
		}
		views = append(views, slotView{ID: sl.id, NCtx: l.info.Context, IsProcessing: sl.busy, IDTask: sl.task,
			NPromptTokens: sl.nPrompt + sl.nCached, NPromptTokensProcessed: sl.nPrompt, NPromptTokensCache: sl.nCached,
			Params: params, NextToken: []slotNextToken{{HasNextToken: sl.busy, NRemain: remain, NDecoded: sl.decoded}}})
	}
	l.slots.mu.Unlock()
	writeJSON(w, http.StatusOK, views)
}

// slotFileRequest is the body of POST /slots/{id}?action=save|restore.
type slotFileRequest struct {
	Filename string `json:"filename"`
}

// handleSlotAction saves a slot's KV cache to a file in the slot directory, or restores one, as
// llama-server's /slots/{id}?action=save|restore do.
func (s *Server) handleSlotAction(w http.ResponseWriter, r *http.Request) {
	l := s.engineOr503(w)
	if l == nil {
		return
	}
	id, err := strconv.Atoi(r.PathValue("id"))
	if err != nil || id < 0 || id >= len(l.slots.slots) {
		fail(w, r, badRequest("slot id %q is not one of 0..%d", r.PathValue("id"), len(l.slots.slots)-1))
		return
	}
	action := r.URL.Query().Get("action")
	if action != "save" && action != "restore" {
		if action == "erase" {
			fail(w, r, &apiError{status: http.StatusNotImplemented, typ: errTypeNotSupported,
				message: "action=erase is not supported: a slot's cache is reused by prefix and needs no erasing"})
			return
		}
		fail(w, r, badRequest("action must be save or restore, got %q", action))
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
	sl, err := l.slots.acquire(r.Context(), "", id)
	if err != nil {
		fail(w, r, err)
		return
	}
	defer l.slots.release(sl)
	start := time.Now()
	switch action {
	case "save":
		text := l.slots.cachedText(sl)
		if text == "" {
			fail(w, r, badRequest("slot %d holds nothing to save", id))
			return
		}
		tmp, err := newTempFile(s.contexts.slotDir())
		if err != nil {
			fail(w, r, fmt.Errorf("save slot %d to %q: %w", id, req.Filename, err))
			return
		}
		n, err := l.eng.SaveState(r.Context(), id, text, tmp)
		if err == nil {
			err = s.contexts.commitSlotFile(req.Filename, tmp, text)
		}
		if err != nil {
			os.Remove(tmp)
			fail(w, r, fmt.Errorf("save slot %d to %q: %w", id, req.Filename, err))
			return
		}
		writeJSON(w, http.StatusOK, map[string]any{"id_slot": id, "filename": req.Filename, "n_saved": n,
			"n_written": fileSize(path), "timings": map[string]float64{"save_ms": msSince(start)}})
	case "restore":
		text, err := s.contexts.readSlotText(req.Filename)
		if err != nil {
			fail(w, r, err)
			return
		}
		n, err := l.eng.LoadState(r.Context(), id, path)
		if err != nil {
			l.slots.setCached(sl, "")
			fail(w, r, fmt.Errorf("restore slot %d from %q: %w", id, req.Filename, err))
			return
		}
		l.slots.setCached(sl, text)
		writeJSON(w, http.StatusOK, map[string]any{"id_slot": id, "filename": req.Filename, "n_restored": n,
			"n_read": fileSize(path), "timings": map[string]float64{"restore_ms": msSince(start)}})
	}
}

func msSince(t time.Time) float64 { return float64(time.Since(t).Microseconds()) / 1000 }
