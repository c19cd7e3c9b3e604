//go:build !linux && !darwin

package plan

func openDirect(string) (directReader, error) { return nil, ErrNoDirectIO }
