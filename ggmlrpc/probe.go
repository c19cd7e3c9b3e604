// Package ggmlrpc is what expertsniper knows about llama.cpp's RPC backend (ggml-rpc) without cgo:
// the worker endpoints a user names (--rpc HOST:PORT,…), a probe that speaks the protocol's HELLO to
// tell an unreachable or incompatible worker apart before llama.cpp connects (its client aborts the
// process on either), and how layers are placed across the local machine and the workers.
package ggmlrpc

import (
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"net"
	"strconv"
	"strings"
	"time"
)

// The protocol version this build's client speaks (ggml-rpc.h of ggml 0.27.0: RPC_PROTO_*_VERSION).
// A worker must report the same major version and a minor version no newer than ours, as
// ggml-rpc.cpp's own handshake requires.
const (
	ProtoMajor = 8
	ProtoMinor = 0
	ProtoPatch = 0
)

// DefaultPort is where ggml-rpc-server and `agent rpc-server` listen unless told otherwise.
const DefaultPort = 50052

// Wire constants of ggml-rpc.cpp: RPC_CMD_HELLO is fixed at 14 across versions so that any client can
// ask any server its version; the request carries RPC_CONN_CAPS_SIZE bytes of transport capabilities
// (all zero: plain TCP).
const (
	cmdHello      = 14
	connCapsSize  = 24
	helloRespSize = 4 + connCapsSize
)

// ParseEndpoints splits a --rpc value ("HOST:PORT[,HOST:PORT…]") into checked endpoints. Each needs a
// host and a port; duplicates are refused (llama.cpp would count the same worker twice).
func ParseEndpoints(s string) ([]string, error) {
	var out []string
	seen := map[string]bool{}
	for _, part := range strings.Split(s, ",") {
		ep := strings.TrimSpace(part)
		if ep == "" {
			continue
		}
		host, port, err := net.SplitHostPort(ep)
		if err != nil {
			return nil, fmt.Errorf("rpc worker %q: want HOST:PORT: %v", ep, err)
		}
		if host == "" {
			return nil, fmt.Errorf("rpc worker %q: no host", ep)
		}
		if strings.Contains(host, ":") {
			// ggml-rpc.cpp splits the endpoint at its first ':', so an IPv6 literal cannot be named.
			return nil, fmt.Errorf("rpc worker %q: IPv6 addresses are not supported by llama.cpp's RPC client; use a host name", ep)
		}
		p, err := strconv.Atoi(port)
		if err != nil || p < 1 || p > 65535 {
			return nil, fmt.Errorf("rpc worker %q: port must be 1 to 65535", ep)
		}
		ep = host + ":" + strconv.Itoa(p)
		if seen[ep] {
			return nil, fmt.Errorf("rpc worker %q is named twice", ep)
		}
		seen[ep] = true
		out = append(out, ep)
	}
	if len(out) == 0 {
		return nil, errors.New("--rpc names no worker (want HOST:PORT[,HOST:PORT…])")
	}
	return out, nil
}

// Version is a worker's protocol version.
type Version struct{ Major, Minor, Patch uint8 }

func (v Version) String() string { return fmt.Sprintf("%d.%d.%d", v.Major, v.Minor, v.Patch) }

// Compatible reports whether this build's client can talk to a worker of version v.
func (v Version) Compatible() bool { return v.Major == ProtoMajor && v.Minor <= ProtoMinor }

// WorkerError names the worker a failure is about. Kind says what went wrong.
type WorkerError struct {
	Endpoint string
	Kind     string // "unreachable", "version mismatch", "lost"
	Err      error
}

func (e *WorkerError) Error() string {
	return fmt.Sprintf("rpc worker %s %s: %v", e.Endpoint, e.Kind, e.Err)
}

func (e *WorkerError) Unwrap() error { return e.Err }

// Unavailable marks the error as a service that is down rather than a bad request (HTTP 503).
func (e *WorkerError) Unavailable() bool { return true }

// Probe connects to the worker at endpoint, asks its protocol version (the HELLO every ggml-rpc client
// sends first) and disconnects. It fails with a *WorkerError: "unreachable" when nothing answers the
// protocol within the context's deadline (or 10 s), "version mismatch" when the worker speaks another
// protocol version. A worker serves one client at a time, so probing a worker that a loaded model is
// using waits until that model lets go.
func Probe(ctx context.Context, endpoint string) (Version, error) {
	if _, ok := ctx.Deadline(); !ok {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeout(ctx, 10*time.Second)
		defer cancel()
	}
	unreachable := func(err error) (Version, error) {
		return Version{}, &WorkerError{Endpoint: endpoint, Kind: "unreachable", Err: err}
	}
	var d net.Dialer
	conn, err := d.DialContext(ctx, "tcp", endpoint)
	if err != nil {
		return unreachable(err)
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { _ = conn.SetDeadline(time.Now()) })
	defer stop()

	req := make([]byte, 1+8+connCapsSize)
	req[0] = cmdHello
	binary.LittleEndian.PutUint64(req[1:], connCapsSize)
	if _, err := conn.Write(req); err != nil {
		return unreachable(fmt.Errorf("send hello: %w", err))
	}
	var size [8]byte
	if _, err := io.ReadFull(conn, size[:]); err != nil {
		if ctx.Err() != nil {
			err = ctx.Err()
		}
		return unreachable(fmt.Errorf("no answer to hello (%v): it may be serving another client (a worker serves one at a time), or not be a ggml RPC worker", err))
	}
	n := binary.LittleEndian.Uint64(size[:])
	if n < 3 || n > 1<<10 {
		return Version{}, &WorkerError{Endpoint: endpoint, Kind: "version mismatch",
			Err: fmt.Errorf("hello answer of %d bytes (want %d): not a ggml RPC worker of protocol %d", n, helloRespSize, ProtoMajor)}
	}
	resp := make([]byte, n)
	if _, err := io.ReadFull(conn, resp); err != nil {
		return unreachable(fmt.Errorf("read hello: %w", err))
	}
	v := Version{resp[0], resp[1], resp[2]}
	if !v.Compatible() || n != helloRespSize {
		return v, &WorkerError{Endpoint: endpoint, Kind: "version mismatch",
			Err: fmt.Errorf("worker speaks RPC protocol %s, this build %d.%d.%d (run the same llama.cpp/ggml version on both sides)", v, ProtoMajor, ProtoMinor, ProtoPatch)}
	}
	return v, nil
}
