package tlsmitm

import (
	"bufio"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"math"
	"net"
	"net/http"
	"os"
	"strconv"
	"sync"
	"syscall"
	"time"

	"golang.org/x/net/http/httpguts"
)

// headerLimitReader fails reads once n bytes have been read (request heads
// larger than MaxHeaderBytes); n is lifted for bodies.
type headerLimitReader struct {
	r io.Reader
	n int64
}

var errHeaderTooLarge = errors.New("request header too large")

func (l *headerLimitReader) Read(p []byte) (int, error) {
	if l.n <= 0 {
		return 0, errHeaderTooLarge
	}
	if int64(len(p)) > l.n {
		p = p[:l.n]
	}
	n, err := l.r.Read(p)
	l.n -= int64(n)
	return n, err
}

// validateRequest applies net/http's server checks to a request head
// (ReadRequest has already refused several Host headers).
func validateRequest(r *http.Request) error {
	switch {
	case r.ProtoMajor != 1 || r.ProtoMinor > 1:
		return errUnsupportedVersion
	case r.ProtoAtLeast(1, 1) && r.Host == "":
		return errors.New("missing required Host header")
	case r.Host != "" && !httpguts.ValidHostHeader(r.Host):
		return errors.New("malformed Host header")
	case r.Method == http.MethodConnect:
		return errors.New("CONNECT is not supported on an intercepted connection")
	}
	return checkHeaderFields(r.Header)
}

// checkHeaderFields is net/http's check of header names and values.
func checkHeaderFields(h http.Header) error {
	for k, vv := range h {
		if !httpguts.ValidHeaderFieldName(k) {
			return errors.New("invalid header name")
		}
		for _, v := range vv {
			if !httpguts.ValidHeaderFieldValue(v) {
				return fmt.Errorf("invalid value for header %s", k)
			}
		}
	}
	return nil
}

var errUnsupportedVersion = errors.New("unsupported HTTP version")

// checkInjectedHeaders re-checks the request headers after the Injector
// (the client's were checked by validateRequest): the relay writes them
// verbatim, so a credential holding a line break must fail the request,
// not split the head (http.Transport refuses such values the same way).
func checkInjectedHeaders(h http.Header) error {
	if err := checkHeaderFields(h); err != nil {
		return fmt.Errorf("%w: the rule set a header the relay cannot send: %w", errInjector, err)
	}
	return nil
}

// rejectRequest answers a request head that could not be read, as
// net/http's server does, and the connection is closed after it.
func (s *Server) rejectRequest(tc *tls.Conn, bw *bufio.Writer, err error) {
	var status int
	switch {
	case errors.Is(err, errHeaderTooLarge):
		status = http.StatusRequestHeaderFieldsTooLarge
	case errors.Is(err, errUnsupportedVersion):
		status = http.StatusHTTPVersionNotSupported
	case errors.Is(err, io.EOF), errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, net.ErrClosed),
		errors.Is(err, os.ErrDeadlineExceeded), errors.Is(err, syscall.ECONNRESET):
		return // the client went away or stayed silent: nothing to answer
	default:
		status = http.StatusBadRequest
	}
	s.events.Warn("rejected malformed intercepted request", "status", status, "err", err.Error())
	text := strconv.Itoa(status) + " " + http.StatusText(status)
	tc.SetWriteDeadline(time.Now().Add(s.cfg.ReadHeaderTimeout))
	fmt.Fprintf(bw, "HTTP/1.1 %s\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s", text, len(text), text)
	bw.Flush()
}

// bodyDeadline keeps the client connection's read deadline BodyIdleTimeout
// ahead of the request body sender's last read (re-armed at most every
// idle/64, like the write deadline), and lets the exchange cut the sender
// with a deadline in the past that a re-arm cannot overwrite.
type bodyDeadline struct {
	conn net.Conn
	rd   slidingDeadline // the sender's alone
	mu   sync.Mutex
	cut  bool
}

// extend runs on the sender before each read.
func (d *bodyDeadline) extend() {
	t, ok := d.rd.due()
	if !ok {
		return
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.cut {
		d.conn.SetReadDeadline(t)
	}
}

// stop makes the sender's read fail now; the exchange calls it.
func (d *bodyDeadline) stop() {
	d.mu.Lock()
	defer d.mu.Unlock()
	d.cut = true
	d.conn.SetReadDeadline(time.Unix(1, 0))
}

// readErr names a failed body read: the idle deadline (errBodyIdle), or
// the client gone or cut by the exchange (errClientClosed).
func (d *bodyDeadline) readErr(err error) error {
	d.mu.Lock()
	cut := d.cut
	d.mu.Unlock()
	if !cut && errors.Is(err, os.ErrDeadlineExceeded) {
		return fmt.Errorf("%w for %s: %w", errBodyIdle, d.rd.idle, err)
	}
	return fmt.Errorf("%w: reading request body: %w", errClientClosed, err)
}

// errClientClosed: the client went away mid-request (audited as 499).
var errClientClosed = errors.New("client closed the connection")

// lingerDelay bounds how long closeH1 waits for the client to finish
// sending before the socket closes (net/http's rstAvoidanceDelay).
const lingerDelay = 500 * time.Millisecond

// closeH1 ends an intercepted HTTP/1.x connection so that the client reads
// everything it was sent: close_notify and a FIN first, then what the
// client still sends (a request body the answer did not need) is read and
// dropped for up to lingerDelay. Closing at once with unread bytes in the
// socket makes the kernel send a reset, which can overtake the answer (a
// 403 then reads as "connection reset" or a truncated body).
func closeH1(tc *tls.Conn) {
	tc.SetDeadline(time.Now().Add(lingerDelay))
	_ = tc.CloseWrite()
	raw := tc.NetConn() // replayConn → sourceConn → TCP
	if cw, ok := raw.(interface{ CloseWrite() error }); ok {
		_ = cw.CloseWrite()
	}
	_, _ = io.Copy(io.Discard, io.LimitReader(raw, 256<<10))
	tc.Close()
}

// clientSide is a relay connection's buffered path to and from its client.
// Between requests it gives its buffers back (awaitRequest), so an idle
// keep-alive connection, most of them, holds none.
type clientSide struct {
	tc *tls.Conn
	pr prefixReader
	lr headerLimitReader
	br *bufio.Reader
	bw *bufio.Writer
}

func newClientSide(tc *tls.Conn) *clientSide {
	cs := &clientSide{tc: tc}
	cs.pr.r = tc
	cs.lr.r = &cs.pr
	cs.takeBuffers()
	return cs
}

func (cs *clientSide) takeBuffers() {
	cs.br, cs.bw = clientReaders.Get().(*bufio.Reader), clientWriters.Get().(*bufio.Writer)
	cs.br.Reset(&cs.lr)
	cs.bw.Reset(cs.tc)
}

// awaitRequest waits for the next request's first byte under the read
// deadline already set. With nothing pipelined it waits holding no buffer:
// the exchange before is over, its request body sender included, so
// nothing else uses them. A wait that ended at its deadline may be
// waited again.
func (cs *clientSide) awaitRequest() error {
	if cs.holdsBuffers() {
		if cs.br.Buffered() > 0 || cs.bw.Buffered() > 0 {
			_, err := cs.br.Peek(1)
			return err
		}
		putClientBuffers(cs.br, cs.bw)
		cs.br, cs.bw = nil, nil
	}
	if _, err := cs.tc.Read(cs.pr.first[:]); err != nil {
		return err
	}
	cs.pr.pending = true
	cs.takeBuffers()
	return nil
}

// holdsBuffers reports whether the connection holds its buffers: while a
// request is in flight, or something is pipelined behind it.
func (cs *clientSide) holdsBuffers() bool { return cs.br != nil }

// readRequest reads and validates a request head of at most maxHeader
// bytes plus net/http's 4 KiB of slack, counting the bytes of a pipelined
// request already buffered.
func (cs *clientSide) readRequest(maxHeader int) (*http.Request, error) {
	cs.lr.n = int64(maxHeader) + 4096 - int64(cs.br.Buffered())
	req, err := http.ReadRequest(cs.br)
	cs.lr.n = math.MaxInt64
	if err != nil {
		return nil, err
	}
	return req, validateRequest(req)
}

// The client side's 4 KiB buffers, held only while a request is in flight.
var (
	clientReaders = sync.Pool{New: func() any { return bufio.NewReaderSize(nil, 4<<10) }}
	clientWriters = sync.Pool{New: func() any { return bufio.NewWriterSize(nil, 4<<10) }}
)

// putClientBuffers returns an idle connection's buffers, emptied and
// detached from it, to their pools. They are left on pooledBuffer until
// taken again, so a use after this fails loudly.
func putClientBuffers(br *bufio.Reader, bw *bufio.Writer) {
	br.Reset(pooledBuffer{})
	bw.Reset(pooledBuffer{})
	clientReaders.Put(br)
	clientWriters.Put(bw)
}

// errPooledBuffer is what a use of a client buffer after it went back to
// its pool gets: a bug, never another connection's bytes.
var errPooledBuffer = errors.New("tlsmitm: client buffer used after it went back to its pool")

// pooledBuffer is the source and sink of a pooled client buffer.
type pooledBuffer struct{}

func (pooledBuffer) Read([]byte) (int, error)  { panic(errPooledBuffer) }
func (pooledBuffer) Write([]byte) (int, error) { panic(errPooledBuffer) }

// prefixReader yields the first byte of a request, read while the
// connection held no buffer, then reads r.
type prefixReader struct {
	r       io.Reader
	first   [1]byte
	pending bool
}

func (p *prefixReader) Read(b []byte) (int, error) {
	if p.pending && len(b) > 0 {
		b[0], p.pending = p.first[0], false
		return 1, nil
	}
	return p.r.Read(b)
}
