//go:build !unix

package testmodels

import (
	"context"
	"errors"
)

func lockFile(context.Context, string) (func(), error) {
	return nil, errors.New("test model cache locking needs a Unix system")
}
