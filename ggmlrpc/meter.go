package ggmlrpc

import (
	"errors"
	"fmt"
	"io"
	"net"
	"sync"
	"sync/atomic"
)

// Meter is a loopback relay in front of one worker that counts the bytes each way, so that a run
// can say what spreading its layers costs on the wire per token. llama.cpp connects to Endpoint
// instead of the worker; the relay adds one loopback hop.
type Meter struct {
	ln     net.Listener
	target string

	sent, received atomic.Int64 // to the worker, from the worker

	mu    sync.Mutex
	conns []net.Conn
	wg    sync.WaitGroup
}

// NewMeter listens on a free loopback port and relays every connection to target.
func NewMeter(target string) (*Meter, error) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("rpc traffic meter for %s: %w", target, err)
	}
	m := &Meter{ln: ln, target: target}
	m.wg.Add(1)
	go m.accept()
	return m, nil
}

// Endpoint is where llama.cpp should connect.
func (m *Meter) Endpoint() string { return m.ln.Addr().String() }

// Target is the worker behind the meter.
func (m *Meter) Target() string { return m.target }

// Counts returns the bytes relayed so far to and from the worker.
func (m *Meter) Counts() (sent, received int64) { return m.sent.Load(), m.received.Load() }

func (m *Meter) accept() {
	defer m.wg.Done()
	for {
		c, err := m.ln.Accept()
		if err != nil {
			return
		}
		up, err := net.Dial("tcp", m.target)
		if err != nil {
			c.Close()
			continue
		}
		m.mu.Lock()
		m.conns = append(m.conns, c, up)
		m.mu.Unlock()
		m.wg.Add(2)
		go m.relay(up, c, &m.sent)
		go m.relay(c, up, &m.received)
	}
}

// relay copies src to dst, counting, and closes both when either side ends (a lost worker then
// reaches llama.cpp as a closed connection, as without the meter).
func (m *Meter) relay(dst, src net.Conn, n *atomic.Int64) {
	defer m.wg.Done()
	_, _ = io.Copy(countingWriter{dst, n}, src)
	dst.Close()
	src.Close()
}

type countingWriter struct {
	w io.Writer
	n *atomic.Int64
}

func (c countingWriter) Write(p []byte) (int, error) {
	k, err := c.w.Write(p)
	c.n.Add(int64(k))
	return k, err
}

// Close stops listening, closes the relayed connections and waits for the relay goroutines.
func (m *Meter) Close() error {
	err := m.ln.Close()
	m.mu.Lock()
	for _, c := range m.conns {
		c.Close()
	}
	m.mu.Unlock()
	m.wg.Wait()
	if errors.Is(err, net.ErrClosed) {
		err = nil
	}
	return err
}
