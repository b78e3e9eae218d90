package tlsmitm

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"sync"
	"sync/atomic"
	"time"
)

// intercept terminates TLS on c (replaying the recorded hello), then serves
// the connection as HTTP/1.x (serveH1) or h2 (serveH2), here, in the
// accepting goroutine. It reports whether it took care of closing c.
func (s *Server) intercept(c net.Conn, hello []byte, info *connInfo) bool {
	tc, rc, h2 := s.terminate(c, hello, info)
	switch {
	case tc == nil:
		return false
	case h2:
		s.serveH2(tc, rc, info) // it closes tc
	default:
		s.serveH1(tc, rc, info) // likewise
	}
	return true
}

// terminate runs the client handshake; a nil *tls.Conn means it failed.
// (Its own function, so that its frame is not under the serving one.)
func (s *Server) terminate(c net.Conn, hello []byte, info *connInfo) (tc *tls.Conn, rc *replayConn, h2 bool) {
	s.stats.intercepted.Add(1)
	rc = &replayConn{batchConn: newBatchConn(c), pending: hello, info: info}
	tc = tls.Server(rc, s.tlsCfg)
	ctx, cancel := context.WithTimeout(s.baseCtx, s.cfg.HandshakeTimeout)
	err := tc.HandshakeContext(ctx)
	cancel()
	if err != nil {
		s.handshakeFailed(info, err)
		return nil, nil, false
	}
	s.trackRaw(c, false)
	return tc, rc, tc.ConnectionState().NegotiatedProtocol == "h2"
}

// handshakeFailed counts and audits a failed client handshake. (Its own
// function: the audit event would take room in intercept's frame, which
// stays under the serving connection's.)
func (s *Server) handshakeFailed(info *connInfo, err error) {
	s.stats.handshakeErrors.Add(1)
	s.audit(info.st, Event{
		Time: info.start, Client: info.client, SrcIP: info.src, OrigDst: info.origDst,
		SNI: info.sni, Decision: Intercept, Rule: info.rule,
		Duration: time.Since(info.start), Err: "client TLS handshake: " + err.Error(),
	})
}

// newTLSConfig is the terminator's TLS config. One is shared by all
// connections: session ticket keys live in it, so resumption works.
func (s *Server) newTLSConfig() *tls.Config {
	return &tls.Config{
		GetCertificate: s.certs.getCertificate,
		NextProtos:     []string{"h2", "http/1.1"},
		MinVersion:     tls.VersionTLS12,
		// The client-facing leg never leaves the host (container bridge to
		// the daemon), so it uses plain X25519 rather than the ML-KEM
		// hybrid, whose encapsulation costs several times X25519's work.
		// crypto/tls ignores the order of this list and picks a post-quantum
		// group whenever both sides have one, so the hybrid is left out
		// rather than put last. Every TLS 1.3 client offers X25519 or P-256.
		// The upstream leg keeps Go's defaults, hybrid post-quantum included.
		CurvePreferences: []tls.CurveID{tls.X25519, tls.CurveP256},
		// Full-size records from the first byte: small opening records help
		// a browser render early over a lossy link; our clients are API
		// clients on the same host, for whom they only mean more records
		// (one write(2) each) for the first 128 KiB of every connection.
		DynamicRecordSizingDisabled: true,
	}
}

// reqState carries one request through Rewrite, the transport guard,
// ErrorHandler and the audit. It is the request's context too (Value
// answers reqStateKey, everything else is the parent's), and it holds the
// response and body wrappers, so a request costs one allocation here.
type reqState struct {
	context.Context
	info     *connInfo
	st       *state
	host     string // the Host name, once rewrite has checked it
	rule     string
	injected bool
	err      error
	sw       statusWriter
	body     countingBody
}

type reqStateKey struct{}

// Value implements context.Context.
func (rs *reqState) Value(key any) any {
	if key == (reqStateKey{}) {
		return rs
	}
	return rs.Context.Value(key)
}

func reqStateOf(r *http.Request) *reqState {
	rs, _ := r.Context().Value(reqStateKey{}).(*reqState)
	return rs
}

// recordRequest counts a finished intercepted request and audits it.
func (s *Server) recordRequest(rs *reqState, r *http.Request, start time.Time) {
	s.stats.requests.Add(1)
	if rs.err != nil && errors.Is(rs.err, errBodyIdle) {
		s.stats.bodyTimeouts.Add(1)
	}
	status := rs.sw.status
	if status == 0 && rs.err != nil {
		status = classifyHTTP(rs.err).status
	} else if status == 0 {
		status = http.StatusOK
	}
	ev := Event{
		Time: start, Client: rs.info.client, SrcIP: rs.info.src, OrigDst: rs.info.origDst,
		SNI: rs.info.sni, Host: rs.host, Method: r.Method, Path: wirePath(r),
		Status: status, Decision: auditDecision(rs.err), Rule: rs.rule, AuthInjected: rs.injected,
		Duration: time.Since(start), BytesIn: rs.body.n.Load(), BytesOut: rs.sw.n,
	}
	if ev.Host == "" { // rewrite did not run
		ev.Host = hostOnly(r.Host)
	}
	if ev.Rule == "" {
		ev.Rule = rs.info.rule
	}
	if rs.err != nil {
		ev.Err = rs.err.Error()
	}
	s.audit(rs.st, ev)
}

// prepareUpstream refuses TRACE, TRACK and CONNECT, checks the request's
// Host (inHost) against the SNI name,
// addresses out to the SNI host and lets the Injector apply its rule; both
// intercept paths (ReverseProxy's Rewrite, the HTTP/1.1 relay) use it.
// Errors are parked in rs.err.
func (s *Server) prepareUpstream(rs *reqState, inHost string, out *http.Request) {
	sni := rs.info.sni
	if err := checkRequestLine(out); err != nil {
		rs.err = err
		return
	}
	delete(out.Header, "Host") // an h2 client's "host" field: the upstream's Host is the SNI name
	if refusedMethod(out.Method) {
		rs.err = fmt.Errorf("%w: %s", ErrMethodNotAllowed, out.Method)
		return
	}
	host, ok := hostMatches(inHost, sni)
	rs.host = host
	if !ok {
		rs.err = fmt.Errorf("%w: Host %q, server name %q", ErrSNIMismatch, host, sni)
		return
	}
	// A reload may have stopped intercepting this name while the
	// connection stayed open: never inject under a stale decision.
	if d, _ := rs.st.router.Route(sni); d != Intercept {
		rs.err = fmt.Errorf("%w: %s is no longer intercepted (configuration reloaded)", ErrNoRoute, sni)
		return
	}
	out.URL.Scheme = "https"
	out.URL.Host = sni
	out.Host = ""
	rule, injected, err := rs.st.injector.Apply(out, sni, rs.info.client)
	rs.rule, rs.injected = rule, injected
	if err != nil {
		if !errors.Is(err, ErrForbidden) {
			err = fmt.Errorf("%w: %w", errInjector, err)
		}
		rs.err = err
	}
}

// refusedMethod reports the methods never relayed to an intercepted host:
// TRACE and TRACK (an upstream echoing the request returns the injected
// credential) and CONNECT (a tunnel past the Injector; h2 lets one through
// to the handler). Compared ignoring case: some servers do.
func refusedMethod(m string) bool {
	return strings.EqualFold(m, "TRACE") || strings.EqualFold(m, "TRACK") || strings.EqualFold(m, http.MethodConnect)
}

// hostMatches compares the request's Host name (any port: the upstream is
// always the SNI name on 443) to the SNI name.
func hostMatches(hostHeader, sni string) (string, bool) {
	host := hostHeader
	if strings.LastIndexByte(hostHeader, ':') >= 0 { // SplitHostPort allocates its error otherwise
		if h, _, err := net.SplitHostPort(hostHeader); err == nil {
			host = h
		}
	}
	host = normalizeName(host)
	return host, host != "" && host == sni
}

func hostOnly(hostHeader string) string {
	h, _ := hostMatches(hostHeader, "")
	return h
}

// errorResponse is the one place request errors become responses: 421 for
// SNI/Host mismatch, 403 for forbidden, 500 for injector failures, 502 with
// a JSON body and X-Clauderon-Error for upstream failures.
func (s *Server) errorResponse(w http.ResponseWriter, r *http.Request, err error) {
	rs := reqStateOf(r)
	if rs != nil && rs.body.idleOut.Load() && !errors.Is(err, errBodyIdle) {
		// The transport reports the body's deadline its own way.
		err = fmt.Errorf("%w for %s: %w", errBodyIdle, s.cfg.BodyIdleTimeout, err)
	}
	if rs != nil && rs.err == nil {
		rs.err = err
	}
	he := classifyHTTP(err)
	if he.status == statusClientClosed {
		return
	}
	if he.kind != "" {
		s.stats.upstreamErrors.Add(1)
		w.Header().Set("X-Clauderon-Error", he.kind)
	}
	sni := ""
	if rs != nil {
		sni = rs.info.sni
	}
	s.events.Warn("intercepted request failed", "sni", sni, "method", auditField(r.Method, maxAuditField), "path", auditField(wirePath(r), maxAuditField),
		"status", he.status, "kind", he.kind, "err", err.Error())
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	if he.status == http.StatusServiceUnavailable {
		w.Header().Set("Retry-After", retryAfterSeconds)
	}
	if he.status == http.StatusMethodNotAllowed {
		w.Header().Set("Allow", "GET, HEAD, POST, PUT, PATCH, DELETE, OPTIONS")
	}
	if closesConnection(he.status) && (r.ProtoMajor < 2 || connectionBound(rs, he.status, err)) {
		// The h2 frontend answers this with GOAWAY; the HTTP/1.1
		// relay closes the connection after the response (respondError).
		// On h2 only a refusal about the connection does (see
		// connectionBound): a GOAWAY ahead of a policy 403's HEADERS makes
		// curl (7.88) report the whole answer as a partial transfer.
		w.Header().Set("Connection", "close")
	}
	if he.status == http.StatusServiceUnavailable && r.ProtoMajor == 2 {
		// A stream refused for the request limits gets no body: a body
		// needs flow-control window, and a client that never opens it
		// would hold the refused stream (outside every limit) until the
		// write deadline. HEADERS with END_STREAM needs none.
		w.Header().Set("Content-Length", "0")
		w.WriteHeader(he.status)
		return
	}
	w.WriteHeader(he.status)
	json.NewEncoder(w).Encode(errorBody{Error: errorDetail{Type: he.typ, Kind: he.kind, Message: he.message}})
}

// connectionBound reports whether an h2 refusal is about the connection
// rather than the request, so the client must open a new one: a 421 (it
// may not reuse the connection for the other name), a name no longer
// routed here (after a reload), or a client the identity did not know when
// it connected (it may be known now; the lookup is per connection).
func connectionBound(rs *reqState, status int, err error) bool {
	return status == http.StatusMisdirectedRequest || errors.Is(err, ErrNoRoute) || (rs != nil && !rs.info.client.Known)
}

type errorBody struct {
	Error errorDetail `json:"error"`
}

type errorDetail struct {
	Type    string `json:"type"`
	Kind    string `json:"kind,omitempty"`
	Message string `json:"message"`
}

// statusWriter records the status and bytes written, and pushes the write
// deadline forward as the response progresses, so a client that stops
// reading is cut after WriteIdleTimeout instead of pinning the request
// forever (re-armed as a slidingDeadline). Unwrap
// lets http.ResponseController (used by ReverseProxy) reach Flush.
type statusWriter struct {
	http.ResponseWriter
	deadline deadlineSetter
	wd       slidingDeadline
	status   int
	n        int64
}

// deadlineSetter is the h2 frontend's stream (h2Stream); the name is what
// http.ResponseController calls.
type deadlineSetter interface {
	SetWriteDeadline(time.Time) error
}

func (w *statusWriter) init(rw http.ResponseWriter, idle time.Duration) {
	w.ResponseWriter, w.wd = rw, slidingDeadline{idle: idle}
	if ds, ok := rw.(deadlineSetter); ok {
		w.deadline = ds
	} else {
		w.deadline = http.NewResponseController(rw)
	}
	w.extend()
}

func (w *statusWriter) extend() {
	if t, ok := w.wd.due(); ok {
		w.deadline.SetWriteDeadline(t) // ErrNotSupported is fine
	}
}

func (w *statusWriter) WriteHeader(code int) {
	w.extend()
	if w.status == 0 && (code >= 200 || code == http.StatusSwitchingProtocols) {
		w.status = code
	}
	w.ResponseWriter.WriteHeader(code)
}

func (w *statusWriter) Write(p []byte) (int, error) {
	if w.status == 0 {
		w.status = http.StatusOK
	}
	w.extend()
	n, err := w.ResponseWriter.Write(p)
	w.n += int64(n)
	return n, err
}

func (w *statusWriter) Flush() {
	if f, ok := w.ResponseWriter.(http.Flusher); ok {
		f.Flush()
	}
}

func (w *statusWriter) Unwrap() http.ResponseWriter { return w.ResponseWriter }

// countingBody counts request body bytes (read by the body sender or the
// transport's goroutine).
// On the h2 path it also keeps the stream's read deadline BodyIdleTimeout
// ahead of the last read (watchIdle), so a stalled upload fails.
type countingBody struct {
	io.ReadCloser
	n atomic.Int64

	rd      readDeadlineSetter // nil: no idle watch (the HTTP/1.1 relay has its own)
	idle    time.Duration
	armed   atomic.Int64 // UnixNano of the last re-arm
	idleOut atomic.Bool  // a read failed on the idle deadline
	mu      sync.Mutex   // orders re-arms against handlerDone
	done    bool         // the handler returned: rd must not be used
}

// readDeadlineSetter is the h2 frontend's stream: a per-stream timer that
// fails the body's reads.
type readDeadlineSetter interface {
	SetReadDeadline(time.Time) error
}

// watchIdle arms the idle deadline at every read that comes idle/64 after
// the last arming; it is first armed by the first read, so time spent
// reaching the upstream does not count.
func (b *countingBody) watchIdle(w http.ResponseWriter, idle time.Duration) {
	if rd, ok := w.(readDeadlineSetter); ok && idle > 0 {
		b.rd, b.idle = rd, idle
	}
}

func (b *countingBody) Read(p []byte) (int, error) {
	if b.rd != nil {
		b.extend()
	}
	n, err := b.ReadCloser.Read(p)
	b.n.Add(int64(n))
	if err != nil && b.rd != nil && errors.Is(err, os.ErrDeadlineExceeded) {
		b.idleOut.Store(true)
		err = fmt.Errorf("%w for %s: %w", errBodyIdle, b.idle, err)
	}
	return n, err
}

func (b *countingBody) extend() {
	now := time.Now()
	if last := b.armed.Load(); last != 0 && now.UnixNano()-last < int64(b.idle/64) {
		return
	}
	b.mu.Lock()
	defer b.mu.Unlock()
	if !b.done {
		b.armed.Store(now.UnixNano())
		b.rd.SetReadDeadline(now.Add(b.idle))
	}
}

// handlerDone stops re-arming: net/http's writer must not be used once the
// handler has returned, and the transport may still be reading the body.
func (b *countingBody) handlerDone() {
	if b.rd == nil {
		return
	}
	b.mu.Lock()
	b.done = true
	b.mu.Unlock()
}

var copyBuffers = sync.Pool{New: func() any { b := make([]byte, 32<<10); return &b }}

func slogErrorLog(l *slog.Logger) *log.Logger {
	return slog.NewLogLogger(l.Handler(), slog.LevelWarn)
}
