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
