package server

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"net/http"
	"strconv"
	"time"

	"github.com/expertsniper/expertsniper/engine"
	"github.com/expertsniper/expertsniper/openai"
)

// engineOr503 returns the loaded model, or answers 503 (loading) / 500 (failed to load).
func (s *Server) engineOr503(w http.ResponseWriter) *loaded {
	if l := s.eng.Load(); l != nil {
		return l
	}
	if errp := s.loadErr.Load(); errp != nil {
		writeError(w, http.StatusInternalServerError, errTypeServer, "the model failed to load: "+(*errp).Error())
		return nil
	}
	writeError(w, http.StatusServiceUnavailable, errTypeUnavailable, "Loading model")
	return nil
}

// generation is the outcome of one request on a slot.
type generation struct {
	res     engine.Result
	slot    int    // the slot the engine ran it in (-1 until known)
	resumed string // the saved context the slot was loaded from, if any
	pieces  int    // tokens delivered with text so far (the engine's Result.Tokens has them all)
}

// generate runs req: it loads a saved context first when one covers more of the prompt than any
// slot's cache does, then runs the engine, which queues the request (FIFO) for a slot. ctx is the
// client's: when it goes away the engine stops within a token and the slot is freed.
//
// hdr gets X-Context-Resumed after a resume, and X-Slot-Id before the first token is delivered
// (or, without tokens, once the engine is done): they reach the client with the response's first
// byte.
func (s *Server) generate(ctx context.Context, l *loaded, hdr http.Header, req engine.Request, stream bool, onToken func(engine.Token) error) (generation, error) {
	g := generation{slot: -1}
	if err := checkRequestFits(ctx, l, req); err != nil {
		return g, err
	}
	if req.Slot >= l.info.Slots {
		return g, badRequest("slot %d does not exist (the server has %d slots)", req.Slot, l.info.Slots)
	}
	if sc, ok := s.contexts.bestPrefix(req.Prompt); ok {
		slot, resumed, err := s.resume(ctx, l, req, sc)
		switch {
		case ctx.Err() != nil:
			return g, ctx.Err()
		case err != nil:
			s.log.Warn("resume from saved context failed; evaluating the whole prompt", "context", sc.Name, "error", err)
		case resumed:
			// Pinned to the slot holding the context: another request may take it first, and
			// then this one waits for it rather than evaluating the context again elsewhere.
			req.Slot, g.resumed = slot, sc.Name
			hdr.Set(resumedHeader, sc.Name)
			s.metrics.contextResumes.Add(1)
		}
	}
	ran := func(slot int) {
		if g.slot < 0 && slot >= 0 {
			g.slot = slot
			hdr.Set("X-Slot-Id", strconv.Itoa(slot))
		}
	}
	res, err := l.eng.Complete(ctx, req, func(t engine.Token) error {
		ran(t.Slot)
		g.pieces++
		s.metrics.tokensLive.Add(1)
		return onToken(t)
	})
	if err != nil {
		if errors.Is(err, context.Canceled) || ctx.Err() != nil {
			s.metrics.cancelled.Add(1)
		}
		return g, err
	}
	ran(res.Slot)
	s.metrics.record(res.Timings)
	g.res = res
	return g, nil
}

// resume loads the saved context sc into a slot when it covers more of req's prompt than the cache
// of any slot req may run in, and says which slot holds it. It skips a context that is being saved
// or deleted right now (the prompt is evaluated instead: no request waits for another's save).
func (s *Server) resume(ctx context.Context, l *loaded, req engine.Request, sc savedContext) (slot int, resumed bool, err error) {
	prompt := req.PromptTokens
	if prompt == nil {
		if prompt, err = l.eng.Tokenize(req.Prompt, true, true); err != nil {
			return 0, false, err
		}
	}
	if sc.Tokens <= longestCachedPrefix(l.eng.Slots(), req.Slot, prompt) {
		return 0, false, nil
	}
	unlock, ok := s.contexts.tryLock(contextKey(sc.Name))
	if !ok {
		return 0, false, fmt.Errorf("saved context %q is being changed", sc.Name)
	}
	defer unlock()
	if cur, err := s.contexts.get(sc.Name); err != nil || cur.Prompt != sc.Prompt {
		return 0, false, fmt.Errorf("saved context %q was deleted or replaced", sc.Name)
	}
	loaded, err := l.eng.LoadState(ctx, req.Slot, s.contexts.statePath(sc.Name))
	if err != nil {
		return 0, false, err
	}
	return loaded.Slot, true, nil
}

// longestCachedPrefix is the longest prefix of prompt that a slot a request may take holds: the
// slot it asks for, else the free slots (the engine gives it one of those at once), else all.
func longestCachedPrefix(r engine.SlotsReport, want int, prompt []int32) int {
	anyFree := busySlots(r) < len(r.Slots)
	best := 0
	for _, sl := range r.Slots {
		if (want >= 0 && sl.ID != want) || (want < 0 && anyFree && sl.Busy) {
			continue
		}
		n := 0
		for n < len(sl.Tokens) && n < len(prompt) && sl.Tokens[n] == prompt[n] {
			n++
		}
		best = max(best, n)
	}
	return best
}

// meta makes the identity shared by the events of one response.
func (s *Server) meta(l *loaded, prefix, requested string) openai.ResponseMeta {
	model := requested
	if model == "" {
		model = s.modelName(l)
	}
	return openai.ResponseMeta{ID: prefix + "-" + randomID(), Model: model, Created: time.Now().Unix(), Fingerprint: s.cfg.Fingerprint}
}

const idAlphabet = "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789"

func randomID() string {
	var b [32]byte
	rand.Read(b[:])
	for i := range b {
		b[i] = idAlphabet[int(b[i])%len(idAlphabet)]
	}
	return string(b[:])
}

func defaultRequest(sampling engine.Sampling) engine.Request {
	return engine.Request{Sampling: sampling, Slot: -1}
}

// resumedHeader tells a client that its prompt was resumed from a saved context.
const resumedHeader = "X-Context-Resumed"
