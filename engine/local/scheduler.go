package local

import (
	"context"
	"fmt"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/expertsniper/expertsniper/binding"
	"github.com/expertsniper/expertsniper/engine"
)

// Continuous batching, as llama-server does it. The engine has one llama.cpp context whose
// sequences are the slots (n_seq_max = slots, each with Options.Context KV cells of its own: see
// Open). One goroutine, the loop, owns the context, the batch
// and the slots: every step it puts every generating sequence's next token and as many prompt tokens
// as fit (n_batch) into one llama_decode, then samples each sequence that has an output with its own
// sampler chain. In sniper mode the hook makes the union of all the step's tokens' experts resident
// once (a ubatch's routing), so concurrent requests share their expert reads.
//
// Requests wait in e.queue until a slot they may use is free; a slot keeps its sequence's cache
// between requests, and a new request reuses the longest prefix it shares with a free slot's cache.

// job is one request on its way through the loop: a completion, or a state save/load.
type job struct {
	ctx    context.Context
	want   int // the slot asked for, -1 for any
	prompt []int32
	// generate: sample after the prompt (Complete); otherwise run onSlot once the prompt is cached.
	generate bool
	onSlot   func(s *slot) error
	// asIs runs onSlot on what the slot holds, without trimming it to the prompt (SaveSlot).
	asIs    bool
	req     engine.Request
	sampler *binding.Sampler
	stop    *binding.StopFilter
	// obs watches the job from the loop (observe.go); nil for most jobs.
	obs *Observer
	// keepAt is the prompt position of Request.KeepPrefix's checkpoint (0: none; checkpoints.go).
	keepAt int

	// Owned by the loop.
	slot     *slot
	cached   int   // prompt tokens found in the slot's cache
	fed      int   // prompt tokens put into a batch so far (cached ones included)
	next     int32 // the sampled token to feed next step (when hasNext)
	hasNext  bool
	out      int // batch index of this job's output in the current step (-1: none)
	nGen     int
	text     strings.Builder
	pending  []engine.TokenLogprob // logprobs of tokens whose text is held back
	held     []int32               // tokens whose text is held back
	res      engine.Result
	admitted time.Time
	sampled  time.Time // first token sampled (end of the prompt phase)
	// The job's tokens in the current step's batch, for obs: batch indices stepFirst.. (stepN of
	// them) at positions stepPos.., prompt tokens or the generated one.
	stepFirst, stepN, stepPos int
	stepPrompt                bool

	events *eventQueue
}

// slot is one sequence of the context.
type slot struct {
	id     int
	tokens []int32 // the tokens whose keys and values the sequence holds, positions 0..len-1
	job    *job
	// last describes the running completion, or the last one (for Slots); used is the number of the
	// last job admitted to the slot (a completion or a state call), for least-recently-used choices.
	last slotTask
	used int64
	// checkpoints are recurrent states after some of tokens, oldest first (checkpoints.go).
	checkpoints []checkpoint
}

// eventQueue carries a job's tokens and its end from the loop to the request's goroutine without
// ever blocking the loop on a slow consumer.
type eventQueue struct {
	mu     sync.Mutex
	toks   []engine.Token
	done   bool
	err    error
	notify chan struct{} // capacity 1: something new
}

func newEventQueue() *eventQueue { return &eventQueue{notify: make(chan struct{}, 1)} }

func (q *eventQueue) signal() {
	select {
	case q.notify <- struct{}{}:
	default:
	}
}

func (q *eventQueue) push(t engine.Token) {
	q.mu.Lock()
	q.toks = append(q.toks, t)
	q.mu.Unlock()
	q.signal()
}

func (q *eventQueue) finish(err error) {
	q.mu.Lock()
	q.done, q.err = true, err
	q.mu.Unlock()
	q.signal()
}

// backlog is how many tokens wait for the consumer.
func (q *eventQueue) backlog() int {
	q.mu.Lock()
	defer q.mu.Unlock()
	return len(q.toks)
}

// maxBacklog bounds the tokens a job generates ahead of its consumer (a slow client): beyond it the
// job sits out steps, holding its slot, until the consumer catches up.
const maxBacklog = 32

// take returns what arrived since the last call, and whether the job is over (with its error).
func (q *eventQueue) take() (toks []engine.Token, done bool, err error) {
	q.mu.Lock()
	defer q.mu.Unlock()
	toks, q.toks = q.toks, nil
	return toks, q.done, q.err
}

// submit queues j and waits until the loop finishes it, passing its tokens to onToken on the caller's
// goroutine. An error from onToken cancels the job (its sequence leaves the next step) and is
// returned.
func (e *Engine) submit(ctx context.Context, j *job, onToken func(engine.Token) error) error {
	jctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if err := e.enqueue(jctx, j); err != nil {
		return err
	}
	return e.await(jctx, cancel, j, onToken)
}

// enqueue queues jobs together: the loop admits them in one go, so that, with slots free for all,
// they are decoded together from their first step (tests rely on that for a fixed batch).
func (e *Engine) enqueue(ctx context.Context, jobs ...*job) error {
	for _, j := range jobs {
		j.ctx, j.events, j.out = ctx, newEventQueue(), -1
		j.res.Slot = -1
	}
	e.mu.Lock()
	if e.closed {
		e.mu.Unlock()
		for _, j := range jobs {
			if j.sampler != nil {
				j.sampler.Close()
			}
		}
		return errClosed
	}
	e.queue = append(e.queue, jobs...)
	e.mu.Unlock()
	e.wakeLoop()
	return nil
}

// await delivers j's tokens to onToken until the loop finishes j. cancel cancels j's context.
func (e *Engine) await(jctx context.Context, cancel context.CancelFunc, j *job, onToken func(engine.Token) error) error {
	var cbErr error
	cancelled := jctx.Done()
	for {
		select {
		case <-j.events.notify:
		case <-cancelled:
			cancelled = nil
			e.wakeLoop() // the loop may be waiting: it ends the job at its next step
			continue
		}
		toks, done, err := j.events.take()
		e.wakeLoop() // the job may have been sitting out steps for its backlog
		for _, t := range toks {
			if cbErr == nil && onToken != nil && jctx.Err() == nil {
				if cbErr = onToken(t); cbErr != nil {
					cancel()
				}
			}
		}
		if done {
			if cbErr != nil {
				return cbErr
			}
			return err
		}
	}
}

func (e *Engine) wakeLoop() {
	select {
	case e.wake <- struct{}{}:
	default:
	}
}

// loop is the scheduler: it runs until the engine is closed and nothing is queued or running.
func (e *Engine) loop() {
	defer close(e.loopDone)
	var gatherUntil time.Time // the end of the current wait for prompts to share a step with
	for {
		e.mu.Lock()
		admitted := e.admit()
		idle := len(e.queue) == 0 && !e.anyRunning()
		if idle && e.closed {
			e.mu.Unlock()
			return
		}
		e.mu.Unlock()
		for _, j := range admitted {
			e.prepare(j)
		}
		if !e.anyRunning() {
			<-e.wake
			continue
		}
		if e.gatherPrompts(&gatherUntil) {
			continue // woken during the wait: admit what came, then wait out the rest
		}
		worked := e.step()
		e.publishSlots()
		if !worked {
			<-e.wake // every running job waits for its consumer (or was just ended)
		}
	}
}

// promptGather is how long, in streamed modes, a step that would start evaluating a prompt waits
// for more requests to start theirs in the same step. There a step costs mostly the experts (or
// FFNs) it reads from disk, and a prompt's tokens together choose most of each layer's experts, so
// prompts evaluated in one step share nearly all their reads, where two steps read them twice.
// Requests that arrive together (clients that finished together, parallel calls an agent fans
// out) reach the queue milliseconds apart: without the wait the first would start alone and the
// others a step (seconds of reads) later. In RAM mode a step costs its compute, which batching
// shares little, so nothing waits: measured on the 35B-shaped model with four clients, waiting for
// the clients that finished in the last step to come back changed nothing (4.8 and 4.9 tok/s
// against 4.9 and 4.9 without, two rounds alternated; stock llama-server 5.0 and 5.3).
const promptGather = 30 * time.Millisecond // Engine.promptGather: tests lengthen it

// gatherPrompts waits, when a step would start a prompt in a streamed mode and a slot is still
// free, until *until (set to e.promptGather from now at the first wait, cleared when the step may
// go) or until the loop is woken. It reports whether it was woken early: the loop then admits what
// was queued and comes back here for what is left of the wait.
func (e *Engine) gatherPrompts(until *time.Time) bool {
	if e.decision.Mode == ModeRAM || !e.startsPrompt() || !e.slotFree() {
		*until = time.Time{}
		return false
	}
	if until.IsZero() {
		*until = time.Now().Add(e.promptGather)
	}
	wait := time.Until(*until)
	if wait <= 0 {
		*until = time.Time{}
		return false
	}
	t := time.NewTimer(wait)
	defer t.Stop()
	select {
	case <-e.wake:
		return true
	case <-t.C:
		*until = time.Time{}
		return false
	}
}

// startsPrompt reports whether a running job has prompt tokens to evaluate and has evaluated none
// yet. Only the loop calls it.
func (e *Engine) startsPrompt() bool {
	for _, s := range e.slots {
		if j := s.job; j != nil && j.fed == j.cached && j.fed < len(j.prompt) {
			return true
		}
	}
	return false
}

// slotFree reports whether a slot has no job. Only the loop calls it.
func (e *Engine) slotFree() bool {
	for _, s := range e.slots {
		if s.job == nil {
			return true
		}
	}
	return false
}

// anyRunning reports whether a slot has a job. Only the loop changes slot.job, and it reads it
// without the lock.
func (e *Engine) anyRunning() bool {
	for _, s := range e.slots {
		if s.job != nil {
			return true
		}
	}
	return false
}

// admit gives queued jobs free slots, in order: a job pinned to a busy slot waits without holding up
// the jobs behind it. Among free slots a job takes the one whose cache shares the longest prefix
// with its prompt (a follow-up request finds its conversation), the least recently used among
// equals (a state load, with no prompt, spares the caches in use). Jobs whose caller gave up are
// ended. Called by the loop with e.mu held.
func (e *Engine) admit() []*job {
	var admitted []*job
	keep := e.queue[:0]
	for _, j := range e.queue {
		if err := j.ctx.Err(); err != nil {
			e.end(j, fmt.Errorf("waiting for a free slot: %w", err))
			continue
		}
		var best *slot
		bestLen := -1
		for _, s := range e.slots {
			if s.job != nil || (j.want >= 0 && s.id != j.want) {
				continue
			}
			n := commonPrefix(s.tokens, j.prompt)
			if n > bestLen || (n == bestLen && s.used < best.used) {
				best, bestLen = s, n
			}
		}
		if best == nil {
			keep = append(keep, j)
			continue
		}
		e.tasks++
		best.job, j.slot, best.used = j, best, e.tasks
		if j.generate {
			best.last = slotTask{task: e.tasks, req: j.req}
			best.last.req.Prompt, best.last.req.PromptTokens = "", nil
		}
		admitted = append(admitted, j)
	}
	clear(e.queue[len(keep):])
	e.queue = keep
	return admitted
}

// prepare trims the job's slot to the longest prefix its prompt can reuse. A job with nothing to
// evaluate (a state load, or a save of a prompt already cached) runs its onSlot at once.
func (e *Engine) prepare(j *job) {
	j.admitted = time.Now()
	s := j.slot
	if j.asIs {
		e.finish(j, j.onSlot(s))
		return
	}
	common := commonPrefix(s.tokens, j.prompt)
	if j.generate && common == len(j.prompt) {
		common-- // sampling needs the logits of the last prompt token: evaluate it again
	}
	if common < len(s.tokens) {
		kept, err := e.cutSlot(s, common)
		if err != nil {
			e.finish(j, fmt.Errorf("slot %d: %w", s.id, err))
			return
		}
		common = kept
	}
	j.cached, j.fed = common, common
	if !j.generate && j.fed == len(j.prompt) {
		e.finish(j, j.onSlot(s))
	}
}

// step runs one llama_decode over every running job's next tokens, then samples. It reports whether
// there was anything to decode.
func (e *Engine) step() bool {
	// A request whose caller gave up leaves before the batch is built; what its sequence holds stays
	// cached (all of it was evaluated), for the next request to reuse.
	for _, s := range e.slots {
		if j := s.job; j != nil {
			if err := j.ctx.Err(); err != nil {
				e.finish(j, err)
			}
		}
	}
	b := e.batch
	b.Clear()
	var in []*job
	seq := make([]int, 1)
	for _, s := range e.slots {
		j := s.job
		if j == nil || !j.hasNext || j.events.backlog() >= maxBacklog {
			continue
		}
		seq[0] = s.id
		j.stepFirst, j.stepN, j.stepPos, j.stepPrompt = b.Len(), 1, len(s.tokens), false
		if err := b.Add(j.next, len(s.tokens), seq, true); err != nil {
			e.finish(j, err)
			continue
		}
		j.out = b.Len() - 1
		s.tokens = append(s.tokens, j.next)
		j.hasNext = false
		in = append(in, j)
	}
	for _, s := range e.slots {
		j := s.job
		if j == nil || j.fed >= len(j.prompt) || j.hasNext {
			continue
		}
		room := e.batchSize - b.Len()
		if room <= 0 {
			break
		}
		seq[0] = s.id
		n := e.promptChunk(j, room)
		if at := e.nextCheckpoint(j); at > 0 && j.fed+n > at {
			n = at - j.fed // the step ends where the checkpoint is taken
		}
		allLogits := j.obs != nil && j.obs.Logits != nil
		j.stepFirst, j.stepN, j.stepPos, j.stepPrompt = b.Len(), n, len(s.tokens), true
		for i := j.fed; i < j.fed+n; i++ {
			last := i == len(j.prompt)-1
			if err := b.Add(j.prompt[i], len(s.tokens), seq, last && j.generate || allLogits); err != nil {
				e.finish(j, err)
				break
			}
			s.tokens = append(s.tokens, j.prompt[i])
			if last && j.generate {
				j.out = b.Len() - 1
			}
		}
		j.fed += n
		in = append(in, j)
	}
	if b.Len() == 0 {
		return false
	}
	dctx, release := e.stepContext(in)
	err := e.lctx.Decode(dctx, b)
	release()
	if err != nil {
		for _, j := range in {
			// llama.cpp keeps the ubatches that finished: the sequence holds what it holds.
			if end, serr := e.lctx.SequenceEnd(j.slot.id); serr == nil && end < len(j.slot.tokens) {
				j.slot.tokens = j.slot.tokens[:end]
				j.slot.dropCheckpointsFrom(end + 1)
			}
			e.finish(j, fmt.Errorf("decode: %w", err))
		}
		return true
	}
	for _, j := range in {
		if j.slot == nil || j.slot.job != j {
			continue // ended while the batch was built
		}
		if err := e.observe(j); err != nil {
			e.finish(j, err)
			continue
		}
		if j.stepPrompt && e.isCheckpoint(j, j.fed) {
			e.takeCheckpoint(j.slot, j.fed)
		}
		if !j.generate {
			if j.fed == len(j.prompt) {
				e.finish(j, j.onSlot(j.slot))
			}
			continue
		}
		if j.out >= 0 {
			e.sample(j)
		}
	}
	return true
}

// stepContext is the context of a step's decode: cancelled once every job in the step has given
// up, so that their decode stops mid-way (the abort flag is checked between graph nodes; a long
// prompt on a streamed model takes minutes) while a step that still serves someone runs to its end.
func (e *Engine) stepContext(in []*job) (context.Context, func()) {
	ctx, cancel := context.WithCancel(e.loopCtx)
	var left atomic.Int32
	left.Store(int32(len(in)))
	stops := make([]func() bool, len(in))
	for i, j := range in {
		stops[i] = context.AfterFunc(j.ctx, func() {
			if left.Add(-1) == 0 {
				cancel()
			}
		})
	}
	return ctx, func() {
		for _, stop := range stops {
			stop()
		}
		cancel()
	}
}

// sample picks j's next token from its output of the step and delivers its text.
func (e *Engine) sample(j *job) {
	idx := j.out
	j.out = -1
	if j.sampled.IsZero() {
		j.sampled = time.Now()
	}
	if e.logitsHook != nil {
		logits, err := e.lctx.Logits(idx)
		if err != nil {
			e.finish(j, err)
			return
		}
		e.logitsHook(j.slot.id, logits)
	}
	tok, err := j.sampler.Sample(e.lctx, idx)
	if err != nil {
		e.finish(j, fmt.Errorf("sample: %w", err))
		return
	}
	if e.model.IsEOG(tok) {
		j.res.FinishReason = binding.FinishStop
		j.held = append(j.held, tok) // released with the held-back text, if any (as binding.Generate)
		e.emit(j, tok, j.stop.Flush())
		e.finish(j, nil)
		return
	}
	j.nGen++
	j.res.Tokens = append(j.res.Tokens, tok)
	j.held = append(j.held, tok)
	if j.req.Logprobs {
		logits, err := e.lctx.Logits(idx)
		if err == nil {
			var lp binding.TokenLogprob
			if lp, err = e.model.Logprobs(logits, tok, j.req.TopLogprobs); err == nil {
				l := toLogprob(lp)
				j.pending = append(j.pending, l)
				j.res.Logprobs = append(j.res.Logprobs, l)
			}
		}
		if err != nil {
			e.finish(j, fmt.Errorf("logprobs: %w", err))
			return
		}
	}
	piece, err := e.model.TokenToPiece(tok, false)
	if err != nil {
		e.finish(j, err)
		return
	}
	released, stop := j.stop.Push(piece)
	if stop != "" {
		j.res.FinishReason, j.res.StoppingWord = binding.FinishStop, stop
		e.emit(j, tok, released)
		e.finish(j, nil)
		return
	}
	last := (j.req.MaxTokens > 0 && j.nGen >= j.req.MaxTokens) || len(j.slot.tokens)+1 >= e.info.Context
	if last {
		released += j.stop.Flush()
	}
	e.emit(j, tok, released)
	if last {
		j.res.FinishReason = binding.FinishLength
		e.finish(j, nil)
		return
	}
	j.next, j.hasNext = tok, true
}

// emit delivers text released by tok (nothing while it is held back: it comes with a later token).
func (e *Engine) emit(j *job, tok int32, text string) {
	if text == "" {
		return
	}
	j.text.WriteString(text)
	j.events.push(engine.Token{ID: tok, Text: text, IDs: j.held, Logprobs: j.pending, Slot: j.slot.id})
	j.pending, j.held = nil, nil
}

// finish ends a running job: its slot is free for the next one, its result goes to its caller.
func (e *Engine) finish(j *job, err error) {
	if j.slot != nil && j.slot.job == j {
		j.slot.note()
		j.slot.job = nil
	}
	now := time.Now()
	evaluated := j.fed - j.cached
	t := &j.res.Timings
	t.PromptTokens, t.CachedTokens, t.PredictedTokens = evaluated, j.cached, j.nGen
	if j.slot != nil {
		j.res.Slot = j.slot.id
	}
	if !j.admitted.IsZero() {
		end := now
		if !j.sampled.IsZero() {
			end = j.sampled
			t.PredictedMS = ms(now.Sub(j.sampled).Seconds())
			if j.nGen > 0 && t.PredictedMS > 0 {
				t.PredictedPerSecond = float64(j.nGen) / now.Sub(j.sampled).Seconds()
			}
		}
		t.PromptMS = ms(end.Sub(j.admitted).Seconds())
		if evaluated > 0 && t.PromptMS > 0 {
			t.PromptPerSecond = float64(evaluated) / end.Sub(j.admitted).Seconds()
		}
	}
	j.res.Text = j.text.String()
	e.promptTokens.Add(int64(evaluated))
	e.generatedTokens.Add(int64(j.nGen))
	// Publish before the caller hears of the end, so that once Complete returns Slots shows what
	// the request left in its slot (a server's /slots read right after a response sees it).
	e.publishSlots()
	e.end(j, err)
}

// end releases what the job owns and tells its caller.
func (e *Engine) end(j *job, err error) {
	if j.sampler != nil {
		j.sampler.Close()
		j.sampler = nil
	}
	if err != nil && j.slot != nil {
		err = fmt.Errorf("slot %d: %w", j.slot.id, err)
	}
	j.events.finish(err)
}
