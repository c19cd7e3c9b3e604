package binding

import (
	"context"
	"errors"
	"fmt"
	"iter"
	"strings"
	"time"
	"unicode/utf8"
)

// Finish reasons.
const (
	FinishStop   = "stop"   // end-of-generation token or a stop string
	FinishLength = "length" // MaxTokens reached or the context is full
)

// GenerateOptions control one generation. Build them with the Generate* options.
type GenerateOptions struct {
	MaxTokens int      // <= 0: until end of generation or the context is full
	Stop      []string // generation ends before the first of these; they are not emitted
	Sampling  SamplerParams
	// Sampler, when set, is used instead of building one from Sampling (it keeps its history).
	Sampler *Sampler
	// OnToken is called for every generated token with the text released by it. The text can be
	// empty (an incomplete UTF-8 sequence, or text held back because it may begin a stop string)
	// or carry text held back earlier. Returning an error stops generation with that error.
	OnToken func(tok Token, text string) error
	// Logprobs reports each generated token's log-probability (Result.Logprobs, OnLogprob) with
	// TopLogprobs alternatives.
	Logprobs    bool
	TopLogprobs int
	// OnLogprob, with Logprobs, is called for each generated token before OnToken.
	OnLogprob func(TokenLogprob) error
	// OnLogits receives the float32 logits of every position evaluated by this call, prompt and
	// generated, in order (the sniper's --logits-out). Use with NoCacheReuse for full coverage.
	OnLogits LogitsFunc
	// NoCacheReuse evaluates the whole prompt even when the context's cache starts with it.
	NoCacheReuse bool
	// OnPromptProgress, when set, is called after each micro-batch of the prompt with the tokens
	// evaluated so far and the number to evaluate (a long prompt on a streamed model takes minutes).
	OnPromptProgress func(done, total int)
	// AddSpecial and ParseSpecial are passed to Tokenize for text prompts (defaults true/true in
	// Generate; see WithTokenizeFlags).
	AddSpecial, ParseSpecial bool
}

// GenerateOption sets one generation option.
type GenerateOption func(*GenerateOptions)

// WithMaxTokens limits the number of generated tokens.
func WithMaxTokens(n int) GenerateOption { return func(o *GenerateOptions) { o.MaxTokens = n } }

// WithStop ends generation before any of these strings (not emitted).
func WithStop(stop ...string) GenerateOption {
	return func(o *GenerateOptions) { o.Stop = append(o.Stop, stop...) }
}

// WithSampling sets the sampling parameters (default greedy).
func WithSampling(p SamplerParams) GenerateOption { return func(o *GenerateOptions) { o.Sampling = p } }

// WithSampler uses an existing sampler chain.
func WithSampler(s *Sampler) GenerateOption { return func(o *GenerateOptions) { o.Sampler = s } }

// WithTokenCallback calls fn for each generated token (go-llama.cpp's SetTokenCallback, with an
// error to stop instead of a bool).
func WithTokenCallback(fn func(tok Token, text string) error) GenerateOption {
	return func(o *GenerateOptions) { o.OnToken = fn }
}

// WithLogprobs reports each generated token's log-probability and top alternatives to fn (may be nil)
// and in Result.Logprobs.
func WithLogprobs(top int, fn func(TokenLogprob) error) GenerateOption {
	return func(o *GenerateOptions) { o.Logprobs, o.TopLogprobs, o.OnLogprob = true, top, fn }
}

// WithLogits receives the logits of every evaluated position.
func WithLogits(fn LogitsFunc) GenerateOption { return func(o *GenerateOptions) { o.OnLogits = fn } }

// WithPromptProgress reports the prompt's evaluation after each micro-batch (see OnPromptProgress).
func WithPromptProgress(fn func(done, total int)) GenerateOption {
	return func(o *GenerateOptions) { o.OnPromptProgress = fn }
}

// WithoutCacheReuse evaluates the whole prompt from an empty cache.
func WithoutCacheReuse() GenerateOption { return func(o *GenerateOptions) { o.NoCacheReuse = true } }

// WithTokenizeFlags sets how a text prompt is tokenized.
func WithTokenizeFlags(addSpecial, parseSpecial bool) GenerateOption {
	return func(o *GenerateOptions) { o.AddSpecial, o.ParseSpecial = addSpecial, parseSpecial }
}

// Timings of one generation, from the binding's own clock.
type Timings struct {
	PromptTokens     int // tokens evaluated for the prompt
	CachedTokens     int // prompt tokens reused from the cache
	PromptDuration   time.Duration
	Generated        int
	GenerateDuration time.Duration
}

// PromptPerSecond is the prompt evaluation rate (0 when nothing was evaluated).
func (t Timings) PromptPerSecond() float64 { return rate(t.PromptTokens, t.PromptDuration) }

// GeneratedPerSecond is the generation rate.
func (t Timings) GeneratedPerSecond() float64 { return rate(t.Generated, t.GenerateDuration) }

func rate(n int, d time.Duration) float64 {
	if n == 0 || d <= 0 {
		return 0
	}
	return float64(n) / d.Seconds()
}

// Result of a generation.
type Result struct {
	Text         string
	Tokens       []Token        // generated tokens, including one that ended generation by a stop string
	FinishReason string         // FinishStop or FinishLength
	StopString   string         // the stop string that ended generation, if any
	Logprobs     []TokenLogprob // one per generated token, with WithLogprobs
	Timings      Timings
}

// Generate tokenizes prompt and generates a continuation with sequence 0 of the context.
func (c *Context) Generate(ctx context.Context, prompt string, opts ...GenerateOption) (Result, error) {
	o := GenerateOptions{AddSpecial: true, ParseSpecial: true}
	for _, fn := range opts {
		fn(&o)
	}
	toks, err := c.model.Tokenize(prompt, o.AddSpecial, o.ParseSpecial)
	if err != nil {
		return Result{}, fmt.Errorf("generate: %w", err)
	}
	return c.generate(ctx, toks, o)
}

// GenerateTokens generates a continuation of prompt tokens. When the context's cache already holds a
// prefix of prompt (a previous turn, a loaded state), only the rest is evaluated.
func (c *Context) GenerateTokens(ctx context.Context, prompt []Token, opts ...GenerateOption) (Result, error) {
	var o GenerateOptions
	for _, fn := range opts {
		fn(&o)
	}
	return c.generate(ctx, prompt, o)
}

// Predict is the go-llama.cpp-style entry point: it returns the generated text.
func (c *Context) Predict(ctx context.Context, prompt string, opts ...GenerateOption) (string, error) {
	r, err := c.Generate(ctx, prompt, opts...)
	return r.Text, err
}

// Piece is one step of Stream: a generated token and the text it released.
type Piece struct {
	Token Token
	Text  string
}

// errStreamStopped ends generation when the consumer of Stream breaks out of its loop.
var errStreamStopped = errors.New("stream consumer stopped")

// Stream generates like Generate and yields each token as it is decoded. Breaking out of the loop
// stops generation; an error ends the sequence as its last element. Any OnToken option is ignored.
func (c *Context) Stream(ctx context.Context, prompt string, opts ...GenerateOption) iter.Seq2[Piece, error] {
	return func(yield func(Piece, error) bool) {
		stopped := false
		onTok := func(tok Token, text string) error {
			if !yield(Piece{Token: tok, Text: text}, nil) {
				stopped = true
				return errStreamStopped
			}
			return nil
		}
		_, err := c.Generate(ctx, prompt, append(opts, WithTokenCallback(onTok))...)
		if err != nil && !stopped {
			yield(Piece{}, err)
		}
	}
}

// PrepareForPrompt makes sequence 0 hold the longest usable prefix of prompt and returns how many of
// its tokens are cached: the rest must be evaluated. At least one token is always left to evaluate,
// since sampling needs the logits of the last one. Recurrent models, which cannot drop a suffix,
// fall back to an empty cache unless the cache is exactly a prefix of prompt.
func (c *Context) PrepareForPrompt(prompt []Token, reuse bool) (int, error) {
	if _, err := c.ptr(); err != nil {
		return 0, err
	}
	common := 0
	if reuse {
		for common < len(c.past) && common < len(prompt) && c.past[common] == prompt[common] {
			common++
		}
		if common == len(prompt) && common > 0 {
			common--
		}
	}
	if common < len(c.past) {
		ok, err := c.RemoveTokens(0, common, -1)
		if err != nil {
			return 0, err
		}
		if !ok {
			if err := c.ClearMemory(); err != nil {
				return 0, err
			}
			common = 0
		}
	}
	return common, nil
}

// evalPrompt evaluates the prompt; with a progress callback, one micro-batch (n_ubatch tokens) per
// llama_decode call. llama_decode splits a single sequence's batch into those same micro-batches in
// order, so the computation, and every logit, is the same either way.
func (c *Context) evalPrompt(ctx context.Context, toks []Token, o GenerateOptions) error {
	if o.OnPromptProgress == nil || c.nUBatch <= 0 {
		return c.Eval(ctx, toks, o.OnLogits)
	}
	for done := 0; done < len(toks); {
		end := min(done+c.nUBatch, len(toks))
		if err := c.Eval(ctx, toks[done:end], o.OnLogits); err != nil {
			return err
		}
		done = end
		o.OnPromptProgress(done, len(toks))
	}
	return nil
}

func (c *Context) generate(ctx context.Context, prompt []Token, o GenerateOptions) (res Result, err error) {
	if len(prompt) == 0 {
		return res, fmt.Errorf("generate: the prompt is empty (no tokens)")
	}
	if len(prompt) >= c.nCtx {
		return res, fmt.Errorf("generate: prompt of %d tokens does not fit in the context of %d", len(prompt), c.nCtx)
	}
	smpl := o.Sampler
	if smpl == nil {
		s, err := NewSampler(c.model, o.Sampling)
		if err != nil {
			return res, fmt.Errorf("generate: %w", err)
		}
		defer s.Close()
		smpl = s
	}
	cached, err := c.PrepareForPrompt(prompt, !o.NoCacheReuse)
	if err != nil {
		return res, fmt.Errorf("generate: %w", err)
	}
	res.Timings.CachedTokens = cached
	res.Timings.PromptTokens = len(prompt) - cached

	start := time.Now()
	if err := c.evalPrompt(ctx, prompt[cached:], o); err != nil {
		return res, fmt.Errorf("generate: prompt: %w", err)
	}
	res.Timings.PromptDuration = time.Since(start)

	genStart := time.Now()
	defer func() { res.Timings.GenerateDuration = time.Since(genStart) }()
	out := NewStopFilter(o.Stop)
	var text strings.Builder
	emit := func(tok Token, s string) error {
		text.WriteString(s)
		if o.OnToken != nil {
			return o.OnToken(tok, s)
		}
		return nil
	}
	defer func() { res.Text = text.String() }()
	for {
		if err := ctx.Err(); err != nil {
			return res, fmt.Errorf("generate: %w", err)
		}
		tok, err := smpl.Sample(c, -1)
		if err != nil {
			return res, fmt.Errorf("generate: %w", err)
		}
		if c.model.IsEOG(tok) {
			res.FinishReason = FinishStop
			return res, emit(tok, out.Flush())
		}
		res.Tokens = append(res.Tokens, tok)
		res.Timings.Generated++
		if o.Logprobs {
			if err := c.reportLogprob(&res, tok, o); err != nil {
				return res, fmt.Errorf("generate: logprobs: %w", err)
			}
		}
		piece, err := c.model.TokenToPiece(tok, false)
		if err != nil {
			return res, fmt.Errorf("generate: %w", err)
		}
		released, stop := out.Push(piece)
		if stop != "" {
			res.FinishReason, res.StopString = FinishStop, stop
			return res, emit(tok, released)
		}
		last := (o.MaxTokens > 0 && len(res.Tokens) >= o.MaxTokens) || len(c.past)+1 >= c.nCtx
		if last {
			released += out.Flush()
		}
		if err := emit(tok, released); err != nil {
			return res, err
		}
		if last {
			res.FinishReason = FinishLength
			return res, nil
		}
		if err := c.Eval(ctx, []Token{tok}, o.OnLogits); err != nil {
			return res, fmt.Errorf("generate: token %d: %w", len(res.Tokens), err)
		}
	}
}

// reportLogprob computes tok's log-probability from the logits it was sampled from (the last output).
func (c *Context) reportLogprob(res *Result, tok Token, o GenerateOptions) error {
	logits, err := c.Logits(-1)
	if err != nil {
		return err
	}
	lp, err := c.model.Logprobs(logits, tok, o.TopLogprobs)
	if err != nil {
		return err
	}
	res.Logprobs = append(res.Logprobs, lp)
	if o.OnLogprob != nil {
		return o.OnLogprob(lp)
	}
	return nil
}

// StopFilter releases generated text as soon as it can no longer be part of a stop string, and
// never releases a stop string or anything after it. It also holds back an incomplete UTF-8
// sequence at the end, since a token can end in the middle of a character. Generate uses one; a
// caller running its own decoding loop (engine/local's scheduler) uses one per sequence.
type StopFilter struct {
	stops   []string
	pending string
}

// NewStopFilter returns a filter for stops (empty strings are ignored).
func NewStopFilter(stops []string) *StopFilter {
	var s []string
	for _, x := range stops {
		if x != "" {
			s = append(s, x)
		}
	}
	return &StopFilter{stops: s}
}

// Push adds piece and returns the text that is now safe to release, and the stop string if one
// appeared (the text before it is then released and the rest dropped).
func (f *StopFilter) Push(piece string) (released, stop string) {
	f.pending += piece
	first, which := -1, ""
	for _, s := range f.stops {
		if i := strings.Index(f.pending, s); i >= 0 && (first < 0 || i < first) {
			first, which = i, s
		}
	}
	if first >= 0 {
		released, f.pending = f.pending[:first], ""
		return released, which
	}
	keep := 0 // bytes at the end that may begin a stop string
	for _, s := range f.stops {
		for k := min(len(s)-1, len(f.pending)); k > keep; k-- {
			if strings.HasSuffix(f.pending, s[:k]) {
				keep = k
				break
			}
		}
	}
	cut := len(f.pending) - keep
	cut -= incompleteUTF8Tail(f.pending[:cut])
	released, f.pending = f.pending[:cut], f.pending[cut:]
	return released, ""
}

// Flush releases everything held back.
func (f *StopFilter) Flush() string {
	s := f.pending
	f.pending = ""
	return s
}

// incompleteUTF8Tail is the length of a UTF-8 sequence cut short at the end of s (0 if none).
func incompleteUTF8Tail(s string) int {
	for n := 1; n <= 3 && n <= len(s); n++ {
		b := s[len(s)-n]
		if b < 0x80 {
			return 0 // ASCII: complete
		}
		if utf8.RuneStart(b) {
			need := 2
			switch {
			case b >= 0xF0:
				need = 4
			case b >= 0xE0:
				need = 3
			}
			if n < need {
				return n
			}
			return 0
		}
	}
	return 0
}
