package repl

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/expertsniper/expertsniper/agentmode"
	"github.com/expertsniper/expertsniper/engine"
)

// DocOptions tune AnswerDocument.
type DocOptions struct {
	// NotesTokens bounds the notes taken from each page (0 = 256); AnswerTokens bounds the final
	// answer (0 = 512).
	NotesTokens, AnswerTokens int
	Sampling                  engine.Sampling
	Slot                      int
	// Progress is told before each page is read (round counts combining passes from 1).
	Progress func(round, page, pages int)
	// Token streams the final answer.
	Token func(string) error
}

// DocAnswer is the result of AnswerDocument.
type DocAnswer struct {
	Text   string
	Pages  int // pages of the document in the first round (1: it fit whole)
	Rounds int // passes over notes needed before the answer fit
	Usage  agentmode.Usage
}

// maxDocRounds bounds the condensing passes; each must shrink the text, so this is only a backstop.
const maxDocRounds = 12

// AnswerDocument answers question about doc, which may be far longer than the model's context: the
// document is cut into pages that fit (at line boundaries where possible), the model takes notes on each
// page that bear on the question, and then answers from all notes together. When even the notes do not
// fit, they are paged and condensed again.
func AnswerDocument(ctx context.Context, eng engine.Engine, question, doc string, opts DocOptions) (DocAnswer, error) {
	var out DocAnswer
	question = strings.TrimSpace(question)
	if question == "" {
		return out, errors.New("answer document: empty question")
	}
	if strings.TrimSpace(doc) == "" {
		return out, errors.New("answer document: the document is empty")
	}
	notesMax, answerMax := opts.NotesTokens, opts.AnswerTokens
	if notesMax <= 0 {
		notesMax = 256
	}
	if answerMax <= 0 {
		answerMax = 512
	}
	nCtx := eng.Info().Context
	for round := 0; ; round++ {
		// Whole text fits with room for the answer: answer directly.
		final, err := renderDoc(eng, answerSystem, question, doc)
		if err != nil {
			return out, err
		}
		n, err := countTokens(eng, final)
		if err != nil {
			return out, err
		}
		if n+answerMax <= nCtx {
			if round == 0 {
				out.Pages = 1
			}
			out.Rounds = round
			return out, finish(ctx, eng, final, answerMax, opts, &out)
		}
		if round == maxDocRounds {
			return out, fmt.Errorf("answer document: still %d tokens of notes after %d rounds; the context (%d) is too small", n, round, nCtx)
		}
		overhead, err := overheadTokens(eng, question)
		if err != nil {
			return out, err
		}
		budget := nCtx - overhead - notesMax - 8
		if budget < 32 {
			return out, fmt.Errorf("answer document: a context of %d tokens leaves no room for a page next to the question (%d tokens of prompt)", nCtx, overhead)
		}
		pages, err := paginate(eng, doc, budget)
		if err != nil {
			return out, err
		}
		if round == 0 {
			out.Pages = len(pages)
		}
		var notes strings.Builder
		for i, page := range pages {
			if opts.Progress != nil {
				opts.Progress(round+1, i+1, len(pages))
			}
			prompt, err := renderDoc(eng, fmt.Sprintf(notesSystem, i+1, len(pages)), question, page)
			if err != nil {
				return out, err
			}
			res, err := eng.Complete(ctx, engine.Request{Prompt: prompt, MaxTokens: notesMax, Sampling: opts.Sampling, Slot: opts.Slot},
				func(engine.Token) error { return nil })
			out.Usage.Add(res.Timings)
			if err != nil {
				return out, fmt.Errorf("answer document: page %d of %d: %w", i+1, len(pages), err)
			}
			text := strings.TrimSpace(res.Text)
			if text == "" || strings.HasPrefix(strings.ToUpper(text), "NOTHING RELEVANT") {
				continue
			}
			fmt.Fprintf(&notes, "[part %d/%d] %s\n", i+1, len(pages), text)
		}
		next := notes.String()
		if strings.TrimSpace(next) == "" {
			next = "(No part of the document said anything relevant to the question.)"
		}
		if len(next) >= len(doc) {
			return out, fmt.Errorf("answer document: the notes (%d bytes) are no shorter than the text they condense (%d bytes); lower --notes-tokens or use a larger context", len(next), len(doc))
		}
		doc = next
	}
}

const notesSystem = `You read part %d of %d of a long document. Write short notes of everything in this part that helps answer the question, with exact figures and names. If nothing in it is relevant, reply exactly: NOTHING RELEVANT`

const answerSystem = `Answer the question from the document (or the notes taken from it) below. Be concise and say when it does not contain the answer.`

func renderDoc(eng engine.Engine, system, question, text string) (string, error) {
	p, err := eng.ApplyTemplate([]engine.Message{
		{Role: "system", Content: system},
		{Role: "user", Content: "Document:\n" + text + "\n\nQuestion: " + question},
	}, true)
	if err != nil {
		return "", fmt.Errorf("answer document: apply the chat template: %w", err)
	}
	return p, nil
}

func overheadTokens(eng engine.Engine, question string) (int, error) {
	p, err := renderDoc(eng, fmt.Sprintf(notesSystem, 999, 999), question, "")
	if err != nil {
		return 0, err
	}
	return countTokens(eng, p)
}

func countTokens(eng engine.Engine, s string) (int, error) {
	toks, err := eng.Tokenize(s, true, true)
	if err != nil {
		return 0, fmt.Errorf("answer document: tokenize: %w", err)
	}
	return len(toks), nil
}

// paginate cuts text into pages of at most budget tokens, at line ends where it can and inside a line
// (at token boundaries) where one line alone is too long.
func paginate(eng engine.Engine, text string, budget int) ([]string, error) {
	var pages []string
	var page strings.Builder
	pageTokens := 0
	flush := func() {
		if page.Len() > 0 {
			pages = append(pages, page.String())
			page.Reset()
			pageTokens = 0
		}
	}
	lines := strings.SplitAfter(text, "\n")
	for _, line := range lines {
		if line == "" {
			continue
		}
		toks, err := eng.Tokenize(line, false, false)
		if err != nil {
			return nil, fmt.Errorf("answer document: tokenize: %w", err)
		}
		if len(toks) > budget {
			flush()
			for start := 0; start < len(toks); start += budget {
				piece, err := eng.Detokenize(toks[start:min(start+budget, len(toks))])
				if err != nil {
					return nil, fmt.Errorf("answer document: detokenize: %w", err)
				}
				pages = append(pages, piece)
			}
			continue
		}
		// Token counts of adjacent lines add up to within a token or two of the joined count; the
		// margin in the caller's budget absorbs that.
		if pageTokens+len(toks) > budget {
			flush()
		}
		page.WriteString(line)
		pageTokens += len(toks)
	}
	flush()
	return pages, nil
}

func finish(ctx context.Context, eng engine.Engine, prompt string, maxTokens int, opts DocOptions, out *DocAnswer) error {
	var text strings.Builder
	res, err := eng.Complete(ctx, engine.Request{Prompt: prompt, MaxTokens: maxTokens, Sampling: opts.Sampling, Slot: opts.Slot},
		func(t engine.Token) error {
			text.WriteString(t.Text)
			if opts.Token != nil {
				return opts.Token(t.Text)
			}
			return nil
		})
	out.Text = text.String()
	out.Usage.Add(res.Timings)
	if err != nil {
		return fmt.Errorf("answer document: %w", err)
	}
	return nil
}
