package server

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"
	"time"
	"unicode/utf8"

	"github.com/expertsniper/expertsniper/engine"
)

// Bounds on the work one request can cause. llama.cpp's tokenizer splits special tokens out of the
// text in time that grows with the square of their number (100,000 chat messages took minutes), and
// a C call cannot be interrupted: so what cannot fit is refused before anything is tokenized, and the
// rest is tokenized in pieces, checking between them whether the client is still there.
const (
	// maxMessages bounds a chat request's messages (llama-server has no bound; 4096 turns is far
	// beyond any context we serve).
	maxMessages = 4096
	// maxBytesPerToken is more than any vocabulary's token covers in practice (English text averages
	// about 4 bytes a token): a prompt longer than Context × this cannot fit, and is refused unread.
	maxBytesPerToken = 64
	// tokenizeChunkBytes is the piece tokenized between two checks of the request's context.
	tokenizeChunkBytes = 64 << 10
	// boundarySlack is how many tokens a cut between two pieces may add (a merge across the cut
	// undone, a space prefix): counts near the limit are redone on the whole text.
	boundarySlack = 4
	// maxTokenPieces bounds /tokenize with_pieces: each piece costs a call and a string, and the
	// answer grows to a dozen times the text.
	maxTokenPieces = 1 << 16
	// maxEmbeddingInputs is OpenAI's own bound on one request's inputs.
	maxEmbeddingInputs = 2048
)

// DefaultBodyReadTimeout is how long a client may take to send a request body.
const DefaultBodyReadTimeout = 60 * time.Second

func checkMessageCount(field string, n int) error {
	if n > maxMessages {
		return badRequest("%s has %d entries; at most %d are accepted", field, n, maxMessages)
	}
	return nil
}

// maxPromptBytes is the longest text that could fit in a slot's context.
func maxPromptBytes(l *loaded) int { return l.info.Context * maxBytesPerToken }

func contextFull(n, nCtx int, atLeast bool) *apiError {
	count := fmt.Sprintf("%d tokens", n)
	if atLeast {
		count = fmt.Sprintf("at least %d tokens", n)
	}
	return &apiError{status: http.StatusBadRequest, typ: errTypeExceedsContext, nPrompt: n, nCtx: nCtx,
		message: fmt.Sprintf("request (%s) exceeds the available context size (%d tokens), try increasing it", count, nCtx)}
}

// checkRequestFits is checkFits for a request, whose prompt may be token ids (counted as they are).
func checkRequestFits(ctx context.Context, l *loaded, req engine.Request) error {
	if req.PromptTokens != nil {
		if n := len(req.PromptTokens); n >= l.info.Context {
			return contextFull(n, l.info.Context, false)
		}
		return nil
	}
	return checkFits(ctx, l, req.Prompt)
}

// checkFits refuses a prompt that cannot fit in a slot before it waits for one, with the counts
// llama-server reports. The engine checks again (ErrContextFull) with its exact accounting.
func checkFits(ctx context.Context, l *loaded, prompt string) error {
	nCtx := l.info.Context
	if len(prompt) > maxPromptBytes(l) {
		return &apiError{status: http.StatusBadRequest, typ: errTypeExceedsContext, nCtx: nCtx,
			message: fmt.Sprintf("request (%d bytes of prompt) exceeds the available context size (%d tokens, at most %d bytes), try increasing it",
				len(prompt), nCtx, maxPromptBytes(l))}
	}
	n, exact, err := countTokens(ctx, l.eng, prompt, nCtx)
	if err != nil {
		return err
	}
	if n >= nCtx {
		return contextFull(n, nCtx, !exact)
	}
	return nil
}

// countTokens counts text's tokens (with BOS, special tokens parsed, as a prompt is evaluated). A
// long text is tokenized in pieces cut after a newline, checking ctx between them and stopping once
// the count is surely past limit; then exact is false and n is a lower bound. A count that ends near
// the limit is redone on the whole text, so that the decision is the exact one.
func countTokens(ctx context.Context, eng engine.Engine, text string, limit int) (n int, exact bool, err error) {
	if len(text) <= tokenizeChunkBytes {
		toks, err := eng.Tokenize(text, true, true)
		if err != nil {
			return 0, false, fmt.Errorf("tokenize the prompt: %w", err)
		}
		return len(toks), true, nil
	}
	cuts := 0
	for rest := text; rest != ""; cuts++ {
		if err := ctx.Err(); err != nil {
			return n, false, fmt.Errorf("tokenize the prompt: %w", err)
		}
		piece := rest[:cutPoint(rest, tokenizeChunkBytes)]
		rest = rest[len(piece):]
		toks, err := eng.Tokenize(piece, cuts == 0, true)
		if err != nil {
			return 0, false, fmt.Errorf("tokenize the prompt: %w", err)
		}
		n += len(toks)
		if n > limit+boundarySlack*(cuts+1) {
			return n - boundarySlack*(cuts+1), false, nil
		}
	}
	if n+boundarySlack*cuts < limit {
		return n, false, nil // fits whatever the cuts did
	}
	toks, err := eng.Tokenize(text, true, true)
	if err != nil {
		return 0, false, fmt.Errorf("tokenize the prompt: %w", err)
	}
	return len(toks), true, nil
}

// cutPoint is where the first piece of s ends: after the last newline within max bytes, else at the
// last character boundary.
func cutPoint(s string, max int) int {
	if len(s) <= max {
		return len(s)
	}
	if i := strings.LastIndexByte(s[:max], '\n'); i > 0 {
		return i + 1
	}
	i := max
	for i > 0 && !utf8.RuneStart(s[i]) {
		i--
	}
	if i == 0 {
		return max
	}
	return i
}

// withBodyReadTimeout gives a client BodyReadTimeout to send its request body; a body that trickles
// in (one byte a second) is cut off with 408 instead of holding a connection and a handler for ever.
// The deadline is lifted once the body is read: the server then watches the connection for the
// client leaving, and a generation may run far longer than the upload took.
func (s *Server) withBodyReadTimeout(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Body == nil || r.Body == http.NoBody {
			next.ServeHTTP(w, r)
			return
		}
		rc := http.NewResponseController(w)
		if err := rc.SetReadDeadline(time.Now().Add(s.cfg.BodyReadTimeout)); err == nil {
			r.Body = &deadlineBody{ReadCloser: r.Body, lift: func() { rc.SetReadDeadline(time.Time{}) }}
		}
		next.ServeHTTP(w, r)
	})
}

// deadlineBody lifts the connection's read deadline when the body has been read to its end.
type deadlineBody struct {
	io.ReadCloser
	lift   func()
	lifted bool
}

func (b *deadlineBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err == io.EOF && !b.lifted {
		b.lifted = true
		b.lift()
	}
	return n, err
}

// bodyTimedOut tells whether err is a body read cut off by withBodyReadTimeout.
func bodyTimedOut(err error) bool { return errors.Is(err, os.ErrDeadlineExceeded) }
