package tlsmitm

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/http/httptrace"
	"net/http/httputil"
	"net/textproto"
	"time"
)

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

// serveRequest proxies one request of an h2 client and writes its audit
// Event; admitted reports that it took a request slot, which the caller
// releases once the response is out.
func (s *Server) serveRequest(w http.ResponseWriter, r *http.Request, info *connInfo, admitted *bool) {
	rs := &reqState{Context: r.Context(), info: info, st: s.state.Load()}
	rs.sw.init(w, s.cfg.WriteIdleTimeout)
	if r.Body != nil && r.Body != http.NoBody {
		rs.body.ReadCloser = r.Body
		rs.body.watchIdle(w, s.cfg.BodyIdleTimeout)
		r.Body = &rs.body
	}
	start := time.Now()
	r = r.WithContext(rs)
	defer s.finishRequest(rs, r, start)
	if err := s.admitRequest(info); err != nil {
		s.errorResponse(&rs.sw, r, err)
		return
	}
	*admitted = true
	if needsH2Upstream(r) {
		s.proxy.ServeHTTP(&rs.sw, r)
	} else {
		s.relayH2(rs, r)
	}
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
