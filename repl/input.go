package repl

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/chzyer/readline"
)

// LineReader reads one line with a prompt. It returns io.EOF at the end of input (Ctrl-D) and
// ErrInterrupted when the user pressed Ctrl-C at the prompt.
type LineReader interface {
	ReadLine(prompt string) (string, error)
	Close() error
}

// ErrInterrupted is returned by a LineReader for Ctrl-C at the prompt.
var ErrInterrupted = errors.New("interrupted")

// plainReader reads lines from a non-terminal (a pipe, a test), echoing nothing but the prompt.
type plainReader struct {
	in  *bufio.Reader
	out io.Writer
}

// NewPlainReader reads lines from in and writes prompts to out (nil: no prompts).
func NewPlainReader(in io.Reader, out io.Writer) LineReader {
	return &plainReader{in: bufio.NewReader(in), out: out}
}

func (p *plainReader) ReadLine(prompt string) (string, error) {
	if p.out != nil && prompt != "" {
		fmt.Fprint(p.out, prompt)
	}
	line, err := p.in.ReadString('\n')
	if err != nil && !(errors.Is(err, io.EOF) && line != "") {
		return "", err
	}
	return strings.TrimRight(line, "\r\n"), nil
}

func (p *plainReader) Close() error { return nil }

// terminalReader is line editing with history on a terminal.
type terminalReader struct{ rl *readline.Instance }

// NewTerminalReader edits lines on the terminal (stdin), with history kept in historyFile ("" = none)
// and Tab completion of slash commands.
func NewTerminalReader(historyFile string, out, errOut io.Writer) (LineReader, error) {
	if historyFile != "" {
		if err := os.MkdirAll(filepath.Dir(historyFile), 0o755); err != nil {
			return nil, fmt.Errorf("create history directory: %w", err)
		}
	}
	var items []readline.PrefixCompleterInterface
	for _, c := range commandList() {
		items = append(items, readline.PcItem("/"+c.name))
	}
	rl, err := readline.NewEx(&readline.Config{
		HistoryFile:       historyFile,
		HistoryLimit:      2000,
		HistorySearchFold: true,
		InterruptPrompt:   "^C",
		EOFPrompt:         "",
		AutoComplete:      readline.NewPrefixCompleter(items...),
		// Only whole requests go into the history (readInput adds them): not the answers to y/N
		// questions, nor the lines of a multi-line request one by one.
		DisableAutoSaveHistory: true,
		Stdout:                 out,
		Stderr:                 errOut,
	})
	if err != nil {
		return nil, fmt.Errorf("start line editing: %w", err)
	}
	return &terminalReader{rl: rl}, nil
}

func (t *terminalReader) ReadLine(prompt string) (string, error) {
	t.rl.SetPrompt(prompt)
	line, err := t.rl.Readline()
	if errors.Is(err, readline.ErrInterrupt) {
		return "", ErrInterrupted
	}
	return line, err
}

func (t *terminalReader) Close() error { return t.rl.Close() }

// AddHistory records a request in the history (and its file).
func (t *terminalReader) AddHistory(line string) { t.rl.SaveHistory(line) }

// addHistory records a whole single-line request where lr keeps a history. A multi-line request is
// not recorded: the history file holds one line per entry, and its lines alone are fragments.
func addHistory(lr LineReader, request string) {
	h, ok := lr.(interface{ AddHistory(string) })
	if !ok || strings.TrimSpace(request) == "" || strings.Contains(request, "\n") {
		return
	}
	h.AddHistory(request)
}

// readInput reads one request, joining continuation lines: a line ending in a backslash continues on
// the next line, and a line that is just `"""` opens a block that ends at the next `"""`.
func readInput(lr LineReader, prompt, more string) (string, error) {
	line, err := lr.ReadLine(prompt)
	if err != nil {
		return "", err
	}
	if strings.HasPrefix(strings.TrimSpace(line), `"""`) {
		first := strings.TrimPrefix(strings.TrimSpace(line), `"""`)
		if strings.HasSuffix(first, `"""`) && len(first) >= 3 { // """one line"""
			addHistory(lr, line)
			return strings.TrimSuffix(first, `"""`), nil
		}
		var b strings.Builder
		if first != "" {
			b.WriteString(first)
			b.WriteByte('\n')
		}
		for {
			next, err := lr.ReadLine(more)
			if err != nil {
				return "", err
			}
			if i := strings.Index(next, `"""`); i >= 0 {
				b.WriteString(next[:i])
				return strings.TrimRight(b.String(), "\n"), nil
			}
			b.WriteString(next)
			b.WriteByte('\n')
		}
	}
	var b strings.Builder
	for strings.HasSuffix(line, `\`) {
		b.WriteString(strings.TrimSuffix(line, `\`))
		b.WriteByte('\n')
		if line, err = lr.ReadLine(more); err != nil {
			return "", err
		}
	}
	b.WriteString(line)
	addHistory(lr, b.String())
	return b.String(), nil
}
