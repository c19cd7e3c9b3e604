package ggmlrpc

import (
	"context"
	"encoding/binary"
	"errors"
	"io"
	"net"
	"strings"
	"testing"
	"time"
)

func TestPlaceSplitsUnitsByWeight(t *testing.T) {
	cases := []struct {
		name    string
		layers  int
		weights []float64
		devices []int
		local   int
		workers []int
	}{
		{"equal thirds of 8+1", 8, nil, []int{1, 1}, 3, []int{3, 3}},
		{"all remote", 8, []float64{0, 1, 1}, []int{1, 1}, 0, []int{5, 4}},
		{"all local", 4, []float64{1, 0}, []int{1}, 5, []int{0}},
		{"uneven", 47, []float64{2, 1}, []int{1}, 32, []int{16}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			p, err := Place(c.layers, c.weights, c.devices)
			if err != nil {
				t.Fatal(err)
			}
			if p.LocalLayers != c.local || p.OffloadLayers != c.layers+1-c.local {
				t.Fatalf("local %d offload %d, want local %d", p.LocalLayers, p.OffloadLayers, c.local)
			}
			sum := p.LocalLayers
			for i, n := range p.WorkerLayers {
				sum += n
				if n != c.workers[i] {
					t.Fatalf("worker layers %v, want %v", p.WorkerLayers, c.workers)
				}
			}
			if sum != c.layers+1 {
				t.Fatalf("placed %d units of %d", sum, c.layers+1)
			}
		})
	}
}

func TestPlaceDividesAWorkersShareAmongItsDevices(t *testing.T) {
	p, err := Place(9, []float64{0, 1, 1}, []int{2, 1})
	if err != nil {
		t.Fatal(err)
	}
	if len(p.DeviceSplit) != 3 || p.DeviceSplit[0] != p.DeviceSplit[1] || p.DeviceSplit[0]*2 != float32(p.WorkerLayers[0]) {
		t.Fatalf("split %v for worker layers %v", p.DeviceSplit, p.WorkerLayers)
	}
}

func TestParseSplitAndEndpointsRefuseBadInput(t *testing.T) {
	for _, s := range []string{"1,2", "1,x,1", "1,-1,1", "0,0,0"} {
		if _, err := ParseSplit(s, 2); err == nil {
			t.Errorf("ParseSplit(%q) accepted", s)
		}
	}
	if ws, err := ParseSplit("1, 2,0", 2); err != nil || ws[1] != 2 {
		t.Fatalf("ParseSplit: %v %v", ws, err)
	}
	for _, s := range []string{"", "host", ":50052", "h:0", "h:99999", "a:1,a:1", "[::1]:50052"} {
		if _, err := ParseEndpoints(s); err == nil {
			t.Errorf("ParseEndpoints(%q) accepted", s)
		}
	}
	eps, err := ParseEndpoints("127.0.0.1:50052, localhost:7")
	if err != nil || len(eps) != 2 || eps[1] != "localhost:7" {
		t.Fatalf("ParseEndpoints: %v %v", eps, err)
	}
}

// fakeWorker answers one HELLO with the given version bytes, as ggml-rpc-server does.
func fakeWorker(t *testing.T, major, minor uint8) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			req := make([]byte, 1+8+connCapsSize)
			if _, err := io.ReadFull(c, req); err == nil && req[0] == cmdHello {
				resp := make([]byte, 8+helloRespSize)
				binary.LittleEndian.PutUint64(resp, helloRespSize)
				resp[8], resp[9] = major, minor
				c.Write(resp)
			}
			c.Close()
		}
	}()
	return ln.Addr().String()
}

func TestProbeNamesTheWorker(t *testing.T) {
	ctx := context.Background()
	ok := fakeWorker(t, ProtoMajor, ProtoMinor)
	if v, err := Probe(ctx, ok); err != nil || v.Major != ProtoMajor {
		t.Fatalf("probe of a compatible worker: %v %v", v, err)
	}
	old := fakeWorker(t, ProtoMajor-1, 0)
	_, err := Probe(ctx, old)
	var we *WorkerError
	if !errors.As(err, &we) || we.Kind != "version mismatch" || !strings.Contains(err.Error(), old) {
		t.Fatalf("probe of an old worker: %v", err)
	}
	// A port nobody listens on: take one and close it.
	ln, _ := net.Listen("tcp", "127.0.0.1:0")
	dead := ln.Addr().String()
	ln.Close()
	_, err = Probe(ctx, dead)
	if !errors.As(err, &we) || we.Kind != "unreachable" || !strings.Contains(err.Error(), dead) {
		t.Fatalf("probe of a dead port: %v", err)
	}
	// A listener that accepts but never answers (e.g. a worker busy with another client).
	silent, _ := net.Listen("tcp", "127.0.0.1:0")
	defer silent.Close()
	tctx, cancel := context.WithTimeout(ctx, 300*time.Millisecond)
	defer cancel()
	_, err = Probe(tctx, silent.Addr().String())
	if !errors.As(err, &we) || we.Kind != "unreachable" {
		t.Fatalf("probe of a silent listener: %v", err)
	}
}

func TestMeterRelaysAndCounts(t *testing.T) {
	ok := fakeWorker(t, ProtoMajor, ProtoMinor)
	m, err := NewMeter(ok)
	if err != nil {
		t.Fatal(err)
	}
	defer m.Close()
	if _, err := Probe(context.Background(), m.Endpoint()); err != nil {
		t.Fatalf("probe through the meter: %v", err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		sent, recv := m.Counts()
		if sent == 1+8+connCapsSize && recv == 8+helloRespSize {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("counted %d sent, %d received", sent, recv)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestSharesFollowThePlacement(t *testing.T) {
	p, err := Place(5, []float64{1, 1, 1}, []int{1, 1}) // 6 units: 2 local, 2, 2
	if err != nil {
		t.Fatal(err)
	}
	layers := []int64{10, 10, 10, 10, 10}
	sh := Shares(p, layers, 7, 100, 3)
	if len(sh) != 3 || sh[0] != (Share{2, 120, 6}) || sh[1] != (Share{2, 20, 6}) || sh[2] != (Share{2, 17, 3}) {
		t.Fatalf("shares %+v", sh)
	}
}
