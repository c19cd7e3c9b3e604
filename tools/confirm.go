// Package tools holds what agent mode may do on the user's machine: read, list and write files inside
// the working directory, and run one shell command. Anything that changes the machine (a write, a
// command) needs a yes from a Confirmer first; there is no way around it.
package tools

import (
	"context"
	"errors"
)

// Confirmer asks the user a yes/no question. It returns true only for an explicit yes; anything else
// (no answer, an error, a cancelled ctx) counts as no.
type Confirmer interface {
	Confirm(ctx context.Context, question string) (bool, error)
}

// ConfirmFunc adapts a function to Confirmer.
type ConfirmFunc func(ctx context.Context, question string) (bool, error)

// Confirm implements Confirmer.
func (f ConfirmFunc) Confirm(ctx context.Context, question string) (bool, error) {
	return f(ctx, question)
}

// ErrDeclined is returned when the user did not confirm an action.
var ErrDeclined = errors.New("not confirmed by the user")

// ErrNoConfirmer is returned when an action that needs confirmation has nobody to ask.
var ErrNoConfirmer = errors.New("no way to ask the user for confirmation")

// confirm asks and folds every non-yes outcome into an error.
func confirm(ctx context.Context, c Confirmer, question string) error {
	if c == nil {
		return ErrNoConfirmer
	}
	if err := ctx.Err(); err != nil {
		return err
	}
	ok, err := c.Confirm(ctx, question)
	if err != nil {
		return err
	}
	if !ok {
		return ErrDeclined
	}
	return nil
}
