package tlsmitm

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/http/httputil"
	"net/textproto"
	"sync/atomic"
	"time"
)

func (s *Server) newHTTPServer() *http.Server {
	var p http.Protocols
	p.SetHTTP1(true)
	p.SetHTTP2(true)
	return &http.Server{
		Handler:           proxyHandler{s},
		Protocols:         &p,
		ReadHeaderTimeout: s.cfg.ReadHeaderTimeout,
		IdleTimeout:       s.cfg.IdleTimeout,
		MaxHeaderBytes:    s.cfg.MaxHeaderBytes,
		HTTP2: &http.HTTP2Config{
			MaxConcurrentStreams:          h2MaxStreams,
			MaxReadFrameSize:              h2ClientFrameSize,
			MaxReceiveBufferPerStream:     h2UploadWindow,
			MaxReceiveBufferPerConnection: h2UploadConnWindow,
		},
		BaseContext: func(net.Listener) context.Context { return s.baseCtx },
		ConnContext: connContext,
		ConnState:   s.connState,
		ErrorLog:    slogErrorLog(s.events),
	}
}

// Memory bounds of the h2 legs. What an admitted request can hold is
// bounded by these and the in-flight caps (MaxRequestsPerSource); see the
// package doc for the sums.
const (
	// h2MaxStreams is SETTINGS_MAX_CONCURRENT_STREAMS toward clients
	// (net/http's default is 250).
	h2MaxStreams = 32
	// h2ClientFrameSize is the largest frame a client may send: the h2
	// server's read buffer per connection grows to it. 16 KiB is the
	// protocol's default and minimum.
	h2ClientFrameSize = 16 << 10
	// h2UploadWindow and h2UploadConnWindow bound request body bytes a
	// client may send ahead of what the upstream leg has taken.
	h2UploadWindow     = 128 << 10
	h2UploadConnWindow = 1 << 20
	// h2DownloadWindow bounds response bytes an upstream may send ahead
	// of what the client has taken, per stream. The connection window is
	// left at the transport's 1 GiB: a smaller one shared by every
	// source's streams would let one client that never reads stall all
	// the others on the same upstream connection.
	h2DownloadWindow = 512 << 10
)

type connInfoKey struct{}

func connContext(ctx context.Context, c net.Conn) context.Context {
	if tc, ok := c.(*tls.Conn); ok {
		if rc, ok := tc.NetConn().(*replayConn); ok {
			return context.WithValue(ctx, connInfoKey{}, rc.info)
		}
	}
	return ctx
}

func infoOf(c net.Conn) *connInfo {
	if tc, ok := c.(*tls.Conn); ok {
		if rc, ok := tc.NetConn().(*replayConn); ok {
			return rc.info
		}
	}
	return nil
}

func (s *Server) connState(c net.Conn, cs http.ConnState) {
	if cs != http.StateClosed && cs != http.StateHijacked {
		return
	}
	if info := infoOf(c); info != nil {
		info.httpDone.Do(s.releaseHTTPConn)
	}
}

func (s *Server) releaseHTTPConn() {
	s.stats.activeHTTP.Add(-1)
	s.conns.Done()
}

// proxyHandler keeps ServeHTTP off Server's exported API: requests only
// arrive through the terminator's own HTTP server.
type proxyHandler struct{ s *Server }

func (h proxyHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) { h.s.serveHTTP(w, r) }

// serveHTTP proxies one intercepted request and writes its audit Event.
func (s *Server) serveHTTP(w http.ResponseWriter, r *http.Request) {
	info, _ := r.Context().Value(connInfoKey{}).(*connInfo)
	if info == nil { // not from our accept path; never proxy it
		s.errorResponse(w, r, fmt.Errorf("%w: connection did not come through the TLS terminator", ErrSNIMismatch))
		return
	}
	s.conns.Add(1) // the connection holds a slot, so this never races Wait
	defer s.conns.Done()
	slot := &streamSlot{s: s, info: info}
	slot.left.Store(2)
	s.stats.activeRequests.Add(1)
	// The stream closed: net/http's h2 writer closes the notifier's channel
	// then (the request's context ends earlier, when the handler returns).
	if cn, ok := w.(http.CloseNotifier); ok { //nolint:staticcheck // the only signal of a stream's end
		closed := cn.CloseNotify()
		go func() { <-closed; slot.release() }()
	} else {
		slot.release()
	}
	defer slot.release() // the handler returned

	rs := &reqState{Context: r.Context(), info: info, st: s.state.Load()}
	rs.sw.init(w, s.cfg.WriteIdleTimeout)
	if r.Body != nil && r.Body != http.NoBody {
		rs.body.ReadCloser = r.Body
		rs.body.watchIdle(w, s.cfg.BodyIdleTimeout)
		r.Body = &rs.body
	}
	start := time.Now()
	defer s.finishRequest(rs, r, start)
	if err := s.admitRequest(info); err != nil {
		s.errorResponse(&rs.sw, r.WithContext(rs), err)
		return
	}
	slot.admitted = true
	if r = r.WithContext(rs); needsH2Upstream(r) {
		s.proxy.ServeHTTP(&rs.sw, r)
	} else {
		s.relayH2(rs, r)
	}
}

// streamSlot holds an h2 request's admission and its count in the stats
// until both the handler has returned and the stream is closed. net/http's
// server writes what is left of a response after the handler returns (and
// ends the stream then); a client that never opens its flow-control window
// would otherwise hold that stream, its buffer and goroutine outside every
// request limit. The stream closes once its last frame is out, or is reset
// at the write idle deadline, or with its connection.
type streamSlot struct {
	s        *Server
	info     *connInfo
	left     atomic.Int32 // of the two events
	admitted bool         // set by the handler before its release
}

func (sl *streamSlot) release() {
	if sl.left.Add(-1) != 0 {
		return
	}
	if sl.admitted {
		sl.s.releaseRequest(sl.info)
	}
	sl.s.stats.activeRequests.Add(-1)
}

// finishRequest recovers a handler panic (the request fails closed) and
// writes the one audit Event for the request.
func (s *Server) finishRequest(rs *reqState, r *http.Request, start time.Time) {
	rs.body.handlerDone()
	v := recover()
	if v != nil {
		if v == http.ErrAbortHandler {
			if rs.err == nil {
				rs.err = errors.New("response aborted mid-stream")
			}
		} else {
			s.recordPanic(v, "panic serving intercepted request", "sni", rs.info.sni)
			rs.err = fmt.Errorf("internal error: %v", v)
		}
	}
	s.recordRequest(rs, r, start)
	if v != nil {
		panic(http.ErrAbortHandler) // close the connection; net/http does not log this
	}
}

func (s *Server) newReverseProxy() *httputil.ReverseProxy {
	return &httputil.ReverseProxy{
		Rewrite:   s.rewrite,
		Transport: guardTransport{},
		// 0: ReverseProxy flushes after every write for text/event-stream
		// and unknown-length (chunked/h2-streamed) responses, the streaming
		// cases, and lets fixed-length bodies go through the buffered writer.
		// TestIntercept_SSEEventsStreamUnbuffered holds this to account.
		FlushInterval:  0,
		BufferPool:     bufferPool{},
		ErrorHandler:   s.errorResponse,
		ModifyResponse: modifyResponse,
		ErrorLog:       slogErrorLog(s.events),
	}
}

// rewrite addresses the outgoing request to the SNI host and lets the
// Injector apply its rule. Errors are parked in the request state; the
// transport guard returns them so ErrorHandler answers.
func (s *Server) rewrite(pr *httputil.ProxyRequest) {
	s.prepareUpstream(reqStateOf(pr.In), pr.In.Host, pr.Out)
}

// modifyResponse redacts the response headers, and the trailers once the
// body has been read (ReverseProxy copies them after that).
func modifyResponse(resp *http.Response) error {
	rs := reqStateOf(resp.Request)
	if rs != nil {
		rs.st.injector.RedactResponse(rs.info.sni, resp.Header)
		if len(resp.Trailer) > 0 {
			resp.Body = &trailerRedactingBody{ReadCloser: resp.Body, resp: resp, rs: rs}
		}
	}
	return nil
}

// trailerRedactingBody redacts resp.Trailer when the body reaches EOF.
type trailerRedactingBody struct {
	io.ReadCloser
	resp *http.Response
	rs   *reqState
}

func (b *trailerRedactingBody) Read(p []byte) (int, error) {
	n, err := b.ReadCloser.Read(p)
	if err == io.EOF {
		b.rs.st.injector.RedactResponse(b.rs.info.sni, b.resp.Trailer)
	}
	return n, err
}

// guardTransport returns a parked Rewrite error instead of dialling, and
// otherwise sends the request over the pooled h2 transport (h2 upstream,
// or HTTP/1.1 when the upstream does not offer h2). Only gRPC requests of h2
// clients come this way (needsH2Upstream); the others are relayed by
// h2relay.go, and HTTP/1.x clients by h1relay.go.
type guardTransport struct{}

func (guardTransport) RoundTrip(req *http.Request) (*http.Response, error) {
	rs := reqStateOf(req)
	if rs == nil {
		return nil, errors.New("internal error: request without proxy state")
	}
	if rs.err != nil {
		if req.Body != nil {
			req.Body.Close()
		}
		return nil, rs.err
	}
	// Redact interim (1xx) headers before ReverseProxy's own hook copies
	// them to the client: a trace added later runs first.
	trace := &httptrace.ClientTrace{Got1xxResponse: func(_ int, h textproto.MIMEHeader) error {
		rs.st.injector.RedactResponse(rs.info.sni, http.Header(h))
		return nil
	}}
	return rs.st.h2.RoundTrip(req.WithContext(httptrace.WithClientTrace(req.Context(), trace)))
}

// newH2Transport is the upstream transport of h2 clients' gRPC requests:
// h2 when the upstream offers it, HTTP/1.1 otherwise; pooled.
func (s *Server) newH2Transport(st *state) *http.Transport {
	return &http.Transport{
		DialTLSContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			return s.dialUpstreamTLS(ctx, st, addr, []string{"h2", "http/1.1"})
		},
		ForceAttemptHTTP2:     true,
		MaxIdleConns:          256,
		MaxIdleConnsPerHost:   64,
		IdleConnTimeout:       90 * time.Second,
		ResponseHeaderTimeout: s.cfg.ResponseHeaderTimeout,
		ExpectContinueTimeout: time.Second,
		DisableCompression:    true, // pass Accept-Encoding and bodies through untouched
		ReadBufferSize:        32 << 10,
		WriteBufferSize:       32 << 10,
		// Bigger frames and windows than the defaults of 16 KiB and 64 KiB:
		// with those a large download through two h2 hops stalls on window
		// updates. The window stays small enough that a client that never
		// reads holds little (h2DownloadWindow).
		HTTP2: &http.HTTP2Config{
			MaxReadFrameSize:          1 << 20,
			MaxReceiveBufferPerStream: h2DownloadWindow,
		},
	}
}

// bufferPool recycles ReverseProxy's 32 KiB copy buffers.
type bufferPool struct{}

func (bufferPool) Get() []byte  { return *copyBuffers.Get().(*[]byte) }
func (bufferPool) Put(b []byte) { copyBuffers.Put(&b) }
