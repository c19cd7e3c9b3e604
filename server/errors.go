package server

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strings"
	"unicode"

	"github.com/expertsniper/expertsniper/engine"
	"github.com/expertsniper/expertsniper/openai"
)

// Error types, as llama-server names them.
const (
	errTypeInvalidRequest  = "invalid_request_error"
	errTypeAuthentication  = "authentication_error"
	errTypeNotFound        = "not_found_error"
	errTypeServer          = "server_error"
	errTypePermission      = "permission_error"
	errTypeUnavailable     = "unavailable_error"
	errTypeNotSupported    = "not_supported_error"
	errTypeExceedsContext  = "exceed_context_size_error"
	errTypeRequestTooLarge = "request_too_large"
)

// apiError is an error with the HTTP answer it deserves.
type apiError struct {
	status  int
	typ     string
	message string
	nPrompt int
	nCtx    int
}

func (e *apiError) Error() string { return e.message }

func (e *apiError) body() openai.ErrorResponse {
	return openai.ErrorResponse{Error: openai.ErrorBody{Code: e.status, Message: e.message, Type: e.typ,
		NPromptTokens: e.nPrompt, NCtx: e.nCtx}}
}

func badRequest(format string, args ...any) *apiError {
	return &apiError{status: http.StatusBadRequest, typ: errTypeInvalidRequest, message: fmt.Sprintf(format, args...)}
}

// toAPIError decides the status of any error a handler meets.
func toAPIError(err error) *apiError {
	var (
		ae        *apiError
		reqErr    *openai.RequestError
		syntaxErr *json.SyntaxError
		typeErr   *json.UnmarshalTypeError
		tooBig    *http.MaxBytesError
	)
	switch {
	case errors.As(err, &ae):
		return ae
	case errors.As(err, &tooBig):
		return &apiError{status: http.StatusRequestEntityTooLarge, typ: errTypeRequestTooLarge,
			message: fmt.Sprintf("request body is larger than the limit of %d bytes", tooBig.Limit)}
	case bodyTimedOut(err):
		return &apiError{status: http.StatusRequestTimeout, typ: errTypeInvalidRequest,
			message: "the request body was not received in time"}
	case errors.As(err, &reqErr):
		return badRequest("%s", reqErr.Error())
	case errors.As(err, &syntaxErr):
		return badRequest("invalid JSON at byte %d: %v", syntaxErr.Offset, syntaxErr)
	case errors.As(err, &typeErr):
		field := jsonFieldPath(typeErr.Field)
		if field == "" {
			field = "body"
		}
		return badRequest("field %q must be %s, got JSON %s", field, jsonTypeName(typeErr.Type.String()), typeErr.Value)
	case errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, io.EOF):
		return badRequest("invalid JSON: the body ends early")
	case errors.Is(err, engine.ErrContextFull):
		return &apiError{status: http.StatusBadRequest, typ: errTypeExceedsContext, message: err.Error()}
	case errors.Is(err, engine.ErrSlotEmpty):
		return badRequest("%v", err)
	case errors.Is(err, engine.ErrNotSupported):
		return &apiError{status: http.StatusNotImplemented, typ: errTypeNotSupported, message: err.Error()}
	case errors.Is(err, context.DeadlineExceeded), isUnavailable(err):
		return &apiError{status: http.StatusServiceUnavailable, typ: errTypeUnavailable, message: err.Error()}
	}
	// Field-level decode errors from our own UnmarshalJSON methods look like
	// "json: ... : must be a string or ..."; they are the client's fault.
	if strings.HasPrefix(err.Error(), "json: ") || strings.Contains(err.Error(), "must be a") {
		return badRequest("%v", err)
	}
	return &apiError{status: http.StatusInternalServerError, typ: errTypeServer, message: err.Error()}
}

// isUnavailable reports whether err says that something the engine needs is down (e.g. an RPC worker:
// ggmlrpc.WorkerError), which is the server's trouble for now, not the client's fault.
func isUnavailable(err error) bool {
	var u interface{ Unavailable() bool }
	return errors.As(err, &u) && u.Unavailable()
}

// jsonFieldPath turns encoding/json's field path into the client's JSON names: the path includes the
// Go names of embedded structs ("SamplingParams.temperature"), which mean nothing to a client. Every
// JSON name of this API is lower case, so segments that start with a capital are Go's.
func jsonFieldPath(path string) string {
	var out []string
	for _, seg := range strings.Split(path, ".") {
		if seg != "" && !unicode.IsUpper([]rune(seg)[0]) {
			out = append(out, seg)
		}
	}
	return strings.Join(out, ".")
}

func jsonTypeName(goType string) string {
	switch {
	case strings.HasPrefix(goType, "[]"):
		return "an array"
	case goType == "string", goType == "openai.MessageContent":
		return "a string"
	case goType == "bool":
		return "a boolean"
	case strings.HasPrefix(goType, "int"), strings.HasPrefix(goType, "uint"), strings.HasPrefix(goType, "float"):
		return "a number"
	case strings.HasPrefix(goType, "struct"), strings.HasPrefix(goType, "openai."), strings.HasPrefix(goType, "map"):
		return "an object"
	}
	return goType
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	data, err := json.Marshal(v)
	if err != nil {
		status = http.StatusInternalServerError
		data, _ = json.Marshal(openai.ErrorResponse{Error: openai.ErrorBody{Code: status,
			Message: "encode the response: " + err.Error(), Type: errTypeServer}})
	}
	w.Header().Set("Content-Type", "application/json; charset=utf-8")
	w.WriteHeader(status)
	w.Write(append(data, '\n'))
}

func writeError(w http.ResponseWriter, status int, typ, message string) {
	writeAPIError(w, &apiError{status: status, typ: typ, message: message})
}

func writeAPIError(w http.ResponseWriter, e *apiError) {
	writeJSON(w, e.status, e.body())
}

// fail answers err unless the client has gone (then nobody is listening). A request stopped because
// the server is shutting down is answered 503, never an empty 200.
func fail(w http.ResponseWriter, r *http.Request, err error) {
	if r.Context().Err() != nil {
		if shuttingDown(r) {
			writeAPIError(w, shutdownError())
			return
		}
		if errors.Is(err, context.Canceled) {
			return
		}
	}
	writeAPIError(w, toAPIError(err))
}

// failStream ends a stream that failed: with err's event while the client listens, with the
// shutdown's when the server stops it, and with nothing when the client left.
func failStream(sse *sseWriter, r *http.Request, err error) {
	switch {
	case r.Context().Err() == nil:
		sse.fail(toAPIError(err))
	case shuttingDown(r):
		sse.fail(shutdownError())
	}
}

func shuttingDown(r *http.Request) bool {
	return errors.Is(context.Cause(r.Context()), errShuttingDown)
}

func shutdownError() *apiError {
	return &apiError{status: http.StatusServiceUnavailable, typ: errTypeUnavailable,
		message: "the server is shutting down: the request was stopped before it finished; retry it"}
}

// decodeJSON reads the body as one JSON value into v.
func decodeJSON(r *http.Request, v any) error {
	dec := json.NewDecoder(r.Body)
	if err := dec.Decode(v); err != nil {
		return err
	}
	if dec.More() {
		return badRequest("invalid JSON: more than one value in the body")
	}
	return nil
}
