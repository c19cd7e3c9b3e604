package server

import (
	"fmt"
	"net/http"

	"github.com/expertsniper/expertsniper/openai"
)

// handleHealth answers like llama-server: 503 while loading, 200 {"status":"ok"} after.
func (s *Server) handleHealth(w http.ResponseWriter, r *http.Request) {
	if s.engineOr503(w) == nil {
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ok"})
}

func (s *Server) handleModels(w http.ResponseWriter, r *http.Request) {
	l := s.engineOr503(w)
	if l == nil {
		return
	}
	info := l.info
	writeJSON(w, http.StatusOK, openai.ModelList{Object: "list", Data: []openai.Model{{
		ID: s.modelName(l), Object: "model", Created: s.started.Unix(), OwnedBy: "llamacpp",
		Meta: &openai.ModelMeta{VocabType: 2, NVocab: info.Vocab, NCtxTrain: info.ContextTrain, NEmbd: info.Embedding,
			NParams: info.Parameters, Size: info.SizeBytes},
	}}})
}

// handleProps is llama-server's GET /props, plus an "expertsniper" block with our mode.
func (s *Server) handleProps(w http.ResponseWriter, r *http.Request) {
	l := s.engineOr503(w)
	if l == nil {
		return
	}
	info := l.info
	writeJSON(w, http.StatusOK, map[string]any{
		"default_generation_settings": map[string]any{
			"id": 0, "id_task": -1, "n_ctx": info.Context, "speculative": false, "is_processing": false,
			"params": openai.ToGenerationSettings(defaultRequest(s.sampling), false),
		},
		"total_slots":   len(l.slots.slots),
		"model_path":    info.Path,
		"model_alias":   s.modelName(l),
		"chat_template": chatTemplateNote(info.HasChatTemplate),
		"modalities":    map[string]bool{"vision": false, "audio": false},
		"build_info":    s.cfg.Fingerprint,
		"expertsniper": map[string]any{
			"mode": info.Mode, "architecture": info.Architecture, "description": info.Description,
			"parameters": info.Parameters, "size_bytes": info.SizeBytes,
		},
	})
}

func chatTemplateNote(has bool) string {
	if has {
		return "(the model's own template)"
	}
	return "(no template in the model: ChatML fallback)"
}

// handleEmbeddings is POST /v1/embeddings; models without embeddings get 501 as from llama-server.
func (s *Server) handleEmbeddings(w http.ResponseWriter, r *http.Request) {
	l := s.engineOr503(w)
	if l == nil {
		return
	}
	var req openai.EmbeddingRequest
	if err := decodeJSON(r, &req); err != nil {
		fail(w, r, err)
		return
	}
	if len(req.Input) == 0 {
		fail(w, r, badRequest("input is required"))
		return
	}
	out := openai.EmbeddingList{Model: s.modelName(l), Object: "list", Data: []openai.Embedding{}}
	for i, text := range req.Input {
		vec, err := l.eng.Embed(r.Context(), text)
		if err != nil {
			fail(w, r, fmt.Errorf("embed input %d: %w", i, err))
			return
		}
		toks, _ := l.eng.Tokenize(text, true, false)
		out.Usage.PromptTokens += len(toks)
		out.Data = append(out.Data, openai.Embedding{Embedding: vec, Index: i, Object: "embedding"})
	}
	out.Usage.TotalTokens = out.Usage.PromptTokens
	writeJSON(w, http.StatusOK, out)
}
