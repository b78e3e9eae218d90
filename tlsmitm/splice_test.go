package tlsmitm

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/clauderon/clauderond/tlsmitm/tlstest"
)

// TestPassthrough_HalfCloseAndExactBytes: the upstream receives exactly the
// client's bytes (hello included), sees EOF when the client half-closes,
// and its reply still reaches the client.
func TestPassthrough_HalfCloseAndExactBytes(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	got := make(chan []byte, 1)
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		b, _ := io.ReadAll(c) // until the client's half-close arrives
		got <- b
		io.WriteString(c, "reply after half-close")
	}()
	h := newHarness(t, harnessOpts{mutate: func(c *Config) {
		c.Upstreams = []Upstream{{Host: "pass.test", Address: ln.Addr().String()}}
	}})
	hello := tlstest.MustClientHello(tlstest.HelloOptions{ServerName: "pass.test", MaxRecordPayload: 50})
	sent := append(append([]byte(nil), hello...), []byte("opaque bytes after the hello")...)
	c, err := net.Dial("tcp", h.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(5 * time.Second))
	c.Write(sent)
	c.(*net.TCPConn).CloseWrite()
	reply, err := io.ReadAll(c)
	if err != nil || string(reply) != "reply after half-close" {
		t.Errorf("client got %q, %v", reply, err)
	}
	if b := <-got; !bytes.Equal(b, sent) {
		t.Errorf("upstream got %d bytes, want the client's %d bytes exactly", len(b), len(sent))
	}
	ev := h.rec.next(t)
	if ev.Decision != Passthrough || ev.BytesIn != int64(len(sent)) || ev.BytesOut != int64(len("reply after half-close")) || ev.Err != "" {
		t.Errorf("audit = %+v", ev)
	}
}

func TestPassthrough_IdleConnectionIsClosed(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		defer c.Close()
		io.Copy(io.Discard, c) // reads, never answers
	}()
	h := newHarness(t, harnessOpts{mutate: func(c *Config) {
		c.Upstreams = []Upstream{{Host: "pass.test", Address: ln.Addr().String()}}
		c.PassthroughIdleTimeout = 200 * time.Millisecond
	}})
	c, err := net.Dial("tcp", h.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write(tlstest.MustClientHello(tlstest.HelloOptions{ServerName: "pass.test"}))
	start := time.Now()
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	if _, err := c.Read(make([]byte, 1)); err == nil {
		t.Fatal("read data from a silent upstream")
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("idle splice closed after %v, want ~200ms", d)
	}
	if ev := h.rec.next(t); ev.Decision != Passthrough || !strings.Contains(ev.Err, "idle") {
		t.Errorf("audit = %+v, want an idle error", ev)
	}
}

func TestServe_ListenerFailureIsAnError(t *testing.T) {
	h := newHarness(t, harnessOpts{noCleanup: true})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	srv, err := New(h.srv.cfg)
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- srv.Serve(context.Background(), ln) }()
	ln.Close()
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "accepting TLS connections") {
			t.Errorf("Serve = %v, want the accept error", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not return after its listener closed")
	}
	if err := srv.Serve(context.Background(), ln); err == nil {
		t.Error("second Serve succeeded, want an error")
	}
	h.stop(t)
}

func TestServe_MaxConnsClosesExtraConnections(t *testing.T) {
	h := newHarness(t, harnessOpts{mutate: func(c *Config) { c.MaxConns = 2 }})
	holdPeekingConns(t, h, 2)
	if err := readFromExtraConn(t, h); err == nil {
		t.Error("third connection was served, want it closed")
	}
	if got := h.srv.Stats().RejectedConns; got != 1 {
		t.Errorf("RejectedConns = %d, want 1", got)
	}
}

// TestServe_PerSourceLimitKeepsSlotsForOthers: one client address cannot
// hold more than MaxConnsPerSource connections, and closing one frees its
// slot (whichever path closed it).
func TestServe_PerSourceLimitKeepsSlotsForOthers(t *testing.T) {
	h := newHarness(t, harnessOpts{mutate: func(c *Config) { c.MaxConnsPerSource = 2 }})
	held := holdPeekingConns(t, h, 2)
	if err := readFromExtraConn(t, h); err == nil || errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("third connection from the same source: read err = %v, want it closed by the server", err)
	}
	if got := h.srv.Stats().RejectedConns; got != 1 {
		t.Errorf("RejectedConns = %d, want 1", got)
	}
	// A garbage hello is refused and closed by the server: its slot comes back.
	held[0].Write([]byte("GET / HTTP/1.1\r\n\r\n"))
	held[0].SetReadDeadline(time.Now().Add(5 * time.Second))
	io.Copy(io.Discard, held[0])
	deadline := time.Now().Add(5 * time.Second)
	for h.srv.Stats().ActiveConns > 1 && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	again, err := net.Dial("tcp", h.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer again.Close()
	again.SetReadDeadline(time.Now().Add(300 * time.Millisecond))
	if _, err := again.Read(make([]byte, 1)); err == nil || !errors.Is(err, os.ErrDeadlineExceeded) {
		t.Errorf("connection after a slot was freed: read err = %v, want it held open (deadline exceeded)", err)
	}
}

// holdPeekingConns opens n connections that send nothing (parked in the
// hello peek) and waits until the server counts them; closed at cleanup.
func holdPeekingConns(t *testing.T, h *harness, n int) []net.Conn {
	t.Helper()
	var held []net.Conn
	for i := 0; i < n; i++ {
		c, err := net.Dial("tcp", h.addr)
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { c.Close() })
		held = append(held, c)
	}
	deadline := time.Now().Add(5 * time.Second)
	for h.srv.Stats().ActiveConns < int64(n) && time.Now().Before(deadline) {
		time.Sleep(10 * time.Millisecond)
	}
	return held
}

// readFromExtraConn dials one more connection and returns the error of a
// one-byte read (nil if the server sent something within 5 s).
func readFromExtraConn(t *testing.T, h *harness) error {
	t.Helper()
	extra, err := net.Dial("tcp", h.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer extra.Close()
	extra.SetReadDeadline(time.Now().Add(5 * time.Second))
	_, err = extra.Read(make([]byte, 1))
	return err
}
