// Package faultfs wraps a sniper.FS to inject faults (errors, short reads, truncation, latency) into
// chosen operations, in the style of pebble's errorfs: an Injector looks at each Op and decides.
package faultfs

import (
	"context"
	"fmt"
	"io"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/expertsniper/expertsniper/sniper"
)

// OpKind is the kind of a file operation.
type OpKind int

const (
	OpOpen OpKind = iota + 1
	OpRead
)

func (k OpKind) String() string {
	switch k {
	case OpOpen:
		return "open"
	case OpRead:
		return "read"
	}
	return fmt.Sprintf("OpKind(%d)", int(k))
}

// Op is one operation about to happen.
type Op struct {
	Kind   OpKind
	Path   string
	Offset int64
	Len    int
}

// Fault is what an injector decides for one operation. The zero Fault lets it run normally.
type Fault struct {
	// Err fails the operation with this error (nothing is read).
	Err error
	// ShortRead reads only the first Short bytes then reports io.ErrUnexpectedEOF, like a file that
	// ends early.
	ShortRead bool
	Short     int
	// Delay sleeps this long before the operation (respecting ctx).
	Delay time.Duration
}

// Injector decides the fault of each operation. It may be called from several goroutines.
type Injector interface {
	MaybeFault(op Op) Fault
	fmt.Stringer
}

// ErrInjected is the error the EIO injector returns; it wraps syscall.EIO.
var ErrInjected = fmt.Errorf("injected fault: %w", syscall.EIO)

// InjectorFunc adapts a function.
type InjectorFunc func(op Op) Fault

func (f InjectorFunc) MaybeFault(op Op) Fault { return f(op) }
func (f InjectorFunc) String() string         { return "InjectorFunc" }

// Predicate selects operations.
type Predicate func(op Op) bool

// Reads selects read operations.
func Reads(op Op) bool { return op.Kind == OpRead }

// PathMatch selects operations on files whose base name matches the glob pattern.
func PathMatch(pattern string) Predicate {
	return func(op Op) bool {
		ok, _ := filepath.Match(pattern, filepath.Base(op.Path))
		return ok
	}
}

// OnIndex selects the i-th (0-based) operation that pred selects, counting across calls.
func OnIndex(i int64, pred Predicate) Predicate {
	var n atomic.Int64
	return func(op Op) bool {
		if pred != nil && !pred(op) {
			return false
		}
		return n.Add(1)-1 == i
	}
}

// InRange selects reads that overlap file bytes [lo, hi).
func InRange(lo, hi int64) Predicate {
	return func(op Op) bool { return op.Kind == OpRead && op.Offset < hi && op.Offset+int64(op.Len) > lo }
}

type injector struct {
	name  string
	pred  Predicate
	fault func(op Op) Fault
}

func (i injector) MaybeFault(op Op) Fault {
	if i.pred(op) {
		return i.fault(op)
	}
	return Fault{}
}
func (i injector) String() string { return i.name }

// EIO fails the selected operations with ErrInjected.
func EIO(pred Predicate) Injector {
	return injector{"EIO", pred, func(Op) Fault { return Fault{Err: ErrInjected} }}
}

// ShortRead makes the selected reads return only half of what was asked for.
func ShortRead(pred Predicate) Injector {
	return injector{"ShortRead", pred, func(op Op) Fault { return Fault{ShortRead: true, Short: op.Len / 2} }}
}

// Truncate makes the file appear to end at size for the selected reads: bytes past size are not read.
func Truncate(size int64, pred Predicate) Injector {
	return injector{fmt.Sprintf("Truncate(%d)", size), pred, func(op Op) Fault {
		if op.Offset+int64(op.Len) <= size {
			return Fault{}
		}
		return Fault{ShortRead: true, Short: int(max(size-op.Offset, 0))}
	}}
}

// Latency delays the selected operations by d.
func Latency(d time.Duration, pred Predicate) Injector {
	return injector{fmt.Sprintf("Latency(%v)", d), pred, func(Op) Fault { return Fault{Delay: d} }}
}

// FS wraps an FS with an injector and records every operation it saw.
type FS struct {
	Inner    sniper.FS
	Injector Injector

	mu  sync.Mutex
	ops []Op
}

// Wrap returns inner with inj applied to every operation.
func Wrap(inner sniper.FS, inj Injector) *FS { return &FS{Inner: inner, Injector: inj} }

// Unwrap returns the wrapped FS.
func (f *FS) Unwrap() sniper.FS { return f.Inner }

// Ops returns the operations seen so far.
func (f *FS) Ops() []Op {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]Op(nil), f.ops...)
}

func (f *FS) decide(op Op) Fault {
	f.mu.Lock()
	f.ops = append(f.ops, op)
	f.mu.Unlock()
	if f.Injector == nil {
		return Fault{}
	}
	return f.Injector.MaybeFault(op)
}

// Open opens path through the inner FS unless an injected fault fails it.
func (f *FS) Open(path string) (sniper.File, error) {
	if ft := f.decide(Op{Kind: OpOpen, Path: path}); ft.Err != nil {
		return nil, fmt.Errorf("open %q: %w", path, ft.Err)
	}
	inner, err := f.Inner.Open(path)
	if err != nil {
		return nil, err
	}
	return &file{File: inner, fs: f}, nil
}

var _ sniper.FS = (*FS)(nil)

type file struct {
	sniper.File
	fs *FS
}

var (
	_ sniper.File         = (*file)(nil)
	_ sniper.VectorReader = (*file)(nil)
)

func (f *file) ReadAt(ctx context.Context, p []byte, off int64) error {
	return f.ReadvAt(ctx, [][]byte{p}, off)
}

// ReadvAt is one operation over the whole range (as the disk sees one request); an injected short
// read fills the buffers up to the cut.
func (f *file) ReadvAt(ctx context.Context, bufs [][]byte, off int64) error {
	total := 0
	for _, b := range bufs {
		total += len(b)
	}
	ft := f.fs.decide(Op{Kind: OpRead, Path: f.Path(), Offset: off, Len: total})
	if ft.Delay > 0 {
		t := time.NewTimer(ft.Delay)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return ctx.Err()
		}
	}
	if ft.Err != nil {
		return &sniper.ReadError{Path: f.Path(), Offset: off, Len: total, Err: ft.Err}
	}
	if ft.ShortRead {
		at, left := off, min(ft.Short, total)
		for _, b := range bufs {
			if left <= 0 {
				break
			}
			n := min(left, len(b))
			if err := f.File.ReadAt(ctx, b[:n], at); err != nil {
				return err
			}
			at, left = at+int64(n), left-n
		}
		return &sniper.ReadError{Path: f.Path(), Offset: off, Len: total, Err: errShort}
	}
	return sniper.ReadVector(ctx, f.File, bufs, off)
}

// errShort is what an injected short read reports; it wraps io.ErrUnexpectedEOF as a real one would.
var errShort = fmt.Errorf("injected short read: %w", io.ErrUnexpectedEOF)
