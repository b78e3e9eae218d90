package tlsmitm

import (
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/netip"
	"time"
)

// DefaultMaxHelloBytes caps how much is read while looking for a ClientHello.
const DefaultMaxHelloBytes = 64 << 10

// clientHello is what the peek learned from a ClientHello.
type clientHello struct {
	SNI  string   // normalised: lowercase, no trailing dot; may be empty
	ALPN []string // offered protocols, in client order
	// Raw holds every byte read from the connection while peeking: the
	// ClientHello record(s) and anything the client sent after them. It is
	// replayed to the terminator or the passthrough upstream.
	Raw []byte
}

// errHelloDone aborts the throwaway handshake once the hello is parsed.
var errHelloDone = errors.New("client hello captured")

// peekClientHello reads a ClientHello from r without consuming it: it lets
// crypto/tls parse the hello on a throwaway server whose writes fail, through
// a reader that records every byte and refuses to read past max. The caller
// sets deadlines on the underlying connection. A hello spread over several
// records is handled by crypto/tls itself.
func peekClientHello(r io.Reader, max int) (clientHello, error) {
	rec := &recordingReader{r: r, max: max}
	var info *tls.ClientHelloInfo
	cfg := &tls.Config{
		GetConfigForClient: func(chi *tls.ClientHelloInfo) (*tls.Config, error) {
			info = chi
			return nil, errHelloDone
		},
	}
	err := tls.Server(sniffConn{r: rec}, cfg).Handshake()
	if info == nil {
		return clientHello{Raw: rec.buf.Bytes()}, helloError(err, rec)
	}
	h := clientHello{SNI: normalizeName(info.ServerName), Raw: rec.buf.Bytes()}
	if len(info.SupportedProtos) > 0 {
		h.ALPN = append([]string(nil), info.SupportedProtos...)
	}
	return h, nil
}

func helloError(err error, rec *recordingReader) error {
	switch {
	case rec.overflow:
		return fmt.Errorf("reading client hello: %w (%d bytes)", ErrHelloTooLarge, rec.max)
	case rec.err != nil && !errors.Is(rec.err, io.EOF) && !errors.Is(rec.err, io.ErrUnexpectedEOF):
		return fmt.Errorf("reading client hello: %w", rec.err)
	case rec.buf.Len() == 0:
		return fmt.Errorf("reading client hello: %w: connection closed before any byte", ErrNotClientHello)
	}
	return fmt.Errorf("reading client hello: %w: %v", ErrNotClientHello, err)
}

// checkSNI refuses hellos that cannot be routed by name.
func checkSNI(sni string) error {
	if sni == "" {
		return ErrNoSNI
	}
	if _, err := netip.ParseAddr(sni); err == nil {
		return fmt.Errorf("%w: %q", ErrIPLiteralSNI, sni)
	}
	if !validHostname(sni) {
		return fmt.Errorf("%w: %q is not a valid host name", ErrNoRoute, sni)
	}
	return nil
}

// recordingReader records every byte read and fails once more than max
// bytes would be needed.
type recordingReader struct {
	r        io.Reader
	max      int
	buf      bytes.Buffer
	overflow bool
	err      error
}

var errHelloCap = errors.New("hello size cap reached")

func (rr *recordingReader) Read(p []byte) (int, error) {
	room := rr.max - rr.buf.Len()
	if room <= 0 {
		rr.overflow = true
		return 0, errHelloCap
	}
	if len(p) > room {
		p = p[:room]
	}
	n, err := rr.r.Read(p)
	rr.buf.Write(p[:n])
	if err != nil && rr.err == nil {
		rr.err = err
	}
	return n, err
}

// sniffConn is the throwaway handshake's connection: reads come from the
// recorder, writes fail (nothing is ever sent to the client from here).
type sniffConn struct {
	r io.Reader
}

var errSniffWrite = errors.New("sniff connection is read-only")

func (c sniffConn) Read(p []byte) (int, error)     { return c.r.Read(p) }
func (sniffConn) Write([]byte) (int, error)        { return 0, errSniffWrite }
func (sniffConn) Close() error                     { return nil }
func (sniffConn) LocalAddr() net.Addr              { return nil }
func (sniffConn) RemoteAddr() net.Addr             { return nil }
func (sniffConn) SetDeadline(time.Time) error      { return nil }
func (sniffConn) SetReadDeadline(time.Time) error  { return nil }
func (sniffConn) SetWriteDeadline(time.Time) error { return nil }

// replayConn replays the recorded hello bytes, then reads from the
// connection. It carries what the accept path learned, for the HTTP layer.
type replayConn struct {
	batchConn // the socket, batched for bulk bodies (batchio.go)
	pending   []byte
	info      *connInfo
	onRead    flusher // flushed before each read of the socket: an h2 connection's frames (serveH2)
}

func (c *replayConn) Read(p []byte) (int, error) {
	if len(c.pending) > 0 {
		n := copy(p, c.pending)
		c.pending = c.pending[n:]
		if len(c.pending) == 0 {
			c.pending = nil // the hello's buffer is not kept for the connection's life
		}
		return n, nil
	}
	if c.onRead != nil {
		c.onRead.Flush() // a failed flush closes the connection: the read fails
	}
	return c.batchConn.Read(p)
}

// NetConn returns the wrapped connection.
func (c *replayConn) NetConn() net.Conn { return c.Conn }

// CloseWrite half-closes the accepted connection (closeH1).
func (c *replayConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}
