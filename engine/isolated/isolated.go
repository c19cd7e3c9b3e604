// Package isolated runs an engine.Engine in a child process, so that a crash inside llama.cpp fails
// the requests in flight instead of the process that serves them. The case it exists for: llama.cpp's
// RPC client aborts its process when a worker is lost mid-run (ggml-rpc.cpp's GGML_ABORT), and a
// server spreading its model over workers must answer the next request after that. The next call
// after a crash starts a fresh child (which loads the model again).
//
// The child is this same program started with Options.Command; it calls Serve. The two talk net/rpc
// over two pipes (the child's file descriptors 3 and 4), leaving its stdout and stderr to llama.cpp's
// own printing, which is copied to Options.Stderr.
package isolated

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/rpc"
	"os"
	"os/exec"
	"strings"
	"sync"
	"time"

	"github.com/expertsniper/expertsniper/engine"
)

// Options configure Open.
type Options struct {
	// Command is the child's argv; the child must call Serve on ChildConn() and exit when it returns.
	Command []string
	// Env is added to the child's environment.
	Env []string
	// Stderr receives the child's stdout and stderr (nil: discarded, but the last lines still go into
	// the error of a crash).
	Stderr io.Writer
	// Diagnose, when set, is asked why the child died (crashed=true: e.g. which RPC worker is gone)
	// and whether a new child can start (crashed=false); a non-nil error becomes the error of the
	// failed request, or of the call that wanted a new child.
	Diagnose func(ctx context.Context, crashed bool) error
}

// Engine is an engine.Engine whose model lives in a child process.
type Engine struct {
	o Options

	mu     sync.Mutex // guards everything below
	child  *child     // nil when none is running
	info   engine.ModelInfo
	stats  engine.Stats // the last stats the child reported, served while it is down
	closed bool
	starts int // children started, for tests and /stats
}

var _ engine.Engine = (*Engine)(nil)

// child is one running child process.
type child struct {
	cmd    *exec.Cmd
	client *rpc.Client
	exited chan struct{} // closed when the process has exited
	err    error         // its exit status, set before exited is closed
	tail   *tailBuffer
}

// Open starts the child and waits until its model is loaded.
func Open(ctx context.Context, o Options) (*Engine, error) {
	if len(o.Command) == 0 {
		return nil, errors.New("isolated: no child command")
	}
	e := &Engine{o: o}
	if _, err := e.get(ctx); err != nil {
		return nil, err
	}
	return e, nil
}

// ChildConn is the child's end of the pipes Open made: pass it to Serve.
func ChildConn() (io.ReadWriteCloser, error) {
	r, w := os.NewFile(3, "isolated-in"), os.NewFile(4, "isolated-out")
	if r == nil || w == nil {
		return nil, errors.New("isolated: not started by isolated.Open (file descriptors 3 and 4 are missing)")
	}
	return pipeConn{r, w}, nil
}

type pipeConn struct {
	io.ReadCloser
	w io.WriteCloser
}

func (p pipeConn) Write(b []byte) (int, error) { return p.w.Write(b) }
func (p pipeConn) Close() error {
	err := p.ReadCloser.Close()
	if werr := p.w.Close(); err == nil {
		err = werr
	}
	return err
}

// get returns the running child, starting one if there is none.
func (e *Engine) get(ctx context.Context) (*child, error) {
	e.mu.Lock()
	defer e.mu.Unlock()
	if e.closed {
		return nil, errors.New("isolated: engine is closed")
	}
	if e.child != nil {
		select {
		case <-e.child.exited:
			e.child = nil
		default:
			return e.child, nil
		}
	}
	if e.o.Diagnose != nil {
		if err := e.o.Diagnose(ctx, false); err != nil {
			return nil, err
		}
	}
	c, err := e.start()
	if err != nil {
		return nil, err
	}
	// Loading the model can take a while; a cancelled ctx stops waiting and the child.
	done := make(chan error, 1)
	var info engine.ModelInfo
	go func() { done <- c.client.Call(serviceName+".Info", struct{}{}, &info) }()
	select {
	case err = <-done:
	case <-ctx.Done():
		c.kill()
		return nil, fmt.Errorf("isolated: start the engine: %w", ctx.Err())
	}
	if err != nil {
		c.kill()
		return nil, e.crashError(ctx, c, "start the engine", err)
	}
	e.child, e.info = c, info
	e.starts++
	return c, nil
}

func (e *Engine) start() (*child, error) {
	parentR, childW, err := os.Pipe()
	if err != nil {
		return nil, fmt.Errorf("isolated: pipe: %w", err)
	}
	childR, parentW, err := os.Pipe()
	if err != nil {
		parentR.Close()
		childW.Close()
		return nil, fmt.Errorf("isolated: pipe: %w", err)
	}
	tail := &tailBuffer{max: 4 << 10}
	var out io.Writer = tail
	if e.o.Stderr != nil {
		out = io.MultiWriter(e.o.Stderr, tail)
	}
	cmd := exec.Command(e.o.Command[0], e.o.Command[1:]...)
	cmd.Env = append(os.Environ(), e.o.Env...)
	cmd.Stdout, cmd.Stderr = out, out
	cmd.ExtraFiles = []*os.File{childR, childW} // fds 3 (child reads) and 4 (child writes)
	if err := cmd.Start(); err != nil {
		for _, f := range []*os.File{parentR, childW, childR, parentW} {
			f.Close()
		}
		return nil, fmt.Errorf("isolated: start %s: %w", e.o.Command[0], err)
	}
	childR.Close()
	childW.Close()
	c := &child{cmd: cmd, exited: make(chan struct{}), tail: tail,
		client: rpc.NewClient(pipeConn{parentR, parentW})}
	go func() {
		c.err = cmd.Wait()
		close(c.exited)
	}()
	return c, nil
}

func (c *child) kill() {
	_ = c.cmd.Process.Kill()
	<-c.exited
	c.client.Close()
}

// crashError explains a call that failed because the child went away: the child's last words and,
// when Diagnose names a cause (a lost worker), that cause.
func (e *Engine) crashError(ctx context.Context, c *child, op string, callErr error) error {
	var se rpc.ServerError
	if errors.As(callErr, &se) {
		return unwrapCallErr(callErr)
	}
	// The pipe broke: wait for the exit (it follows at once) so that the tail is complete.
	select {
	case <-c.exited:
	case <-time.After(10 * time.Second):
		c.kill()
	}
	last := c.tail.lastError()
	why := "the engine process stopped"
	if c.err != nil {
		why += " (" + c.err.Error() + ")"
	}
	if last != "" {
		why += ": " + last
	}
	if e.o.Diagnose != nil {
		dctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 15*time.Second)
		derr := e.o.Diagnose(dctx, true)
		cancel()
		if derr != nil {
			return fmt.Errorf("%s: %w (%s)", op, derr, why)
		}
	}
	return fmt.Errorf("%s: %s", op, why)
}

// call runs one call on the child, starting it if needed, and turns a crash into a clear error.
func (e *Engine) call(ctx context.Context, op, method string, args, reply any) error {
	c, err := e.get(ctx)
	if err != nil {
		return err
	}
	if err := c.client.Call(serviceName+"."+method, args, reply); err != nil {
		return e.crashError(ctx, c, op, err)
	}
	return nil
}

// unwrapCallErr turns an error the child returned ("KIND|message") back into an error that wraps the
// engine sentinel of that kind.
func unwrapCallErr(err error) error {
	var se rpc.ServerError
	if !errors.As(err, &se) {
		return err
	}
	kind, msg, ok := strings.Cut(string(se), "|")
	if !ok {
		return &remoteError{msg: string(se)}
	}
	return &remoteError{msg: msg, kind: sentinels[kind]}
}

// Info describes the model (as the child last reported it).
func (e *Engine) Info() engine.ModelInfo {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.info
}

// Restarts is how many times a child had to be started again after the first.
func (e *Engine) Restarts() int {
	e.mu.Lock()
	defer e.mu.Unlock()
	return max(e.starts-1, 0)
}

func (e *Engine) Tokenize(text string, addSpecial, parseSpecial bool) ([]int32, error) {
	var out []int32
	err := e.call(context.Background(), "tokenize", "Tokenize", TokenizeArgs{text, addSpecial, parseSpecial}, &out)
	return out, err
}

func (e *Engine) Detokenize(tokens []int32) (string, error) {
	var out string
	err := e.call(context.Background(), "detokenize", "Detokenize", tokens, &out)
	return out, err
}

func (e *Engine) ApplyTemplate(messages []engine.Message, addAssistant bool) (string, error) {
	var out string
	err := e.call(context.Background(), "apply the chat template", "ApplyTemplate", TemplateArgs{messages, addAssistant}, &out)
	return out, err
}

// Embed runs in the child as a state call does (callJob): a cancelled ctx stops it there.
func (e *Engine) Embed(ctx context.Context, text string) ([]float32, error) {
	var out []float32
	err := e.callJob(ctx, "embed", "StartEmbed", text, "WaitEmbed", &out)
	return out, err
}

func (e *Engine) SaveState(ctx context.Context, slot int, prompt, path string) (engine.StateInfo, error) {
	return e.callState(ctx, "save state", StateArgs{Op: opSaveState, Slot: slot, Prompt: prompt, Path: path})
}

func (e *Engine) LoadState(ctx context.Context, slot int, path string) (engine.StateInfo, error) {
	return e.callState(ctx, "load state", StateArgs{Op: opLoadState, Slot: slot, Path: path})
}

func (e *Engine) SaveSlot(ctx context.Context, slot int, path string) (engine.StateInfo, error) {
	return e.callState(ctx, "save slot", StateArgs{Op: opSaveSlot, Slot: slot, Path: path})
}

func (e *Engine) EraseSlot(ctx context.Context, slot int) (int, error) {
	out, err := e.callState(ctx, "erase slot", StateArgs{Op: opEraseSlot, Slot: slot})
	return out.Tokens, err
}

// callState runs a state call in the child so that ctx reaches it there: a cancelled ctx cancels the
// child's call (CancelState), and callState returns once that call is over, so that nothing it did (a
// state file being written) outlives it. A call that ended well despite the cancellation reports
// its result.
func (e *Engine) callState(ctx context.Context, op string, args StateArgs) (engine.StateInfo, error) {
	var out engine.StateInfo
	err := e.callJob(ctx, op, "StartState", args, "WaitState", &out)
	return out, err
}

// callJob runs a call in the child as a job: start (the child's method that starts it and returns
// its id) with args, then wait (the one that returns its outcome into reply); a cancelled ctx
// cancels the job there (CancelState) and callJob returns once it is over.
func (e *Engine) callJob(ctx context.Context, op, start string, args any, wait string, reply any) error {
	c, err := e.get(ctx)
	if err != nil {
		return err
	}
	var id int64
	if err := c.client.Call(serviceName+"."+start, args, &id); err != nil {
		return e.crashError(ctx, c, op, err)
	}
	call := c.client.Go(serviceName+"."+wait, id, reply, nil)
	select {
	case <-call.Done:
	case <-ctx.Done():
		c.client.Go(serviceName+".CancelState", id, new(struct{}), make(chan *rpc.Call, 1))
		<-call.Done // the child's call stops at its context, or the child is gone
		if call.Error != nil {
			return fmt.Errorf("%s: %w", op, ctx.Err())
		}
	}
	if call.Error != nil {
		return e.crashError(ctx, c, op, call.Error)
	}
	return nil
}

// Slots are the child's slots and queue. While no child runs, every slot is idle and empty (a new
// child starts with empty caches) and nothing waits.
func (e *Engine) Slots() engine.SlotsReport {
	e.mu.Lock()
	c, n := e.child, e.info.Slots
	e.mu.Unlock()
	if c != nil {
		var r engine.SlotsReport
		call := c.client.Go(serviceName+".Slots", struct{}{}, &r, nil)
		select {
		case <-call.Done:
			if call.Error == nil {
				return r
			}
		case <-c.exited:
		}
	}
	r := engine.SlotsReport{Slots: make([]engine.SlotState, n)}
	for i := range r.Slots {
		r.Slots[i].ID = i
	}
	return r
}

// Stats are the child's counters; while no child runs, the last ones it reported.
func (e *Engine) Stats() engine.Stats {
	e.mu.Lock()
	c := e.child
	e.mu.Unlock()
	if c != nil {
		var s engine.Stats
		call := c.client.Go(serviceName+".Stats", struct{}{}, &s, nil)
		select {
		case <-call.Done:
			if call.Error == nil {
				s.EngineProcessRSSBytes = s.RSSBytes
				e.mu.Lock()
				e.stats = s
				e.mu.Unlock()
			}
		case <-c.exited:
		}
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.stats
}

// Complete runs the completion in the child, delivering its tokens as they come.
func (e *Engine) Complete(ctx context.Context, req engine.Request, onToken func(engine.Token) error) (engine.Result, error) {
	c, err := e.get(ctx)
	if err != nil {
		return engine.Result{}, err
	}
	var id int64
	if err := c.client.Call(serviceName+".Start", req, &id); err != nil {
		return engine.Result{}, e.crashError(ctx, c, "complete", err)
	}
	cancel := func() { c.client.Go(serviceName+".Cancel", id, new(struct{}), make(chan *rpc.Call, 1)) }
	for {
		var r NextReply
		call := c.client.Go(serviceName+".Next", id, &r, nil)
		select {
		case <-ctx.Done():
			cancel()
			return engine.Result{}, ctx.Err()
		case <-call.Done:
		}
		if call.Error != nil {
			return engine.Result{}, e.crashError(ctx, c, "complete", call.Error)
		}
		for _, t := range r.Tokens {
			if err := onToken(t); err != nil {
				cancel()
				return engine.Result{}, err
			}
		}
		if r.Done {
			return r.Result, r.Err.err()
		}
	}
}

// Close stops the child: it closes its model when its end of the pipes closes.
func (e *Engine) Close() error {
	e.mu.Lock()
	c := e.child
	e.child, e.closed = nil, true
	e.mu.Unlock()
	if c == nil {
		return nil
	}
	c.client.Close()
	select {
	case <-c.exited:
	case <-time.After(30 * time.Second):
		c.kill()
		return errors.New("isolated: the engine process did not stop within 30 s of closing; killed it")
	}
	return nil
}

// tailBuffer keeps the last max bytes written to it.
type tailBuffer struct {
	mu  sync.Mutex
	max int
	b   []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b = append(t.b, p...)
	if len(t.b) > t.max {
		t.b = append([]byte(nil), t.b[len(t.b)-t.max:]...)
	}
	return len(p), nil
}

// lastError is the last line written that reads like the reason for a crash (llama.cpp's
// GGML_ABORT/GGML_ASSERT message, a Go panic or error), or "".
func (t *tailBuffer) lastError() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	lines := strings.Split(strings.TrimSpace(string(t.b)), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		l := strings.TrimSpace(lines[i])
		low := strings.ToLower(l)
		for _, w := range []string{"error", "abort", "assert", "panic", "fatal", "crashed"} {
			if strings.Contains(low, w) {
				return l
			}
		}
	}
	return ""
}
