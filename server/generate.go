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
	slot    int
	resumed string // the saved context the slot was loaded from, if any
	pieces  int    // tokens delivered with text so far (the engine's Result.Tokens has them all)
}

// generate runs req on a slot: it waits for one (FIFO), loads a saved context when one covers more of
// the prompt than the slot's cache does, and runs the engine. ctx is the client's: when it goes away
// the engine stops within a token and the slot is freed.
//
// Before the engine starts, hdr gets X-Slot-Id and, after a resume, X-Context-Resumed; they reach the
// client with the first byte of the response.
func (s *Server) generate(ctx context.Context, l *loaded, hdr http.Header, req engine.Request, stream bool, onToken func(engine.Token) error) (generation, error) {
	var g generation
	if err := checkRequestFits(ctx, l, req); err != nil {
		return g, err
	}
	s.metrics.deferredWaits.Add(1)
	sl, err := l.slots.acquire(ctx, req.Prompt, req.Slot)
	s.metrics.deferredWaits.Add(-1)
	if err != nil {
		return g, err
	}
	defer l.slots.release(sl)
	g.slot = sl.id
	req.Slot = sl.id

	if sc, ok := s.contexts.bestPrefix(req.Prompt); ok && len(sc.Prompt) > commonPrefix(l.slots.cachedText(sl), req.Prompt) {
		if err := s.resume(ctx, l, sl, sc); err != nil {
			if ctx.Err() != nil {
				return g, err
			}
			s.log.Warn("resume from saved context failed; evaluating the whole prompt", "context", sc.Name, "error", err)
			l.slots.setCached(sl, "")
		} else {
			l.slots.setCached(sl, sc.Prompt)
			g.resumed = sc.Name
			s.metrics.contextResumes.Add(1)
		}
	}

	hdr.Set("X-Slot-Id", strconv.Itoa(sl.id))
	if g.resumed != "" {
		hdr.Set(resumedHeader, g.resumed)
	}
	params := openai.ToGenerationSettings(req, stream)
	l.slots.progress(sl, 0, params)
	res, err := l.eng.Complete(ctx, req, func(t engine.Token) error {
		g.pieces++
		s.metrics.tokensLive.Add(1)
		l.slots.progress(sl, g.pieces, params)
		return onToken(t)
	})
	if err != nil {
		if errors.Is(err, context.Canceled) || ctx.Err() != nil {
			s.metrics.cancelled.Add(1)
			l.slots.setCached(sl, req.Prompt) // the prompt was evaluated; the partial answer is not known here
		} else {
			l.slots.setCached(sl, "")
		}
		return g, err
	}
	l.slots.setCached(sl, req.Prompt+res.Text)
	l.slots.finished(sl, res.Timings.PromptTokens, res.Timings.CachedTokens)
	s.metrics.record(res.Timings)
	g.res = res
	return g, nil
}

// resume loads a saved context into sl, unless the context is being saved or deleted right now (then
// the prompt is evaluated instead: no request waits for another's save).
func (s *Server) resume(ctx context.Context, l *loaded, sl *slot, sc savedContext) error {
	unlock, ok := s.contexts.tryLock(contextKey(sc.Name))
	if !ok {
		return fmt.Errorf("saved context %q is being changed", sc.Name)
	}
	defer unlock()
	if cur, err := s.contexts.get(sc.Name); err != nil || cur.Prompt != sc.Prompt {
		return fmt.Errorf("saved context %q was deleted or replaced", sc.Name)
	}
	_, err := l.eng.LoadState(ctx, sl.id, s.contexts.statePath(sc.Name))
	return err
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
