package tlsmitm

import (
	"bufio"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// The HTTP/1.1 intercept path. An intercepted connection that did not
// negotiate h2 is served here, in the goroutine that accepted it: read a
// request, relay it on a pooled upstream connection, relay the response
// back, repeat. There is no goroutine per request (one per request body,
// which must stream while the response is read) and no channel handoff
// between a server, a reverse proxy and a transport, which is what makes
// net/http's path cost about twice the CPU per request. h2 connections have
// a frontend of their own (h2serve.go) and use this relay's upstream pool
// (h2relay.go).
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
	conn   *tls.Conn                    // the client's connection
	socket *replayConn                  // under conn's TLS: batches bulk bodies (batchio.go)
	idle   atomic.Bool                  // waiting for the next request
	up     atomic.Pointer[upstreamConn] // the upstream connection in use
	watch  clientWatch                  // for a client hanging up while the upstream works
}

// serveH1 serves an intercepted HTTP/1.x connection until either side ends
// it, and closes it.
func (s *Server) serveH1(tc *tls.Conn, socket *replayConn, info *connInfo) {
	s.stats.activeHTTP.Add(1)
	hc := &h1Conn{conn: tc, socket: socket, watch: clientWatch{client: socket}}
	s.registerH1(hc, true)
	s.relayH1(hc, newClientSide(tc), info, false)
}

// relayH1 relays hc's requests until either side ends the connection, and
// closes it; or until the connection has waited ParkAfter for a request,
// and parks it (park.go): relayH1 then goes on, resumed, in the goroutine
// the wait ends in.
func (s *Server) relayH1(hc *h1Conn, cs *clientSide, info *connInfo, resumed bool) {
	parked := false
	defer func() {
		if !parked {
			closeH1(hc.conn)
			s.registerH1(hc, false)
			s.stats.activeHTTP.Add(-1)
		}
	}()
	tc := hc.conn
	for first := !resumed; ; first = false {
		if !first {
			var came bool
			came, parked = s.awaitH1(hc, cs, info, resumed)
			if !came {
				return
			}
			resumed = false
			hc.idle.Store(false)
		}
		tc.SetReadDeadline(time.Now().Add(s.cfg.ReadHeaderTimeout))
		req, err := cs.readRequest(s.cfg.MaxHeaderBytes)
		if err != nil {
			s.rejectRequest(tc, cs.bw, err)
			return
		}
		tc.SetReadDeadline(time.Time{})
		x := &h1Exchange{s: s, st: s.state.Load(), hc: hc, tc: tc, br: cs.br, bw: cs.bw, wd: slidingDeadline{idle: s.cfg.WriteIdleTimeout}}
		if !x.run(req, info) {
			return
		}
	}
}

// awaitH1 waits for the next request on hc, under the idle timeout. came
// is false when the connection ends instead, or when it parked (parked).
// A resumed connection's wait is over: its read deadline is still the
// idle one, and the request's first byte is there, or the end.
func (s *Server) awaitH1(hc *h1Conn, cs *clientSide, info *connInfo, resumed bool) (came, parked bool) {
	if resumed {
		return cs.awaitRequest() == nil, false
	}
	hc.idle.Store(true)
	if s.draining.Load() {
		return false, false
	}
	now := time.Now()
	idleUntil := now.Add(s.cfg.IdleTimeout)
	wait, parks := s.parkDeadline(now, idleUntil)
	hc.conn.SetReadDeadline(wait)
	err := cs.awaitRequest()
	if err == nil || !parks || !isTimeout(err) {
		return err == nil, false
	}
	hc.conn.SetReadDeadline(idleUntil)
	if !cs.holdsBuffers() && s.park(hc.socket, func() { s.relayH1(hc, cs, info, true) }) {
		return false, true
	}
	return cs.awaitRequest() == nil, false
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

	bodyDone chan error      // the request body sender's result; nil without a body
	wd       slidingDeadline // the client write deadline
	bd       bodyDeadline

	// Facts that end the client connection after this exchange, recorded
	// where they are learnt; keepAlive decides from them.
	bodyOutOfStep  bool // the request body was not read to its end
	closeDelimited bool // the response body ends with the connection (HTTP/1.0)
	closingStatus  bool // an error status that closes the connection
}

// keepAlive reports whether the client connection may carry another
// request after this exchange: the client did not ask to close, the stream
// is in step, the response has its own framing, and the server is not
// draining.
func (x *h1Exchange) keepAlive() bool {
	return !x.r.Close && !x.bodyOutOfStep && !x.closeDelimited && !x.closingStatus && !x.s.draining.Load()
}

// run relays one request. It reports whether the connection may carry
// another one.
func (x *h1Exchange) run(req *http.Request, info *connInfo) (keep bool) {
	s := x.s
	s.stats.activeRequests.Add(1)
	defer s.stats.activeRequests.Add(-1)
	x.rs = &reqState{Context: s.baseCtx, info: info, st: x.st}
	x.r = req.WithContext(x.rs)
	if req.Body != nil && req.Body != http.NoBody {
		x.rs.body.ReadCloser = req.Body
		x.r.Body = &x.rs.body
	}
	start := time.Now()
	defer func() {
		if v := recover(); v != nil {
			s.recordPanic(v, "panic serving intercepted request", "sni", info.sni)
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
	teTrailers := x.s.prepareRelay(rs, r)
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
		stale := uc.reused && attempt == 0 && replayable(x.r) && isStaleConnError(err) && !errors.Is(err, errClientClosed)
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

func hasBody(r *http.Request) bool {
	return r.ContentLength != 0 && r.Body != nil && r.Body != http.NoBody
}

// replayable is http.Transport's rule for sending a request again after a
// failure: no body, and a method (or an Idempotency-Key) that makes a
// second copy harmless.
func replayable(r *http.Request) bool {
	if hasBody(r) {
		return false
	}
	switch r.Method {
	case http.MethodGet, http.MethodHead, http.MethodOptions: // TRACE never gets here (refusedMethod)
		return true
	}
	return r.Header.Get("Idempotency-Key") != "" || r.Header.Get("X-Idempotency-Key") != ""
}

// setUpstream makes uc the exchange's upstream connection (nil: none), where
// the drain deadline can reach it.
func (x *h1Exchange) setUpstream(uc *upstreamConn) {
	x.uc = uc
	x.hc.up.Store(uc)
}

var errExpectation = errors.New("unsupported Expect header (only 100-continue is)")

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
		x.closeDelimited = true
	}
	x.rs.sw.status = resp.StatusCode
	x.extend()
	x.writeHead(resp, framing)
	// A response of unknown length (chunked, close-delimited) or an event
	// stream is flushed at every write, as ReverseProxy does; one of known
	// length whenever the upstream has nothing more buffered.
	streaming := resp.ContentLength < 0 || isEventStream(resp.Header)
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
	return x.keepAlive()
}

// respondError answers with errorResponse's page (421, 403, 500, 502…).
func (x *h1Exchange) respondError(err error) bool {
	x.abortUpstream()
	if x.r.ContentLength != 0 && x.rs.body.ReadCloser != nil && x.bodyDone == nil {
		x.bodyOutOfStep = true // the body was not read
	}
	br := &bufferedResponse{header: make(http.Header)}
	x.s.errorResponse(br, x.r, err)
	if br.status == 0 { // the client is gone: nothing to send
		return false
	}
	x.closingStatus = closesConnection(br.status)
	x.rs.sw.status, x.rs.sw.n = br.status, int64(len(br.body))
	resp := &http.Response{StatusCode: br.status, Status: strconv.Itoa(br.status) + " " + http.StatusText(br.status), Header: br.header}
	x.extend()
	x.writeHead(resp, "Content-Length: "+strconv.Itoa(len(br.body))+"\r\n")
	x.bw.Write(br.body)
	if x.flushClient() != nil {
		return false
	}
	return x.keepAlive()
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
