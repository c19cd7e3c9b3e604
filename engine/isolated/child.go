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

// job is one completion or state call running in the child.
type job struct {
	cancel context.CancelFunc

	mu        sync.Mutex
	changed   *sync.Cond
	tokens    []engine.Token
	done      bool
	result    engine.Result
	state     engine.StateInfo
	embedding []float32
	err       error
}

// newJob registers a job under a new id; its context ends when the parent cancels it or goes away.
func (h *host) newJob() (context.Context, *job, int64) {
	ctx, cancel := context.WithCancel(context.Background())
	j := &job{cancel: cancel}
	j.changed = sync.NewCond(&j.mu)
	h.mu.Lock()
	defer h.mu.Unlock()
	h.nextID++
	h.jobs[h.nextID] = j
	return ctx, j, h.nextID
}

// finish records the job's outcome (set runs under j.mu), marks it done and wakes its waiter.
func (j *job) finish(set func()) {
	j.mu.Lock()
	set()
	j.done = true
	j.mu.Unlock()
	j.changed.Broadcast()
	j.cancel()
}

func (h *host) job(id int64) *job {
	h.mu.Lock()
	defer h.mu.Unlock()
	return h.jobs[id]
}

func (h *host) forget(id int64) {
	h.mu.Lock()
	defer h.mu.Unlock()
	delete(h.jobs, id)
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

// StartEmbed begins an embedding and returns its id at once: WaitEmbed waits for its end, and
// CancelState cancels it as it does a state call (the parent's caller went away).
func (h *host) StartEmbed(text string, id *int64) error {
	ctx, j, n := h.newJob()
	*id = n
	go func() {
		v, err := h.eng.Embed(ctx, text)
		j.finish(func() { j.embedding, j.err = v, err })
	}()
	return nil
}

// WaitEmbed waits until the embedding id is over, returns it and forgets the job.
func (h *host) WaitEmbed(id int64, out *[]float32) error {
	j := h.wait(id)
	if j == nil {
		return fmt.Errorf("|isolated: no embedding %d", id)
	}
	*out = j.embedding
	return wrapErr(j.err)
}

func (h *host) Slots(_ struct{}, out *engine.SlotsReport) error { *out = h.eng.Slots(); return nil }

// StartState begins a state call and returns its id at once: WaitState waits for its end, and
// CancelState cancels its context (the parent's caller went away), so that a save or load the
// caller gave up on stops here too.
func (h *host) StartState(a StateArgs, id *int64) error {
	ctx, j, n := h.newJob()
	*id = n
	go func() {
		info, err := h.runState(ctx, a)
		j.finish(func() { j.state, j.err = info, err })
	}()
	return nil
}

// WaitState waits until the state call id is over, returns its outcome and forgets it.
func (h *host) WaitState(id int64, out *engine.StateInfo) error {
	j := h.wait(id)
	if j == nil {
		return fmt.Errorf("|isolated: no state call %d", id)
	}
	*out = j.state
	return wrapErr(j.err)
}

// wait waits until job id is done and forgets it; nil if there is no such job. Its outcome is then
// the caller's to read.
func (h *host) wait(id int64) *job {
	j := h.job(id)
	if j == nil {
		return nil
	}
	j.mu.Lock()
	for !j.done {
		j.changed.Wait()
	}
	j.mu.Unlock()
	h.forget(id)
	return j
}

// CancelState cancels the state call or embedding id; its WaitState or WaitEmbed still reports how
// it ended.
func (h *host) CancelState(id int64, _ *struct{}) error {
	if j := h.job(id); j != nil {
		j.cancel()
	}
	return nil
}

func (h *host) runState(ctx context.Context, a StateArgs) (out engine.StateInfo, err error) {
	switch a.Op {
	case opLoadState:
		return h.eng.LoadState(ctx, a.Slot, a.Path)
	case opSaveState:
		return h.eng.SaveState(ctx, a.Slot, a.Prompt, a.Path)
	case opSaveSlot:
		return h.eng.SaveSlot(ctx, a.Slot, a.Path)
	case opEraseSlot:
		out.Slot = a.Slot
		out.Tokens, err = h.eng.EraseSlot(ctx, a.Slot)
		return out, err
	}
	return out, fmt.Errorf("isolated: unknown state call %d", a.Op)
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
	ctx, j, n := h.newJob()
	*id = n
	go func() {
		res, err := h.eng.Complete(ctx, req, func(t engine.Token) error {
			j.mu.Lock()
			j.tokens = append(j.tokens, t)
			j.mu.Unlock()
			j.changed.Broadcast()
			return nil
		})
		j.finish(func() { j.result, j.err = res, err })
	}()
	return nil
}

// Next waits until the completion has new tokens or is done and returns them; the job is forgotten
// once its end has been delivered.
func (h *host) Next(id int64, out *NextReply) error {
	j := h.job(id)
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
		h.forget(id)
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
