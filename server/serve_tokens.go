package server

import (
	"fmt"
	"net/http"

	"github.com/expertsniper/expertsniper/openai"
)

// handleTokenize is llama-server's POST /tokenize.
func (s *Server) handleTokenize(w http.ResponseWriter, r *http.Request) {
	l := s.engineOr503(w)
	if l == nil {
		return
	}
	var req openai.TokenizeRequest
	if err := decodeJSON(r, &req); err != nil {
		fail(w, r, err)
		return
	}
	if req.Content == nil {
		fail(w, r, badRequest("content is required"))
		return
	}
	if len(*req.Content) > maxTokenizeBytes(l) {
		fail(w, r, badRequest("content is %d bytes; at most %d are tokenized (%d tokens of context × %d)",
			len(*req.Content), maxTokenizeBytes(l), l.info.Context, maxBytesPerToken))
		return
	}
	parseSpecial := true
	if req.ParseSpecial != nil {
		parseSpecial = *req.ParseSpecial
	}
	toks, err := l.eng.Tokenize(*req.Content, req.AddSpecial, parseSpecial)
	if err != nil {
		fail(w, r, fmt.Errorf("tokenize: %w", err))
		return
	}
	if !req.WithPieces {
		writeJSON(w, http.StatusOK, map[string]any{"tokens": nonNil(toks)})
		return
	}
	if len(toks) > maxTokenPieces {
		fail(w, r, badRequest("with_pieces is limited to %d tokens; the content has %d (ask without with_pieces, or in parts)", maxTokenPieces, len(toks)))
		return
	}
	pieces := make([]openai.TokenPiece, 0, len(toks))
	for _, t := range toks {
		p, err := l.eng.Detokenize([]int32{t})
		if err != nil {
			fail(w, r, fmt.Errorf("detokenize token %d: %w", t, err))
			return
		}
		pieces = append(pieces, openai.TokenPiece{ID: t, Piece: p})
	}
	writeJSON(w, http.StatusOK, map[string]any{"tokens": pieces})
}

// handleDetokenize is llama-server's POST /detokenize.
func (s *Server) handleDetokenize(w http.ResponseWriter, r *http.Request) {
	l := s.engineOr503(w)
	if l == nil {
		return
	}
	var req openai.DetokenizeRequest
	if err := decodeJSON(r, &req); err != nil {
		fail(w, r, err)
		return
	}
	text, err := l.eng.Detokenize(req.Tokens)
	if err != nil {
		fail(w, r, badRequest("detokenize: %v", err))
		return
	}
	writeJSON(w, http.StatusOK, map[string]any{"content": text})
}

// handleApplyTemplate is llama-server's POST /apply-template: the prompt a chat request would run.
func (s *Server) handleApplyTemplate(w http.ResponseWriter, r *http.Request) {
	l := s.engineOr503(w)
	if l == nil {
		return
	}
	// The whole chat body, as llama-server takes it: tools and tool calls render too.
	var req openai.ChatCompletionRequest
	if err := decodeJSON(r, &req); err != nil {
		fail(w, r, err)
		return
	}
	if err := checkMessageCount("messages", len(req.Messages)); err != nil {
		fail(w, r, err)
		return
	}
	call, err := openai.FromChatRequest(req, s.sampling)
	if err != nil {
		fail(w, r, err)
		return
	}
	if _, err := s.renderChat(l, &call); err != nil {
		fail(w, r, err)
		return
	}
	prompt := call.Request.Prompt
	writeJSON(w, http.StatusOK, map[string]any{"prompt": prompt})
}

// maxTokenizeBytes bounds /tokenize's content: what a slot could hold, and at least 1 MiB.
func maxTokenizeBytes(l *loaded) int { return max(maxPromptBytes(l), 1<<20) }

func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}
