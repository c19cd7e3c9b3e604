package main

import (
	"context"
	"fmt"
	"path/filepath"
	"text/tabwriter"
	"time"

	"github.com/urfave/cli/v2"

	"github.com/expertsniper/expertsniper/bytesize"
	"github.com/expertsniper/expertsniper/remote"
	"github.com/expertsniper/expertsniper/repl"
	"github.com/expertsniper/expertsniper/server"
)

func init() { register(contextCommand) }

// remoteFlag is --remote, shared by serve, the REPL and `agent context`.
func remoteFlag(dest *string) cli.Flag {
	return &cli.StringFlag{Name: "remote", Usage: "S3-compatible storage for saved contexts, s3://BUCKET[/PREFIX] (endpoint and keys from AWS_ENDPOINT_URL, AWS_ACCESS_KEY_ID, ... as for any S3 client)",
		EnvVars: []string{remote.EnvRemote}, Destination: dest}
}

// openRemote opens the remote named by the flag (or its variable), else by config.json's "remote";
// nil when neither names one.
func openRemote(ctx context.Context, flagValue, configPath string) (*remote.Remote, error) {
	url := flagValue
	if url == "" {
		if configPath == "" {
			dirs, err := repl.DefaultDirs()
			if err != nil {
				return nil, err
			}
			configPath = filepath.Join(dirs.Config, "config.json")
		}
		cfg, err := repl.LoadConfig(configPath)
		if err != nil {
			return nil, err
		}
		url = cfg.Remote
	}
	if url == "" {
		return nil, nil
	}
	r, err := remote.Open(ctx, url)
	if err != nil {
		return nil, usagef("--remote: %v", err)
	}
	return r, nil
}

type contextOptions struct {
	Remote     string
	ContextDir string
	Sessions   bool
}

func contextCommand(streams *IOStreams) *cli.Command {
	o := &contextOptions{}
	flags := []cli.Flag{
		remoteFlag(&o.Remote),
		&cli.StringFlag{Name: "context-dir", Usage: "the server's saved contexts (default: $XDG_DATA_HOME/expertsniper/contexts)", EnvVars: serveEnv("CONTEXT_DIR"), Destination: &o.ContextDir},
		&cli.BoolFlag{Name: "sessions", Usage: "the REPL's saved conversations (/save) instead of the server's contexts", Destination: &o.Sessions},
	}
	sub := func(name, args, usage string, run func(ctx context.Context, rem *remote.Remote, dir, name string) error) *cli.Command {
		return &cli.Command{Name: name, Usage: usage, ArgsUsage: args, Flags: flags, Action: func(c *cli.Context) error {
			want := 1
			if args == "" {
				want = 0
			}
			if c.NArg() != want {
				return usagef("agent context %s takes %s", name, map[int]string{0: "no arguments", 1: "one NAME"}[want])
			}
			rem, err := openRemote(c.Context, o.Remote, "")
			if err != nil {
				return err
			}
			if rem == nil {
				return usagef("%v", remote.ErrNoRemote)
			}
			dir, err := o.dir()
			if err != nil {
				return err
			}
			return run(c.Context, rem, dir, c.Args().First())
		}}
	}
	return &cli.Command{
		Name:  "context",
		Usage: "move saved contexts to and from S3-compatible storage (push, pull, ls, rm)",
		Description: "A saved context (POST /v1/context/save in `agent serve`; with --sessions, /save in the REPL)\n" +
			"travels as NAME.state and NAME.json under s3://BUCKET/PREFIX/. Downloads verify the state's\n" +
			"sha256 before it gets its final name and resume when interrupted.",
		Subcommands: []*cli.Command{
			sub("push", "NAME", "upload a saved context", func(ctx context.Context, rem *remote.Remote, dir, name string) error {
				start := time.Now()
				var m remote.Manifest
				var err error
				if o.Sessions {
					m, err = repl.SessionStore{Dir: dir}.Push(ctx, rem, name, progressPrinter(streams, "pushing", name))
				} else {
					m, err = server.PushContext(ctx, rem, dir, name, progressPrinter(streams, "pushing", name))
				}
				if err != nil {
					return err
				}
				fmt.Fprintf(streams.ErrOut, "pushed %s to %s: %s, %d tokens, sha256 %s (%s)\n", name, rem, bytesize.Format(m.StateBytes),
					m.Tokens, m.StateSHA256, rate(m.StateBytes, start))
				return nil
			}),
			sub("pull", "NAME", "download a saved context (resumes an interrupted download)", func(ctx context.Context, rem *remote.Remote, dir, name string) error {
				start := time.Now()
				var m remote.Manifest
				var err error
				if o.Sessions {
					_, m, err = repl.SessionStore{Dir: dir}.Pull(ctx, rem, name, remote.Model{}, progressPrinter(streams, "pulling", name))
				} else {
					m, err = server.PullContext(ctx, rem, dir, name, progressPrinter(streams, "pulling", name))
				}
				if err != nil {
					return err
				}
				fmt.Fprintf(streams.ErrOut, "pulled %s into %s: %s, %d tokens (%s)\n", name, dir, bytesize.Format(m.StateBytes), m.Tokens, rate(m.StateBytes, start))
				return nil
			}),
			sub("ls", "", "list the contexts in the remote", func(ctx context.Context, rem *remote.Remote, _, _ string) error {
				if o.Sessions {
					rem = repl.SessionsRemote(rem)
				}
				entries, err := rem.List(ctx)
				if err != nil {
					return err
				}
				tw := tabwriter.NewWriter(streams.Out, 0, 0, 2, ' ', 0)
				fmt.Fprintln(tw, "NAME\tTOKENS\tSIZE\tMODEL\tPUSHED")
				for _, e := range entries {
					fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\n", e.Name, e.Tokens, bytesize.Format(e.StateBytes), e.Model.Name, e.Pushed.Format(time.RFC3339))
				}
				return tw.Flush()
			}),
			sub("rm", "NAME", "delete a context from the remote (the local copy stays)", func(ctx context.Context, rem *remote.Remote, _, name string) error {
				if o.Sessions {
					rem = repl.SessionsRemote(rem)
				}
				if err := rem.Remove(ctx, name); err != nil {
					return err
				}
				fmt.Fprintf(streams.ErrOut, "removed %s from %s\n", name, rem)
				return nil
			}),
			contextBenchCommand(streams),
		},
	}
}

// dir is the local directory the command works on.
func (o *contextOptions) dir() (string, error) {
	if o.Sessions {
		dirs, err := repl.DefaultDirs()
		if err != nil {
			return "", err
		}
		return filepath.Join(dirs.Data, "sessions"), nil
	}
	if o.ContextDir != "" {
		return o.ContextDir, nil
	}
	return server.DefaultContextDir()
}

// progressPrinter shows a transfer's progress on stderr: one line redrawn on a terminal, a line per
// tenth of the way otherwise.
func progressPrinter(streams *IOStreams, verb, name string) remote.Progress {
	return remote.EveryTenth(func(tenth int, done, total int64) {
		if !streams.IsTTY {
			fmt.Fprintf(streams.ErrOut, "%s %s: %d%% of %s\n", verb, name, tenth*10, bytesize.Format(total))
			return
		}
		fmt.Fprintf(streams.ErrOut, "\r%s %s: %3d%% of %s", verb, name, tenth*10, bytesize.Format(total))
		if done == total {
			fmt.Fprintln(streams.ErrOut)
		}
	})
}

// rate says how long a transfer of n bytes took and how fast it went.
func rate(n int64, start time.Time) string {
	sec := time.Since(start).Seconds()
	if sec <= 0 {
		return "0 s"
	}
	return fmt.Sprintf("%.1f s, %.1f MB/s", sec, float64(n)/1e6/sec)
}
