package tlsmitm

// Review of the batching commits (c21b83b, 692c2e1, 310043d): a read-ahead
// under the upstream's TLS, a cork under the client's, and pooled h2 read
// and write buffers. Each test names the property it pins; those that say
// "failed before the fix" failed against 310043d.

import (
	"bytes"
	"crypto/tls"
	"io"
	"net"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
)

// h2RawFrames frames with a throwaway Framer that writes what it is told.
func h2RawFrames(write func(fr *http2.Framer)) []byte {
	var b bytes.Buffer
	fr := http2.NewFramer(&b, nil)
	fr.AllowIllegalWrites = true
	write(fr)
	return b.Bytes()
}

// dialH2Bytes opens a TLS h2 connection to the terminator and sends the
// preface and then raw, in one write (one TLS record): the frontend's
// preface read fills its read buffer with all of raw.
func dialH2Bytes(t *testing.T, h *harness, raw []byte) *tls.Conn {
	t.Helper()
	c, err := tls.Dial("tcp", h.addr, &tls.Config{ServerName: apiHost, RootCAs: h.pool, NextProtos: []string{"h2"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if _, err := c.Write(append([]byte(http2.ClientPreface), raw...)); err != nil {
		t.Fatal(err)
	}
	return c
}

// waitH2Closed reads c until the server closes it, then waits for the
// server to let go of the connection.
func waitH2Closed(t *testing.T, h *harness, c *tls.Conn) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.Copy(io.Discard, c); err != nil && !strings.Contains(err.Error(), "reset") {
		if ne, ok := err.(net.Error); ok && ne.Timeout() {
			t.Fatal("the server did not close the connection")
		}
	}
	waitFor(t, 5*time.Second, "the server to release the connection", func() bool {
		return h.srv.Stats().ActiveHTTPConns == 0
	})
}

// TestBatchAttack_H2BuffersBackAfterConnectionErrorWithBytesBuffered: a
// connection that ends on a frame error while its read buffer still holds
// the client's next bytes gives the buffer back (and the count of buffers
// out of their pools returns to zero). Failed before the fix: the read
// buffer was given back only when empty, so the count stayed at 1 for
// good.
func TestBatchAttack_H2BuffersBackAfterConnectionErrorWithBytesBuffered(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	raw := h2RawFrames(func(fr *http2.Framer) {
		fr.WriteSettings(http2.Setting{ID: http2.SettingEnablePush, Val: 0}, http2.Setting{ID: http2.SettingMaxFrameSize, Val: 16384})
		fr.WriteWindowUpdate(0, 0) // a zero increment: PROTOCOL_ERROR
		fr.WritePing(false, [8]byte{1})
		fr.WritePing(false, [8]byte{2}) // still buffered when the connection ends
	})
	c := dialH2Bytes(t, h, raw)
	waitH2Closed(t, h, c)
	waitFor(t, 2*time.Second, "the h2 buffers back in their pools", func() bool { return h.srv.stats.h2Buffers.Load() == 0 })
}

// TestBatchAttack_H2BuffersBackAfterGracefulEndWithFramesUnsent: a client
// whose SETTINGS and GOAWAY arrive together ends the connection gracefully
// while the SETTINGS acknowledgement waits in the write buffer. Failed
// before the fix: the write buffer was never given back (nor counted back).
func TestBatchAttack_H2BuffersBackAfterGracefulEndWithFramesUnsent(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	raw := h2RawFrames(func(fr *http2.Framer) {
		fr.WriteSettings(http2.Setting{ID: http2.SettingEnablePush, Val: 0})
		fr.WriteGoAway(0, http2.ErrCodeNo, nil)
	})
	c := dialH2Bytes(t, h, raw)
	waitH2Closed(t, h, c)
	waitFor(t, 2*time.Second, "the h2 buffers back in their pools", func() bool { return h.srv.stats.h2Buffers.Load() == 0 })
}

// rawByteCounter counts the bytes read from a socket.
type rawByteCounter struct {
	net.Conn
	n atomic.Int64
}

func (c *rawByteCounter) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.n.Add(int64(n))
	return n, err
}

// TestBatchAttack_H2ControlFloodAnsweredInBatches: a record full of PINGs
// is answered with its acknowledgements batched, as before the pooled read
// buffer. Failed before the fix: a frame of at most 9 bytes is read
// straight from the TLS connection, so the read buffer stayed empty and
// the read loop flushed after every frame: one write(2) and one TLS record
// (22 bytes of overhead) per 17-byte PING, 2.3 times the client's bytes
// back and ~25 times the time (a hostile container's cheap amplification).
func TestBatchAttack_H2ControlFloodAnsweredInBatches(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	sock, err := net.Dial("tcp", h.addr)
	if err != nil {
		t.Fatal(err)
	}
	cnt := &rawByteCounter{Conn: sock}
	c := tls.Client(cnt, &tls.Config{ServerName: apiHost, RootCAs: h.pool, NextProtos: []string{"h2"}})
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	io.WriteString(c, http2.ClientPreface)
	fr := http2.NewFramer(c, c)
	fr.WriteSettings()
	fr.WritePing(false, [8]byte{9})
	for { // the server's SETTINGS, WINDOW_UPDATE, SETTINGS ack, then our PING's ack
		f, err := fr.ReadFrame()
		if err != nil {
			t.Fatal(err)
		}
		if p, ok := f.(*http2.PingFrame); ok && p.IsAck() {
			break
		}
	}
	const n = 900 // 15300 bytes: one TLS record
	flood := h2RawFrames(func(fr *http2.Framer) {
		for range n {
			fr.WritePing(false, [8]byte{2})
		}
	})
	before := cnt.n.Load()
	if _, err := c.Write(flood); err != nil {
		t.Fatal(err)
	}
	for i := range n {
		f, err := fr.ReadFrame()
		if err != nil {
			t.Fatalf("ack %d: %v", i, err)
		}
		if p, ok := f.(*http2.PingFrame); !ok || !p.IsAck() {
			t.Fatalf("frame %d: %v, want a PING ack", i, f)
		}
	}
	records := (cnt.n.Load() - before - n*17) / 22 // TLS 1.3: 22 bytes per record
	t.Logf("%d PING acks came in about %d TLS records", n, records)
	if records > n/10 {
		t.Errorf("%d PINGs in one record were answered in about %d TLS records (a write(2) each), want them batched", n, records)
	}
}

// TestBatchAttack_H2AcksStillLeaveBeforeTheReadLoopWaits: with the flush
// moved to the socket read, a control frame's answer still leaves while
// the read loop waits for the client, also after a frame split across
// records, and a connection waiting for its next frame holds no buffer.
func TestBatchAttack_H2AcksStillLeaveBeforeTheReadLoopWaits(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	r := dialRawH2(t, h)
	ping := h2RawFrames(func(fr *http2.Framer) { fr.WritePing(false, [8]byte{7}) })
	for i, split := range []int{len(ping), 3, 9, 12} {
		r.c.Write(ping[:split])
		if split < len(ping) {
			time.Sleep(20 * time.Millisecond) // the rest in a record of its own
			r.c.Write(ping[split:])
		}
		f := r.nextFrame(3*time.Second, func(f http2.Frame) bool {
			p, ok := f.(*http2.PingFrame)
			return ok && p.IsAck() && p.Data == [8]byte{7}
		})
		if f == nil {
			t.Fatalf("case %d (split at %d): no PING ack while the server waits for the next frame", i, split)
		}
	}
	waitFor(t, 2*time.Second, "an idle h2 connection to hold no buffer", func() bool { return h.srv.stats.h2Buffers.Load() == 0 })
}
