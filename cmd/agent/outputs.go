package main

import (
	"fmt"
	"os"
	"path/filepath"

	"github.com/google/renameio/v2"
)

// outputFile is a file a command writes (--logits-out, --stats-json). It is created when the command
// starts, under a hidden temporary name next to its destination, so that a path that cannot be written
// fails before any work; it takes its name only when the command succeeds, and is removed when the
// command fails or is interrupted. No command leaves a partial output under the name asked for.
type outputFile struct {
	*renameio.PendingFile
	flag, path string
}

// createOutput starts the output for flag (e.g. "--logits-out") at path.
func createOutput(flag, path string) (*outputFile, error) {
	if st, err := os.Stat(path); err == nil && st.IsDir() {
		return nil, usagef("%s %s: is a directory", flag, path)
	}
	f, err := renameio.NewPendingFile(path, renameio.WithTempDir(filepath.Dir(path)), renameio.WithPermissions(0o644))
	if err != nil {
		return nil, fmt.Errorf("%s: cannot write %s: %w", flag, path, err)
	}
	return &outputFile{PendingFile: f, flag: flag, path: path}, nil
}

// finish gives the file its name if *err is nil, else removes it; an error in doing so becomes *err.
// Meant to be deferred. A nil outputFile does nothing.
func (o *outputFile) finish(err *error) {
	if o == nil {
		return
	}
	if *err != nil {
		o.Cleanup()
		return
	}
	if cerr := o.CloseAtomicallyReplace(); cerr != nil {
		o.Cleanup()
		*err = fmt.Errorf("%s: write %s: %w", o.flag, o.path, cerr)
	}
}
