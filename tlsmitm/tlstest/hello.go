package tlstest

import (
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"time"
)

// HelloOptions shapes a generated ClientHello.
type HelloOptions struct {
	ServerName string   // SNI; empty sends none
	NextProtos []string // ALPN
	// MaxRecordPayload > 0 re-frames the handshake message into TLS
	// records of at most this many payload bytes (a hello spread over
	// several records, as some clients and middleboxes send it).
	MaxRecordPayload int
	// PadProtos adds this many dummy 200-byte ALPN entries to make the
	// hello large (about 200 bytes each).
	PadProtos int
}

// ClientHello returns the exact bytes crypto/tls's client writes as its
// first flight for opts.
func ClientHello(opts HelloOptions) ([]byte, error) {
	protos := append([]string(nil), opts.NextProtos...)
	for i := 0; i < opts.PadProtos; i++ {
		protos = append(protos, fmt.Sprintf("%03d%s", i, bytes.Repeat([]byte{'x'}, 197)))
	}
	c := &captureConn{}
	cfg := &tls.Config{ServerName: opts.ServerName, NextProtos: protos, InsecureSkipVerify: true}
	if opts.ServerName == "" {
		cfg.ServerName = ""
	}
	_ = tls.Client(c, cfg).Handshake() // fails at the first read, after the hello is written
	if c.buf.Len() == 0 {
		return nil, errors.New("crypto/tls wrote no client hello")
	}
	out := c.buf.Bytes()
	if opts.MaxRecordPayload > 0 {
		return Reframe(out, opts.MaxRecordPayload)
	}
	return out, nil
}

// MustClientHello is ClientHello that panics on error (for seeds and tables).
func MustClientHello(opts HelloOptions) []byte {
	b, err := ClientHello(opts)
	if err != nil {
		panic(err)
	}
	return b
}

// Reframe rewrites a sequence of handshake records so that each record
// carries at most max payload bytes.
func Reframe(records []byte, max int) ([]byte, error) {
	var payload []byte
	var version []byte
	for rest := records; len(rest) > 0; {
		if len(rest) < 5 || rest[0] != 22 {
			return nil, errors.New("not a handshake record")
		}
		n := int(rest[3])<<8 | int(rest[4])
		if len(rest) < 5+n {
			return nil, errors.New("truncated record")
		}
		version = rest[1:3]
		payload = append(payload, rest[5:5+n]...)
		rest = rest[5+n:]
	}
	var out []byte
	for len(payload) > 0 {
		n := min(max, len(payload))
		out = append(out, 22, version[0], version[1], byte(n>>8), byte(n))
		out = append(out, payload[:n]...)
		payload = payload[n:]
	}
	return out, nil
}

// captureConn records writes; reads fail so the handshake stops.
type captureConn struct{ buf bytes.Buffer }

func (c *captureConn) Read([]byte) (int, error)    { return 0, errors.New("capture only") }
func (c *captureConn) Write(p []byte) (int, error) { return c.buf.Write(p) }
func (c *captureConn) Close() error                { return nil }
func (c *captureConn) LocalAddr() net.Addr         { return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1)} }
func (c *captureConn) RemoteAddr() net.Addr {
	return &net.TCPAddr{IP: net.IPv4(127, 0, 0, 1), Port: 443}
}
func (c *captureConn) SetDeadline(time.Time) error      { return nil }
func (c *captureConn) SetReadDeadline(time.Time) error  { return nil }
func (c *captureConn) SetWriteDeadline(time.Time) error { return nil }
