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
	"net/http/httputil"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"golang.org/x/net/http/httpguts"
)

// The HTTP/1.1 intercept path. An intercepted connection that did not
// negotiate h2 is served here, in the goroutine that accepted it: read a
// request, relay it on a pooled upstream connection, relay the response
// back, repeat. There is no goroutine per request (one per request body,
// which must stream while the response is read) and no channel handoff
// between a server, a reverse proxy and a transport, which is what makes
// net/http's path cost about twice the CPU per request. h2 connections keep
// net/http's server and transport (intercept.go).
//
// What it keeps from net/http's server: ReadHeaderTimeout, IdleTimeout and
// MaxHeaderBytes (431), the request validation (one valid Host, valid
// header names and values, 400 otherwise), Expect: 100-continue (answered
// here; 417 for anything else), Connection: close and HTTP/1.0. From
// ReverseProxy with Rewrite: hop-by-hop headers and X-Forwarded-*/Forwarded
// removed, protocol upgrades (WebSocket) spliced after a matching 101,
// trailers forwarded, streaming without buffering: a response chunk is
// flushed to the client as soon as the upstream has nothing more buffered.

// h1Conn is a relay connection, registered so that drain can close it
// while it waits for its next request.
type h1Conn struct {
	conn *tls.Conn                    // the client's connection
	idle atomic.Bool                  // waiting for the next request
	up   atomic.Pointer[upstreamConn] // the upstream connection in use
}

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

// serveH1 serves an intercepted HTTP/1.x connection until either side ends
// it, and closes it.
func (s *Server) serveH1(tc *tls.Conn, info *connInfo) {
	s.stats.activeHTTP.Add(1)
	defer s.stats.activeHTTP.Add(-1)
	hc := &h1Conn{conn: tc}
	s.registerH1(hc, true)
	defer s.registerH1(hc, false)
	defer tc.Close()

	lr := &headerLimitReader{r: tc}
	br := bufio.NewReaderSize(lr, 4<<10)
	bw := bufio.NewWriterSize(tc, 4<<10)
	for first := true; ; first = false {
		if !first {
			hc.idle.Store(true)
			if s.draining.Load() {
				return
			}
			tc.SetReadDeadline(time.Now().Add(s.cfg.IdleTimeout))
			if _, err := br.Peek(1); err != nil {
				return
			}
			hc.idle.Store(false)
		}
		tc.SetReadDeadline(time.Now().Add(s.cfg.ReadHeaderTimeout))
		lr.n = int64(s.cfg.MaxHeaderBytes) + 4096 // net/http's slack
		req, err := http.ReadRequest(br)
		lr.n = math.MaxInt64
		if err == nil {
			err = validateRequest(req)
		}
		if err != nil {
			s.rejectRequest(tc, bw, err)
			return
		}
		tc.SetReadDeadline(time.Time{})
		x := &h1Exchange{s: s, st: s.state.Load(), hc: hc, tc: tc, br: br, bw: bw}
		if !x.run(req, info) {
			return
		}
	}
}

// registerH1 adds or removes hc from the connections drain must reach.
func (s *Server) registerH1(hc *h1Conn, add bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if add {
		s.h1[hc] = struct{}{}
	} else {
		delete(s.h1, hc)
	}
}

// closeH1 closes the relay connections waiting for a request (onlyIdle),
// or all of them (the drain deadline).
func (s *Server) closeH1(onlyIdle bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for hc := range s.h1 {
		if !onlyIdle || hc.idle.Load() {
			hc.conn.NetConn().Close() // no close_notify: it could block on a stuck client
		}
		if uc := hc.up.Load(); uc != nil && !onlyIdle {
			uc.Close() // the exchange may be blocked reading the upstream
		}
	}
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
	if ok, suppressed := s.logLimit.allow(time.Now()); ok {
		s.log.Warn("rejected malformed intercepted request", "status", status, "error", err.Error(), "suppressed_since_last", suppressed)
	}
	text := strconv.Itoa(status) + " " + http.StatusText(status)
	tc.SetWriteDeadline(time.Now().Add(s.cfg.ReadHeaderTimeout))
	fmt.Fprintf(bw, "HTTP/1.1 %s\r\nContent-Type: text/plain; charset=utf-8\r\nContent-Length: %d\r\nConnection: close\r\n\r\n%s", text, len(text), text)
	bw.Flush()
}

// h1Exchange is one request and its response on a relay connection.
type h1Exchange struct {
	s  *Server
	st *state
	hc *h1Conn
	rs *reqState
	r  *http.Request
	tc *tls.Conn
	br *bufio.Reader // the client's
	bw *bufio.Writer // the client's
	uc *upstreamConn

	closeAfter bool       // the client connection ends after this exchange
	bodyDone   chan error // the request body sender's result; nil without a body
	armed      time.Time  // when the client write deadline was last pushed
	bd         bodyDeadline
}

// bodyDeadline keeps the client connection's read deadline BodyIdleTimeout
// ahead of the request body sender's last read (re-armed at most every
// idle/64, like the write deadline), and lets the exchange cut the sender
// with a deadline in the past that a re-arm cannot overwrite.
type bodyDeadline struct {
	conn  net.Conn
	idle  time.Duration
	armed time.Time // the sender's alone
	mu    sync.Mutex
	cut   bool
}

// extend runs on the sender before each read.
func (d *bodyDeadline) extend() {
	now := time.Now()
	if !d.armed.IsZero() && now.Sub(d.armed) < d.idle/64 {
		return
	}
	d.armed = now
	d.mu.Lock()
	defer d.mu.Unlock()
	if !d.cut {
		d.conn.SetReadDeadline(now.Add(d.idle))
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
		return fmt.Errorf("%w for %s: %w", errBodyIdle, d.idle, err)
	}
	return fmt.Errorf("%w: reading request body: %w", errClientClosed, err)
}

// run relays one request. It reports whether the connection may carry
// another one.
func (x *h1Exchange) run(req *http.Request, info *connInfo) (keep bool) {
	s := x.s
	s.stats.activeRequests.Add(1)
	defer s.stats.activeRequests.Add(-1)
	x.rs = &reqState{Context: s.baseCtx, info: info, st: x.st}
	x.r = req.WithContext(x.rs)
	x.closeAfter = req.Close
	if req.Body != nil && req.Body != http.NoBody {
		x.rs.body.ReadCloser = req.Body
		x.r.Body = &x.rs.body
	}
	start := time.Now()
	defer func() {
		if v := recover(); v != nil {
			s.stats.panics.Add(1)
			s.log.Error("panic serving intercepted request", "sni", info.sni, "panic", fmt.Sprint(v), "stack", stack())
			x.rs.err = fmt.Errorf("internal error: %v", v)
			keep = false
		}
		x.abortUpstream()
		s.recordRequest(x.rs, x.r, start)
	}()
	if err := s.admitRequest(info); err != nil {
		return x.respondError(err)
	}
	defer s.releaseRequest(info)
	return x.relay()
}

func (x *h1Exchange) relay() bool {
	r, rs := x.r, x.rs
	expectContinue := false
	if e := r.Header.Get("Expect"); e != "" {
		if !strings.EqualFold(e, "100-continue") {
			return x.respondError(errExpectation)
		}
		delete(r.Header, "Expect")
		expectContinue = r.ContentLength != 0
	}
	upgrade := upgradeType(r.Header)
	teTrailers := httpguts.HeaderValuesContainsToken(r.Header["Te"], "trailers")
	removeHopByHop(r.Header)
	for _, h := range []string{"Forwarded", "X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto"} {
		delete(r.Header, h)
	}
	x.s.prepareUpstream(rs, r.Host, r)
	if rs.err == nil {
		rs.err = checkInjectedHeaders(r.Header)
	}
	if rs.err != nil {
		return x.respondError(rs.err)
	}
	if expectContinue {
		x.bw.WriteString("HTTP/1.1 100 Continue\r\n\r\n")
		if err := x.flushClient(); err != nil {
			return false
		}
	}

	var resp *http.Response
	for attempt := 0; ; attempt++ {
		uc, err := x.st.h1pool.get(rs, rs.host, attempt > 0)
		if err != nil {
			return x.respondError(err)
		}
		x.setUpstream(uc)
		resp, err = x.roundTrip(upgrade, teTrailers)
		if err == nil {
			break
		}
		// A pooled connection the upstream closed meanwhile: a replayable
		// request is sent again once, on a new connection (http.Transport's
		// rule: the upstream may have acted on anything else).
		stale := uc.reused && attempt == 0 && x.replayable() && isStaleConnError(err) && !errors.Is(err, errClientClosed)
		x.abortUpstream()
		if !stale {
			return x.respondError(err)
		}
	}
	if resp.StatusCode == http.StatusSwitchingProtocols {
		return x.switchProtocols(resp, upgrade)
	}
	return x.respond(resp)
}

func (x *h1Exchange) hasBody() bool {
	return x.r.ContentLength != 0 && x.r.Body != nil && x.r.Body != http.NoBody
}

// replayable is http.Transport's rule for sending a request again after a
// failure: no body, and a method (or an Idempotency-Key) that makes a
// second copy harmless.
func (x *h1Exchange) replayable() bool {
	if x.hasBody() {
		return false
	}
	switch x.r.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions: // TRACE never gets here (refusedMethod)
		return true
	}
	return x.r.Header.Get("Idempotency-Key") != "" || x.r.Header.Get("X-Idempotency-Key") != ""
}

// setUpstream makes uc the exchange's upstream connection (nil: none), where
// the drain deadline can reach it.
func (x *h1Exchange) setUpstream(uc *upstreamConn) {
	x.uc = uc
	x.hc.up.Store(uc)
}

var errExpectation = errors.New("unsupported Expect header (only 100-continue is)")

// roundTrip writes the request head (and starts the body) on x.uc and reads
// the response head, skipping interim responses (103 is forwarded).
func (x *h1Exchange) roundTrip(upgrade string, teTrailers bool) (*http.Response, error) {
	r, uc := x.r, x.uc
	writeRequestHead(uc.bw, r, upgrade, teTrailers)
	x.bodyDone = nil
	if x.hasBody() {
		x.bodyDone = make(chan error, 1)
		x.bd = bodyDeadline{conn: x.tc, idle: x.s.cfg.BodyIdleTimeout}
		go sendBody(uc, r, x.br, &x.bd, x.bodyDone)
	} else if err := uc.bw.Flush(); err != nil {
		return nil, fmt.Errorf("writing request to upstream: %w", err)
	}
	if d := x.s.cfg.ResponseHeaderTimeout; d > 0 {
		uc.conn.SetReadDeadline(time.Now().Add(d))
		defer uc.conn.SetReadDeadline(time.Time{})
	}
	watch := x.watchClient()
	defer watch.stop()
	for interim := 0; ; interim++ {
		if interim > maxInterimResponses {
			return nil, fmt.Errorf("reading response from upstream: more than %d interim (1xx) responses", maxInterimResponses)
		}
		uc.limitHead()
		resp, err := http.ReadResponse(uc.br, r)
		uc.unlimit()
		if errors.Is(err, errHeaderTooLarge) {
			err = fmt.Errorf("upstream response head exceeds %d bytes", maxResponseHeadBytes)
		}
		if err != nil && watch.stop() {
			err = fmt.Errorf("%w while waiting for the upstream: %w", errClientClosed, err)
		}
		if err != nil {
			if x.bodyDone != nil {
				// A failed request body (the client went away) is the cause.
				uc.Close()
				berr := <-x.bodyDone
				x.bodyDone = nil
				x.closeAfter = true // the request body may be partly read
				if errors.Is(berr, errClientClosed) || errors.Is(berr, errBodyIdle) {
					return nil, berr
				}
			}
			return nil, fmt.Errorf("reading response from upstream: %w", err)
		}
		if resp.StatusCode >= 200 || resp.StatusCode == http.StatusSwitchingProtocols {
			return resp, nil
		}
		if resp.StatusCode == http.StatusEarlyHints {
			x.st.injector.RedactResponse(x.rs.info.sni, resp.Header)
			x.writeHead(resp, "")
			if err := x.flushClient(); err != nil {
				return nil, err
			}
		}
	}
}

// maxInterimResponses caps 1xx responses before the final one (as
// http.Transport does).
const maxInterimResponses = 5

// errClientClosed: the client went away mid-request (audited as 499).
var errClientClosed = errors.New("client closed the connection")

// sendBody streams the request body upstream (re-chunked when its length is
// unknown), flushing whenever the client has sent nothing more yet. A read
// that makes no progress for BodyIdleTimeout fails it (bd).
func sendBody(uc *upstreamConn, r *http.Request, clientBuf *bufio.Reader, bd *bodyDeadline, done chan<- error) {
	defer func() {
		if v := recover(); v != nil { // every send below is followed by return
			uc.Close()
			done <- fmt.Errorf("internal error sending request body: %v", v)
		}
	}()
	bufp := copyBuffers.Get().(*[]byte)
	defer copyBuffers.Put(bufp)
	buf := *bufp
	var w io.Writer = uc.bw
	var cw io.WriteCloser
	if r.ContentLength < 0 {
		cw = httputil.NewChunkedWriter(uc.bw)
		w = cw
	}
	for {
		bd.extend()
		n, rerr := r.Body.Read(buf)
		if n > 0 {
			if _, err := w.Write(buf[:n]); err != nil {
				done <- fmt.Errorf("writing request body to upstream: %w", err)
				return
			}
			if clientBuf.Buffered() == 0 {
				if err := uc.bw.Flush(); err != nil {
					done <- fmt.Errorf("writing request body to upstream: %w", err)
					return
				}
			}
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			// The upstream must not take a truncated body for a whole one,
			// nor answer it before the exchange stops reading: close the
			// socket under TLS, with no close_notify to answer.
			uc.abort()
			done <- bd.readErr(rerr)
			return
		}
	}
	if cw != nil {
		// "0\r\n\r\n": request trailers are not forwarded (they would
		// bypass the Injector's header rules, and APIs do not use them).
		cw.Close()
		uc.bw.WriteString("\r\n")
	}
	if err := uc.bw.Flush(); err != nil {
		done <- fmt.Errorf("writing request body to upstream: %w", err)
		return
	}
	done <- nil
}

// bodyGrace is how long a complete response waits for the request body
// sender to report. It normally has already, or is about to (its last read
// returning EOF can come after the upstream answered); a sender still busy
// after that is stuck on an upstream that answered without reading the
// whole body, or on a client still sending one.
const bodyGrace = time.Second

// waitBody waits for the request body sender. When the upstream has not
// taken the whole body, the upstream connection is closed to stop the
// sender (and is not reused), and so is the client's.
func (x *h1Exchange) waitBody() error {
	if x.bodyDone == nil {
		return nil
	}
	var err error
	select {
	case err = <-x.bodyDone:
	default:
		grace := time.NewTimer(bodyGrace)
		select {
		case err = <-x.bodyDone:
			grace.Stop()
		case <-grace.C:
			x.uc.Close()
			x.bd.stop() // a sender waiting on the client
			err = <-x.bodyDone
			if err == nil {
				err = errors.New("upstream answered before reading the whole request body")
			}
		}
	}
	x.bodyDone = nil
	if err != nil {
		x.closeAfter = true
		x.uc.Close()
		x.setUpstream(nil)
	}
	return err
}

// abortUpstream closes the upstream connection still held (a failed or
// cut exchange) and waits for the body sender.
func (x *h1Exchange) abortUpstream() {
	if x.uc == nil {
		return
	}
	x.uc.Close()
	if x.bodyDone != nil {
		x.bd.stop() // a sender waiting on the client
		<-x.bodyDone
		x.bodyDone = nil
		x.closeAfter = true
	}
	x.setUpstream(nil)
}

// respond relays a final response and its body.
func (x *h1Exchange) respond(resp *http.Response) bool {
	x.st.injector.RedactResponse(x.rs.info.sni, resp.Header)
	hasBody := x.r.Method != http.MethodHead && resp.StatusCode != http.StatusNoContent &&
		resp.StatusCode != http.StatusNotModified
	chunked := false
	var framing string
	switch {
	case !hasBody:
		// Content-Length (of the HEAD/304 entity) passes through as sent.
	case resp.ContentLength >= 0:
		resp.Header.Del("Content-Length")
		framing = "Content-Length: " + strconv.FormatInt(resp.ContentLength, 10) + "\r\n"
	case x.r.ProtoAtLeast(1, 1):
		resp.Header.Del("Content-Length")
		chunked = true
		framing = "Transfer-Encoding: chunked\r\n"
		if len(resp.Trailer) > 0 {
			framing += "Trailer: " + strings.Join(headerKeys(resp.Trailer), ", ") + "\r\n"
		}
	default: // an HTTP/1.0 client: the end of the body is the end of the connection
		resp.Header.Del("Content-Length")
		x.closeAfter = true
	}
	x.rs.sw.status = resp.StatusCode
	if x.s.draining.Load() {
		x.closeAfter = true
	}
	x.extend()
	x.writeHead(resp, framing)
	// A response of unknown length (chunked, close-delimited) or an event
	// stream is flushed at every write, as ReverseProxy does; one of known
	// length whenever the upstream has nothing more buffered.
	streaming := resp.ContentLength < 0 || strings.HasPrefix(resp.Header.Get("Content-Type"), "text/event-stream")
	if x.uc.br.Buffered() == 0 { // the body is not here yet: send the head now
		if err := x.flushClient(); err != nil {
			x.rs.err = err
			return false
		}
	}
	n, err := x.copyBody(resp, chunked, streaming)
	x.rs.sw.n = n
	if err != nil {
		x.rs.err = err
		return false
	}
	if err := x.waitBody(); err != nil && (errors.Is(err, errClientClosed) || errors.Is(err, errBodyIdle)) {
		x.rs.err = err
	}
	if x.uc != nil && !resp.Close {
		x.st.h1pool.put(x.uc)
		x.setUpstream(nil)
	}
	x.abortUpstream()
	return !x.closeAfter
}

// writeHead writes a response head (hop-by-hop headers removed) to the
// client's buffer.
func (x *h1Exchange) writeHead(resp *http.Response, framing string) {
	removeHopByHop(resp.Header)
	bw := x.bw
	bw.WriteString("HTTP/1.1 ")
	bw.WriteString(statusLine(resp))
	bw.WriteString("\r\n")
	writeHeaderLines(bw, resp.Header)
	bw.WriteString(framing)
	if x.closeAfter && resp.StatusCode >= 200 {
		bw.WriteString("Connection: close\r\n")
	}
	bw.WriteString("\r\n")
}

// statusLine is "code reason" with our own reason phrase, as net/http's
// server writes it: the upstream's could carry bytes a client would take
// for a header, or an echoed credential.
func statusLine(resp *http.Response) string {
	code := strconv.Itoa(resp.StatusCode)
	if text := http.StatusText(resp.StatusCode); text != "" {
		return code + " " + text
	}
	return code + " status code " + code
}

// copyBody relays the response body, flushing to the client after every
// write when streaming, otherwise whenever the upstream has nothing more
// buffered (a small response goes out with its head in one record).
//
// The body is not Closed on failure: that would drain it from the
// upstream; the caller closes the upstream connection instead.
func (x *h1Exchange) copyBody(resp *http.Response, chunked, streaming bool) (int64, error) {
	bufp := copyBuffers.Get().(*[]byte)
	defer copyBuffers.Put(bufp)
	buf := *bufp
	var w io.Writer = x.bw
	var cw io.WriteCloser
	if chunked {
		cw = httputil.NewChunkedWriter(x.bw)
		w = cw
	}
	var total int64
	for {
		n, rerr := resp.Body.Read(buf)
		if n > 0 {
			x.extend()
			if _, err := w.Write(buf[:n]); err != nil {
				return total, fmt.Errorf("%w: writing response: %w", errClientClosed, err)
			}
			total += int64(n)
		}
		if rerr == io.EOF {
			break
		}
		if rerr != nil {
			return total, fmt.Errorf("reading response body from upstream: %w", rerr)
		}
		if streaming || x.uc.br.Buffered() == 0 {
			if err := x.flushClient(); err != nil {
				return total, err
			}
		}
	}
	if cw != nil {
		cw.Close()
		x.st.injector.RedactResponse(x.rs.info.sni, resp.Trailer)
		writeHeaderLines(x.bw, resp.Trailer)
		x.bw.WriteString("\r\n")
	}
	return total, x.flushClient()
}

// extend pushes the client write deadline forward as the response
// progresses (see statusWriter.extend).
func (x *h1Exchange) extend() {
	idle := x.s.cfg.WriteIdleTimeout
	now := time.Now()
	if !x.armed.IsZero() && now.Sub(x.armed) < idle/64 {
		return
	}
	x.armed = now
	x.tc.SetWriteDeadline(now.Add(idle))
}

func (x *h1Exchange) flushClient() error {
	x.extend()
	if err := x.bw.Flush(); err != nil {
		return fmt.Errorf("%w: writing response: %w", errClientClosed, err)
	}
	return nil
}

// respondError answers with errorResponse's page (421, 403, 500, 502…).
func (x *h1Exchange) respondError(err error) bool {
	x.abortUpstream()
	if x.r.ContentLength != 0 && x.rs.body.ReadCloser != nil && x.bodyDone == nil {
		x.closeAfter = true // the body was not read; the stream is out of step
	}
	if x.s.draining.Load() {
		x.closeAfter = true
	}
	br := &bufferedResponse{header: make(http.Header)}
	x.s.errorResponse(br, x.r, err)
	if br.status == 0 { // the client is gone: nothing to send
		return false
	}
	if closesConnection(br.status) {
		x.closeAfter = true
	}
	x.rs.sw.status, x.rs.sw.n = br.status, int64(len(br.body))
	resp := &http.Response{StatusCode: br.status, Status: strconv.Itoa(br.status) + " " + http.StatusText(br.status), Header: br.header}
	x.extend()
	x.writeHead(resp, "Content-Length: "+strconv.Itoa(len(br.body))+"\r\n")
	x.bw.Write(br.body)
	if x.flushClient() != nil {
		return false
	}
	return !x.closeAfter
}

// bufferedResponse is the ResponseWriter errorResponse writes into.
type bufferedResponse struct {
	header http.Header
	status int
	body   []byte
}

func (b *bufferedResponse) Header() http.Header { return b.header }

func (b *bufferedResponse) WriteHeader(code int) {
	if b.status == 0 {
		b.status = code
	}
}

func (b *bufferedResponse) Write(p []byte) (int, error) {
	if b.status == 0 {
		b.status = http.StatusOK
	}
	b.body = append(b.body, p...)
	return len(p), nil
}

// switchProtocols relays a 101 and then splices both ways until either
// side closes (WebSocket and other upgrades).
func (x *h1Exchange) switchProtocols(resp *http.Response, want string) bool {
	got := resp.Header.Get("Upgrade")
	if want == "" || !strings.EqualFold(got, want) {
		return x.respondError(fmt.Errorf("upstream switched to protocol %q, the client asked for %q", got, want))
	}
	if err := x.waitBody(); err != nil {
		return x.respondError(err)
	}
	x.rs.sw.status = resp.StatusCode
	x.st.injector.RedactResponse(x.rs.info.sni, resp.Header)
	x.writeHead(resp, "Connection: Upgrade\r\nUpgrade: "+got+"\r\n")
	if x.flushClient() != nil {
		return false
	}
	x.tc.SetWriteDeadline(time.Time{}) // an upgraded stream has no idle limit here
	x.tc.SetReadDeadline(time.Time{})  // nor the body's
	uc := x.uc
	var wg sync.WaitGroup
	var out int64
	wg.Add(1)
	go func() {
		defer wg.Done()
		out, _ = io.Copy(x.tc, uc.br) // buffered bytes first, then the connection
		x.tc.NetConn().Close()
	}()
	in, _ := io.Copy(uc.conn, x.br)
	uc.Close()
	wg.Wait()
	x.rs.body.n.Add(in)
	x.rs.sw.n = out
	return false
}

// upgradeType returns the protocol a request asks to switch to, if any.
func upgradeType(h http.Header) string {
	if !httpguts.HeaderValuesContainsToken(h["Connection"], "Upgrade") {
		return ""
	}
	return h.Get("Upgrade")
}

// hopHeaders are removed in both directions (RFC 9110 section 7.6.1), as
// ReverseProxy does.
var hopHeaders = []string{
	"Connection", "Proxy-Connection", "Keep-Alive", "Proxy-Authenticate",
	"Proxy-Authorization", "Te", "Trailer", "Transfer-Encoding", "Upgrade",
}

func removeHopByHop(h http.Header) {
	for _, f := range h["Connection"] {
		for sf := range strings.SplitSeq(f, ",") {
			if sf = strings.TrimSpace(sf); sf != "" {
				h.Del(sf)
			}
		}
	}
	for _, k := range hopHeaders {
		delete(h, k)
	}
}

// writeRequestHead writes the upstream request head: origin-form target,
// Host set to the upstream name, the body's framing.
func writeRequestHead(bw *bufio.Writer, r *http.Request, upgrade string, teTrailers bool) {
	bw.WriteString(r.Method)
	bw.WriteByte(' ')
	bw.WriteString(r.URL.RequestURI())
	bw.WriteString(" HTTP/1.1\r\nHost: ")
	bw.WriteString(r.URL.Host)
	bw.WriteString("\r\n")
	delete(r.Header, "Content-Length")
	writeHeaderLines(bw, r.Header)
	switch {
	case r.ContentLength > 0:
		bw.WriteString("Content-Length: ")
		bw.WriteString(strconv.FormatInt(r.ContentLength, 10))
		bw.WriteString("\r\n")
	case r.ContentLength < 0:
		bw.WriteString("Transfer-Encoding: chunked\r\n")
	case r.Method == http.MethodPost || r.Method == http.MethodPut || r.Method == http.MethodPatch:
		bw.WriteString("Content-Length: 0\r\n")
	}
	if upgrade != "" {
		bw.WriteString("Connection: Upgrade\r\nUpgrade: ")
		bw.WriteString(upgrade)
		bw.WriteString("\r\n")
	}
	if teTrailers {
		bw.WriteString("Te: trailers\r\n")
	}
	bw.WriteString("\r\n")
}

func writeHeaderLines(bw *bufio.Writer, h http.Header) {
	for k, vv := range h {
		for _, v := range vv {
			bw.WriteString(k)
			bw.WriteString(": ")
			bw.WriteString(v)
			bw.WriteString("\r\n")
		}
	}
}

func headerKeys(h http.Header) []string {
	keys := make([]string, 0, len(h))
	for k := range h {
		keys = append(keys, k)
	}
	return keys
}

// isStaleConnError reports whether a request on a reused upstream
// connection failed the way a connection the peer had already closed does.
func isStaleConnError(err error) bool {
	return errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) ||
		errors.Is(err, syscall.ECONNRESET) || errors.Is(err, syscall.EPIPE) || errors.Is(err, net.ErrClosed)
}
