package main

import (
	"context"
	"encoding/json"
	"fmt"
	"text/tabwriter"

	"github.com/urfave/cli/v2"

	"github.com/expertsniper/expertsniper/bytesize"
	"github.com/expertsniper/expertsniper/gguf"
	"github.com/expertsniper/expertsniper/hub"
)

func init() { register(modelsCommand) }

type modelsOptions struct {
	Dir  string
	JSON bool
}

// modelEntry is one line of `agent models` (and one object of --json; field names are stable).
type modelEntry struct {
	Ref          string   `json:"ref"` // what to pass to -m
	Repo         string   `json:"repo"`
	File         string   `json:"file"`
	Paths        []string `json:"paths"`
	Size         int64    `json:"size"`
	Quant        string   `json:"quant"`
	Architecture string   `json:"architecture"`
	Parts        int      `json:"parts"`
	Incomplete   bool     `json:"incomplete"`
	Error        string   `json:"error,omitempty"` // why the header could not be read
}

func modelsCommand(streams *IOStreams) *cli.Command {
	opts := &modelsOptions{}
	return &cli.Command{
		Name:  "models",
		Usage: "list the models in the models directory",
		Description: "Models pulled with `agent pull` (or copied into the directory as OWNER/REPO/FILE.gguf or FILE.gguf).\n" +
			"The first column is the name to give -m; `agent -m OWNER/REPO:QUANT` and `agent -m REPO:QUANT` also work.",
		Flags: []cli.Flag{
			&cli.StringFlag{Name: "dir", Usage: "models directory (default: $EXPERTSNIPER_MODELS or ~/.local/share/expertsniper/models)", Destination: &opts.Dir},
			&cli.BoolFlag{Name: "json", Usage: "print JSON for scripts", Destination: &opts.JSON},
		},
		Action: func(c *cli.Context) error {
			args, err := interspersedArgs(c)
			if err != nil {
				return err
			}
			if len(args) != 0 {
				return usagef("models takes no arguments, got %q", args)
			}
			return runModels(c.Context, streams, opts)
		},
	}
}

func runModels(_ context.Context, streams *IOStreams, opts *modelsOptions) error {
	dir := opts.Dir
	if dir == "" {
		var err error
		if dir, err = hub.ModelsDir(); err != nil {
			return err
		}
	}
	local, err := hub.ListLocal(dir)
	if err != nil {
		return err
	}
	entries := make([]modelEntry, 0, len(local))
	for _, m := range local {
		e := modelEntry{Ref: m.Ref(), Repo: m.Repo, File: m.Name, Paths: m.Paths, Size: m.Size, Quant: m.Quant,
			Parts: len(m.Paths), Incomplete: m.Incomplete}
		// The first part of a split model carries the metadata.
		if f, err := gguf.Open(m.Paths[0]); err != nil {
			e.Error = err.Error()
		} else {
			e.Architecture = f.Architecture()
		}
		entries = append(entries, e)
	}
	partial, err := hub.ListPartial(dir)
	if err != nil {
		return err
	}
	if opts.JSON {
		enc := json.NewEncoder(streams.Out)
		enc.SetIndent("", "  ")
		return enc.Encode(entries)
	}
	for _, p := range partial {
		done := bytesize.Format(p.Have)
		if p.Size > 0 {
			done = fmt.Sprintf("%s of %s", done, bytesize.Format(p.Size))
		}
		ref := p.File
		if p.Repo != "" {
			ref = p.Repo + ":" + p.File
		}
		fmt.Fprintf(streams.ErrOut, "unfinished download: %s (%s; `agent pull %s` resumes it)\n", ref, done, ref)
	}
	if len(entries) == 0 {
		fmt.Fprintf(streams.ErrOut, "no models in %s; download one with: agent pull OWNER/REPO:QUANT\n", dir)
		return nil
	}
	fmt.Fprintf(streams.ErrOut, "models in %s\n", dir)
	tw := tabwriter.NewWriter(streams.Out, 0, 0, 2, ' ', 0)
	fmt.Fprintln(tw, "NAME\tSIZE\tQUANT\tARCH")
	for _, e := range entries {
		arch := e.Architecture
		if e.Error != "" {
			arch = "unreadable: " + e.Error
		}
		name := e.Ref
		if e.Parts > 1 {
			name += fmt.Sprintf(" (%d parts)", e.Parts)
		}
		if e.Incomplete {
			name += " (incomplete: parts missing)"
		}
		quant := e.Quant
		if quant == "" {
			quant = "-"
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", name, bytesize.Format(e.Size), quant, arch)
	}
	return tw.Flush()
}
