package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"sort"
	"strings"

	"github.com/fatih/color"
	"github.com/mattn/go-isatty"
	"github.com/urfave/cli/v2"

	"github.com/expertsniper/expertsniper/engine/local"
)

// exitCode is decided in one place (run) from the error a command returns.
type exitCode int

const (
	exitOK     exitCode = 0
	exitError  exitCode = 1
	exitUsage  exitCode = 2
	exitCancel exitCode = 130
)

// IOStreams is every stream a command may use; tests inject buffers. Data goes to Out, status to ErrOut.
type IOStreams struct {
	In     io.Reader
	Out    io.Writer
	ErrOut io.Writer
	// IsTTY reports whether Out is a terminal (colours, progress bars and line editing only then).
	IsTTY bool
}

func systemStreams() *IOStreams {
	tty := isatty.IsTerminal(os.Stdout.Fd()) || isatty.IsCygwinTerminal(os.Stdout.Fd())
	if os.Getenv("NO_COLOR") != "" || !tty {
		color.NoColor = true
	}
	return &IOStreams{In: os.Stdin, Out: os.Stdout, ErrOut: os.Stderr, IsTTY: tty}
}

// commandFactory builds one subcommand. Each subcommand lives in its own file and registers its
// factory from init, so adding a command never touches this file.
type commandFactory func(io *IOStreams) *cli.Command

var commandFactories []commandFactory

func register(f commandFactory) { commandFactories = append(commandFactories, f) }

// defaultAction, when set (by the REPL), runs for a bare `agent`.
var defaultAction func(io *IOStreams) cli.ActionFunc

// defaultFlags, when set (by the REPL), are the top-level flags that defaultAction reads.
var defaultFlags func() []cli.Flag

// usageError marks errors in how the command was called (exit code 2).
type usageError struct{ err error }

func (e usageError) Error() string { return e.err.Error() }
func (e usageError) Unwrap() error { return e.err }

func usagef(format string, args ...any) error { return usageError{fmt.Errorf(format, args...)} }

// A flag whose usage already says what its default is ("default: the engine's") must not get
// urfave/cli's own "(default: 0)" after it: help would show two defaults, one of them wrong.
func init() {
	stock := cli.FlagStringer
	cli.FlagStringer = func(f cli.Flag) string {
		text := stock(f)
		df, ok := f.(cli.DocGenerationFlag)
		if !ok || !strings.Contains(df.GetUsage(), "(default:") {
			return text
		}
		auto := " (default: " + df.GetDefaultText() + ")"
		if i := strings.LastIndex(text, auto); i >= 0 && strings.Count(text, "(default:") > 1 {
			text = text[:i] + text[i+len(auto):]
		}
		return text
	}
}

func newApp(streams *IOStreams) *cli.App {
	app := &cli.App{
		Name:                 "agent",
		Version:              ourVersion(), // --version prints more: version.go
		Usage:                "run Mixture-of-Experts models bigger than your RAM, streaming experts from disk",
		Reader:               streams.In,
		Writer:               streams.Out,
		ErrWriter:            streams.ErrOut,
		EnableBashCompletion: true,
		ExitErrHandler:       func(*cli.Context, error) {}, // run maps errors to exit codes
		OnUsageError: func(_ *cli.Context, err error, _ bool) error {
			return usageError{err}
		},
	}
	for _, f := range commandFactories {
		app.Commands = append(app.Commands, f(streams))
	}
	sort.Slice(app.Commands, func(i, j int) bool { return app.Commands[i].Name < app.Commands[j].Name })
	// A bad flag of a subcommand is a usage error too (urfave/cli consults only the command's own
	// handler, and without one the error would map to exit code 1).
	var onUsage func(cmds []*cli.Command)
	onUsage = func(cmds []*cli.Command) {
		for _, c := range cmds {
			if c.OnUsageError == nil {
				c.OnUsageError = app.OnUsageError
			}
			onUsage(c.Subcommands)
		}
	}
	onUsage(app.Commands)
	if defaultFlags != nil {
		app.Flags = defaultFlags()
	}
	if defaultAction != nil {
		app.Action = defaultAction(streams)
	}
	return app
}

// run executes the CLI and maps the outcome to an exit code.
func run(ctx context.Context, args []string, streams *IOStreams) exitCode {
	err := newApp(streams).RunContext(ctx, args)
	// A signal ends every command the same way, whatever it returned on its way out (docs/commands.md).
	if interruptedBySignal(ctx) || errors.Is(err, context.Canceled) {
		if err != nil && !errors.Is(err, context.Canceled) {
			fmt.Fprintf(streams.ErrOut, "%s %v\n", color.RedString("error:"), err)
		}
		fmt.Fprintln(streams.ErrOut, "cancelled")
		return exitCancel
	}
	if err == nil {
		return exitOK
	}
	fmt.Fprintf(streams.ErrOut, "%s %v\n", color.RedString("error:"), err)
	var ue usageError
	if errors.As(err, &ue) {
		return exitUsage
	}
	// The engine's option checks (engine/local.Validate and Decide) name the flag at fault.
	var oe *local.OptionError
	if errors.As(err, &oe) {
		return exitUsage
	}
	// urfave/cli reports a missing required flag with an unexported error type (after printing the
	// command's help); it is a usage error all the same. badinput_test.go holds it to that.
	if strings.HasPrefix(err.Error(), "Required flag") {
		return exitUsage
	}
	// So is help for a command that does not exist (`agent help nosuch`).
	if strings.HasPrefix(err.Error(), "No help topic for") {
		return exitUsage
	}
	return exitError
}
