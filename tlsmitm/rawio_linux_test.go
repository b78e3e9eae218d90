//go:build linux && !386

package tlsmitm

import (
	"bytes"
	"crypto/rand"
	"errors"
	"io"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"
)

// The relay's sockets are read and written with raw system calls
// (rawio_linux.go). These tests hold socketIO to net's own Read and Write:
// the same bytes, waits, deadlines and errors.

func rawPair(t *testing.T) (*socketIO, net.Conn) {
	t.Helper()
	a, b := tcpPair(t)
	s := newSocketIO(a)
	if s == nil {
		t.Fatal("newSocketIO(*net.TCPConn) = nil")
	}
	return s, b
}

func TestSocketIO_OnlyForTCPSockets(t *testing.T) {
	a, _ := tcpPair(t)
	if newSocketIO(&sourceConn{Conn: a}) == nil {
		t.Error("the per-source slot around a TCP connection reads and writes nothing itself: want raw I/O")
	}
	if newSocketIO(&countingConn{Conn: a}) != nil {
		t.Error("a wrapper with its own Read/Write must be kept: want nil")
	}
	p, q := net.Pipe()
	defer p.Close()
	defer q.Close()
	if newSocketIO(p) != nil {
		t.Error("a pipe has no socket: want nil")
	}
	if bc := newBatchConn(a); bc.raw == nil {
		t.Error("newBatchConn(TCP) does not use raw I/O")
	}
}

func TestSocketIO_BulkBothWaysWithWaits(t *testing.T) {
	s, peer := rawPair(t)
	out := make([]byte, 8<<20) // far above the socket buffers: writes wait for the peer
	rand.Read(out)
	got := make(chan []byte, 1)
	go func() {
		var buf bytes.Buffer
		small := make([]byte, 3000) // a slow reader: many partial writes
		for buf.Len() < len(out) {
			n, err := peer.Read(small)
			buf.Write(small[:n])
			if err != nil {
				break
			}
		}
		got <- buf.Bytes()
	}()
	if n, err := s.Write(out); n != len(out) || err != nil {
		t.Fatalf("Write = %d, %v; want %d, nil", n, err, len(out))
	}
	if b := <-got; !bytes.Equal(b, out) {
		t.Fatalf("peer got %d bytes, not what was written", len(b))
	}

	go func() {
		time.Sleep(20 * time.Millisecond) // Read waits for readiness first
		peer.Write(out[:5000])
		peer.Close()
	}()
	var in bytes.Buffer
	buf := make([]byte, 1024)
	for {
		n, err := s.Read(buf)
		in.Write(buf[:n])
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatalf("Read: %v", err)
		}
	}
	if !bytes.Equal(in.Bytes(), out[:5000]) {
		t.Fatalf("read %d bytes, not what the peer wrote", in.Len())
	}
	if n, err := s.Read(nil); n != 0 || err != nil {
		t.Errorf("Read(nil) = %d, %v; want 0, nil", n, err)
	}
}

func TestSocketIO_ErrorsAsNetGivesThem(t *testing.T) {
	t.Run("read deadline", func(t *testing.T) {
		s, _ := rawPair(t)
		s.conn.SetReadDeadline(time.Now().Add(20 * time.Millisecond))
		_, err := s.Read(make([]byte, 10))
		var ne net.Error
		if !errors.Is(err, os.ErrDeadlineExceeded) || !errors.As(err, &ne) || !ne.Timeout() || !isTimeout(err) {
			t.Fatalf("err = %v; want a net.Error timeout", err)
		}
		if !strings.HasPrefix(err.Error(), "read tcp ") {
			t.Errorf("err = %q; want net's form, %q", err, "read tcp …: i/o timeout")
		}
	})
	t.Run("write deadline", func(t *testing.T) {
		s, _ := rawPair(t) // the peer never reads
		s.conn.SetWriteDeadline(time.Now().Add(50 * time.Millisecond))
		n, err := s.Write(make([]byte, 64<<20))
		// (Part of it is written, unless the socket buffer was still
		// full from an earlier test's traffic: n may be 0.)
		if !errors.Is(err, os.ErrDeadlineExceeded) || n < 0 || n >= 64<<20 {
			t.Fatalf("Write = %d, %v; want at most part written and a timeout", n, err)
		}
		if !strings.HasPrefix(err.Error(), "write tcp ") {
			t.Errorf("err = %q; want net's form", err)
		}
	})
	t.Run("closed", func(t *testing.T) {
		s, _ := rawPair(t)
		s.conn.Close()
		if _, err := s.Read(make([]byte, 10)); !errors.Is(err, net.ErrClosed) {
			t.Errorf("Read after Close: %v; want net.ErrClosed", err)
		}
		if _, err := s.Write([]byte("x")); !errors.Is(err, net.ErrClosed) {
			t.Errorf("Write after Close: %v; want net.ErrClosed", err)
		}
	})
	t.Run("reset", func(t *testing.T) {
		s, peer := rawPair(t)
		peer.(*net.TCPConn).SetLinger(0)
		peer.Close()
		_, err := s.Read(make([]byte, 10))
		if !errors.Is(err, syscall.ECONNRESET) || !isStaleConnError(err) {
			t.Fatalf("Read after a reset: %v; want ECONNRESET (a stale pooled connection)", err)
		}
		var se *os.SyscallError
		if !errors.As(err, &se) || se.Syscall != "read" {
			t.Errorf("err = %v; want an *os.SyscallError for read, as net gives", err)
		}
	})
}

func TestSocketIO_NoAllocationPerCall(t *testing.T) {
	s, peer := rawPair(t)
	msg := []byte("0123456789")
	buf := make([]byte, 64)
	allocs := testing.AllocsPerRun(200, func() {
		if _, err := s.Write(msg); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(peer, buf[:len(msg)]); err != nil {
			t.Fatal(err)
		}
		if _, err := peer.Write(msg); err != nil {
			t.Fatal(err)
		}
		if _, err := io.ReadFull(s, buf[:len(msg)]); err != nil {
			t.Fatal(err)
		}
	})
	// The peer's side is net's own: its calls allocate nothing either.
	if allocs > 0 {
		t.Errorf("%.1f allocations per write and read; want 0", allocs)
	}
}

// A socket something made blocking (a holder of its *os.File) is still
// read without sleeping in the kernel, where a goroutine cannot be stopped
// for a GC and no deadline reaches it: each call is MSG_DONTWAIT, and the
// wait is the poller's.
func TestSocketIO_BlockingSocketStillWaitsInThePoller(t *testing.T) {
	a, _ := tcpPair(t)
	setBlocking(t, a)
	bc := newBatchConn(a)
	if bc.raw == nil {
		t.Fatal("no raw I/O for the socket")
	}
	a.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	done := make(chan error, 1)
	go func() {
		_, err := bc.Read(make([]byte, 10))
		done <- err
	}()
	select {
	case err := <-done:
		if !isTimeout(err) {
			t.Fatalf("Read = %v; want its deadline", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("a read on a blocking socket slept in the kernel past its deadline")
	}
	a.SetWriteDeadline(time.Now().Add(50 * time.Millisecond))
	if _, err := bc.raw.Write(make([]byte, 64<<20)); !isTimeout(err) { // the peer never reads
		t.Fatalf("Write = %v; want its deadline", err)
	}
}
