package isolated

import (
	"context"
	"fmt"
	"io"
	"net/rpc"
	"sync"

	"github.com/expertsniper/expertsniper/engine"
)

// Serve answers the parent's calls on conn with eng until the parent closes conn (or dies), then
// returns. It runs in the child process; the caller closes eng afterwards.
func Serve(eng engine.Engine, conn io.ReadWriteCloser) error {
	s := rpc.NewServer()
	h := &host{eng: eng, jobs: map[int64]*job{}}
	if err := s.RegisterName(serviceName, h); err != nil {
		return fmt.Errorf("isolated: register the engine service: %w", err)
	}
	s.ServeConn(conn)
	h.cancelAll()
	return nil
}

// host is the child's side: the engine and the completions in flight.
type host struct {
	eng engine.Engine

	mu     sync.Mutex
	jobs   map[int64]*job
	nextID int64
}

// job is one completion running in the child.
type job struct {
	cancel context.CancelFunc

	mu      sync.Mutex
	changed *sync.Cond
	tokens  []engine.Token
	done    bool
	result  engine.Result
	err     error
}

func (h *host) Info(_ struct{}, out *engine.ModelInfo) error { *out = h.eng.Info(); return nil }
func (h *host) Stats(_ struct{}, out *engine.Stats) error    { *out = h.eng.Stats(); return nil }

func (h *host) Tokenize(a TokenizeArgs, out *[]int32) (err error) {
	*out, err = h.eng.Tokenize(a.Text, a.AddSpecial, a.ParseSpecial)
	return wrapErr(err)
}

func (h *host) Detokenize(tokens []int32, out *string) (err error) {
	*out, err = h.eng.Detokenize(tokens)
	return wrapErr(err)
}

func (h *host) ApplyTemplate(a TemplateArgs, out *string) (err error) {
	*out, err = h.eng.ApplyTemplate(a.Messages, a.AddAssistant)
	return wrapErr(err)
}

func (h *host) Embed(text string, out *[]float32) (err error) {
	*out, err = h.eng.Embed(context.Background(), text)
	return wrapErr(err)
}

func (h *host) Slots(_ struct{}, out *engine.SlotsReport) error { *out = h.eng.Slots(); return nil }

func (h *host) State(a StateArgs, out *engine.StateInfo) (err error) {
	ctx := context.Background()
	switch a.Op {
	case opLoadState:
		*out, err = h.eng.LoadState(ctx, a.Slot, a.Path)
	case opSaveState:
		*out, err = h.eng.SaveState(ctx, a.Slot, a.Prompt, a.Path)
	case opSaveSlot:
		*out, err = h.eng.SaveSlot(ctx, a.Slot, a.Path)
	case opEraseSlot:
		out.Slot = a.Slot
		out.Tokens, err = h.eng.EraseSlot(ctx, a.Slot)
	default:
		err = fmt.Errorf("isolated: unknown state call %d", a.Op)
	}
	return wrapErr(err)
}

// wrapErr keeps the sentinel kind of err across net/rpc, which sends only an error's text: the kind
// travels as a prefix that the parent strips (see unwrapCallErr).
func wrapErr(err error) error {
	if err == nil {
		return nil
	}
	w := toWire(err)
	return fmt.Errorf("%s|%s", w.Kind, w.Msg)
}

// Start begins a completion and returns its id at once; Next collects its tokens.
func (h *host) Start(req engine.Request, id *int64) error {
	ctx, cancel := context.WithCancel(context.Background())
	j := &job{cancel: cancel}
	j.changed = sync.NewCond(&j.mu)
	h.mu.Lock()
	h.nextID++
	*id = h.nextID
	h.jobs[*id] = j
	h.mu.Unlock()
	go func() {
		res, err := h.eng.Complete(ctx, req, func(t engine.Token) error {
			j.mu.Lock()
			j.tokens = append(j.tokens, t)
			j.mu.Unlock()
			j.changed.Broadcast()
			return nil
		})
		j.mu.Lock()
		j.done, j.result, j.err = true, res, err
		j.mu.Unlock()
		j.changed.Broadcast()
		cancel()
	}()
	return nil
}

// Next waits until the completion has new tokens or is done and returns them; the job is forgotten
// once its end has been delivered.
func (h *host) Next(id int64, out *NextReply) error {
	h.mu.Lock()
	j := h.jobs[id]
	h.mu.Unlock()
	if j == nil {
		return fmt.Errorf("|isolated: no completion %d", id)
	}
	j.mu.Lock()
	for len(j.tokens) == 0 && !j.done {
		j.changed.Wait()
	}
	out.Tokens, j.tokens = j.tokens, nil
	if j.done && len(out.Tokens) == 0 {
		out.Done, out.Result, out.Err = true, j.result, toWire(j.err)
	}
	j.mu.Unlock()
	if out.Done {
		h.mu.Lock()
		delete(h.jobs, id)
		h.mu.Unlock()
	}
	return nil
}

// Cancel stops a completion (the parent's caller went away) and forgets it.
func (h *host) Cancel(id int64, _ *struct{}) error {
	h.mu.Lock()
	j := h.jobs[id]
	delete(h.jobs, id)
	h.mu.Unlock()
	if j != nil {
		j.cancel()
	}
	return nil
}

func (h *host) cancelAll() {
	h.mu.Lock()
	defer h.mu.Unlock()
	for id, j := range h.jobs {
		j.cancel()
		delete(h.jobs, id)
	}
}
