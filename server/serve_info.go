package server

import (
	"fmt"
	"net/http"
	"strings"

	"github.com/expertsniper/expertsniper/engine"

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
	name := s.modelName(l)
	writeJSON(w, http.StatusOK, openai.ModelList{
		Models: []openai.OllamaModel{{Name: name, Model: name, Type: "model", Description: info.Description,
			Tags: []string{}, Capabilities: []string{"completion"},
			Details: openai.OllamaModelDetails{Format: "gguf", Family: info.Architecture, Families: []string{info.Architecture},
				QuantizationLevel: fileType(info)}}},
		Object: "list",
		Data: []openai.Model{{
			ID: name, Aliases: []string{name}, Tags: []string{}, Object: "model",
			Architecture: openai.Modalities{InputModalities: []string{"text"}, OutputModalities: []string{"text"}},
			Created:      s.started.Unix(), OwnedBy: "llamacpp",
			Meta: &openai.ModelMeta{VocabType: 2, NVocab: info.Vocab, NCtx: info.Context, NCtxTrain: info.ContextTrain,
				NEmbd: info.Embedding, NParams: info.Parameters, Size: info.SizeBytes, FType: fileType(info)},
		}},
	})
}

// fileType is the weight type from llama.cpp's model description ("qwen3moe 30B.A3B Q4_K - Medium").
func fileType(info engine.ModelInfo) string {
	desc, _, _ := strings.Cut(info.Description, " - ")
	fields := strings.Fields(desc)
	if len(fields) == 0 {
		return ""
	}
	return fields[len(fields)-1]
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
			"params": openai.ToGenerationSettings(defaultRequest(s.sampling), false),
			"n_ctx":  info.Context,
		},
		"total_slots":      l.info.Slots,
		"model_alias":      s.modelName(l),
		"model_ftype":      fileType(info),
		"model_path":       info.Path,
		"modalities":       map[string]bool{"vision": false, "video": false, "audio": false},
		"endpoint_slots":   true,
		"endpoint_props":   false,
		"endpoint_metrics": true,
		"ui":               true,
		"chat_template":    chatTemplateNote(info.HasChatTemplate),
		"build_info":       s.cfg.Fingerprint,
		"is_sleeping":      false,
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
	if !s.cfg.Embeddings {
		writeError(w, http.StatusNotImplemented, errTypeNotSupported,
			"This server does not support embeddings. Start it with `--embeddings`")
		return
	}
	var req openai.EmbeddingRequest
	if err := decodeJSON(r, &req); err != nil {
		fail(w, r, err)
		return
	}
	useBase64, err := req.Base64Encoding()
	if err != nil {
		fail(w, r, err)
		return
	}
	switch {
	case len(req.Input) == 0:
		fail(w, r, badRequest("input is required: a string or a non-empty array of strings"))
		return
	case len(req.Input) > maxEmbeddingInputs:
		fail(w, r, badRequest("input has %d entries; at most %d are accepted", len(req.Input), maxEmbeddingInputs))
		return
	}
	for i, text := range req.Input {
		if text == "" {
			fail(w, r, badRequest("input[%d] is empty: there is nothing to embed", i))
			return
		}
		if len(text) > maxPromptBytes(l) {
			fail(w, r, &apiError{status: http.StatusBadRequest, typ: errTypeExceedsContext, nCtx: l.info.Context,
				message: fmt.Sprintf("input[%d] (%d bytes) exceeds the available context size (%d tokens)", i, len(text), l.info.Context)})
			return
		}
	}
	out := openai.EmbeddingList{Model: s.modelName(l), Object: "list", Data: []openai.Embedding{}}
	for i, text := range req.Input {
		vec, err := l.eng.Embed(r.Context(), text)
		if err != nil {
			fail(w, r, fmt.Errorf("embed input %d: %w", i, err))
			return
		}
		openai.NormalizeL2(vec)
		toks, _ := l.eng.Tokenize(text, true, false)
		out.Usage.PromptTokens += len(toks)
		out.Data = append(out.Data, openai.Embedding{Embedding: openai.EmbeddingVector{Values: vec, Base64: useBase64}, Index: i, Object: "embedding"})
	}
	out.Usage.TotalTokens = out.Usage.PromptTokens
	writeJSON(w, http.StatusOK, out)
}
