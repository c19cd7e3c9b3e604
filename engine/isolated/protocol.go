package isolated

import (
	"errors"

	"github.com/expertsniper/expertsniper/engine"
)

// The calls between the parent (Engine) and the child (Serve), carried by net/rpc with gob over a
// pair of pipes. Complete streams, which net/rpc cannot: the parent starts a completion (Start) and
// then asks for what was generated since its last question (Next) until the completion is done,
// or stops it (Cancel). State calls (save, load, erase) go the same way so that a cancellation
// reaches them: StartState, then WaitState for the outcome, or CancelState to stop them.

// serviceName is the net/rpc service the child registers.
const serviceName = "Engine"

// TokenizeArgs, TemplateArgs, StateArgs and NextReply are exported only because net/rpc requires it.
type TokenizeArgs struct {
	Text                     string
	AddSpecial, ParseSpecial bool
}

type TemplateArgs struct {
	Messages     []engine.Message
	AddAssistant bool
}

type StateArgs struct {
	Op           stateOp
	Slot         int
	Prompt, Path string
}

// stateOp is the state call StateArgs asks for.
type stateOp int

const (
	opSaveState stateOp = iota
	opLoadState
	opSaveSlot
	opEraseSlot
)

// NextReply is what a completion generated since the previous Next, and its end once it is done.
type NextReply struct {
	Tokens []engine.Token
	Done   bool
	Result engine.Result
	Err    *WireError
}

// WireError carries an error and the engine sentinel it wraps, so that the parent's callers can still
// tell a full context or an unsupported feature apart (errors.Is) after the trip through the pipe.
type WireError struct {
	Msg  string
	Kind string // "", "not-supported", "context-full", "canceled"
}

var sentinels = map[string]error{
	"not-supported": engine.ErrNotSupported,
	"context-full":  engine.ErrContextFull,
	"slot-empty":    engine.ErrSlotEmpty,
}

func toWire(err error) *WireError {
	if err == nil {
		return nil
	}
	w := &WireError{Msg: err.Error()}
	for kind, s := range sentinels {
		if errors.Is(err, s) {
			w.Kind = kind
		}
	}
	return w
}

// remoteError is an error that happened in the child.
type remoteError struct {
	msg  string
	kind error
}

func (e *remoteError) Error() string { return e.msg }
func (e *remoteError) Unwrap() error { return e.kind }

func (w *WireError) err() error {
	if w == nil {
		return nil
	}
	return &remoteError{msg: w.Msg, kind: sentinels[w.Kind]}
}
