package tlsmitm

import (
	"bufio"
	"fmt"
	"io"
	"net/http"
	"net/http/httputil"
	"strconv"
	"strings"

	"golang.org/x/net/http/httpguts"
)

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
	if resp.StatusCode >= 200 && !x.keepAlive() {
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
//
// An event stream is never batched: its events are small and come one at
// a time, so a batch would only add work between an event's arrival and
// its write.
func (x *h1Exchange) copyBody(resp *http.Response, chunked, streaming bool) (int64, error) {
	if rc, up := x.hc.socket, x.uc.bc; up != nil && resp.Body != http.NoBody && mayBeLarge(resp.ContentLength) && !isEventStream(resp.Header) {
		// The body's records leave together, and before each wait for
		// the upstream (batchio.go); a failure's error is the write's.
		rc.corkWrites()
		up.onBlock = rc
		defer func() {
			up.onBlock = nil
			rc.uncork()
		}()
	}
	var w io.Writer = x.bw
	var cw io.WriteCloser
	if chunked {
		cw = httputil.NewChunkedWriter(x.bw)
		w = cw
	}
	total, rerr, werr := pumpBody(resp.Body, w, x.bw, pumpHooks{
		beforeWrite: x.extend,
		flushNow:    func() bool { return streaming || x.uc.br.Buffered() == 0 },
	})
	if werr != nil {
		return total, fmt.Errorf("%w: writing response: %w", errClientClosed, werr)
	}
	if rerr != nil {
		return total, fmt.Errorf("reading response body from upstream: %w", rerr)
	}
	if cw != nil {
		cw.Close()
		x.st.injector.RedactResponse(x.rs.info.sni, resp.Trailer)
		writeHeaderLines(x.bw, resp.Trailer)
		x.bw.WriteString("\r\n")
	}
	return total, x.flushClient()
}

// pumpHooks are what the two directions of the relay do differently while
// a body is copied. Nil hooks do nothing; a nil flushNow never flushes
// before the end.
type pumpHooks struct {
	beforeRead  func()      // the request body: push the client read deadline
	beforeWrite func()      // the response body: push the client write deadline
	flushNow    func() bool // after a write: nothing more is waiting to be read
}

// flusher is what pumpBody flushes: a *bufio.Writer on the HTTP/1.1 legs,
// the h2 stream's writer on the h2 client leg.
type flusher interface{ Flush() error }

// pumpBody copies src into w (bw, or a chunked writer over it) until EOF,
// flushing bw whenever h.flushNow says so, and reports the bytes copied and
// which side failed. It neither ends a chunked body nor flushes at the end:
// the caller writes what follows (trailers) and flushes.
func pumpBody(src io.Reader, w io.Writer, bw flusher, h pumpHooks) (total int64, readErr, writeErr error) {
	bufp := copyBuffers.Get().(*[]byte)
	defer copyBuffers.Put(bufp)
	buf := *bufp
	for {
		if h.beforeRead != nil {
			h.beforeRead()
		}
		n, rerr := src.Read(buf)
		if n > 0 {
			if h.beforeWrite != nil {
				h.beforeWrite()
			}
			if _, err := w.Write(buf[:n]); err != nil {
				return total, nil, err
			}
			total += int64(n)
		}
		if rerr == io.EOF {
			return total, nil, nil
		}
		if rerr != nil {
			return total, rerr, nil
		}
		if h.flushNow != nil && h.flushNow() {
			if h.beforeWrite != nil {
				h.beforeWrite()
			}
			if err := bw.Flush(); err != nil {
				return total, nil, err
			}
		}
	}
}

// extend pushes the client write deadline forward as the response
// progresses (slidingDeadline).
func (x *h1Exchange) extend() {
	if t, ok := x.wd.due(); ok {
		x.tc.SetWriteDeadline(t)
	}
}

func (x *h1Exchange) flushClient() error {
	x.extend()
	err := x.bw.Flush()
	if err == nil {
		err = x.hc.socket.Flush() // what a cork holds (copyBody)
	}
	if err != nil {
		return fmt.Errorf("%w: writing response: %w", errClientClosed, err)
	}
	return nil
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

// prepareRelay turns a client's request into the upstream's, in place, for
// both relays (what ReverseProxy with Rewrite does): hop-by-hop and
// X-Forwarded-*/Forwarded headers removed, then prepareUpstream (checks,
// routing, injection) and the injected headers re-checked; a refusal is
// left in rs.err. It reports whether the client asked for trailers
// ("TE: trailers", passed on).
func (s *Server) prepareRelay(rs *reqState, r *http.Request) (teTrailers bool) {
	teTrailers = httpguts.HeaderValuesContainsToken(r.Header["Te"], "trailers")
	removeHopByHop(r.Header)
	for _, h := range []string{"Forwarded", "X-Forwarded-For", "X-Forwarded-Host", "X-Forwarded-Proto"} {
		delete(r.Header, h)
	}
	s.prepareUpstream(rs, r.Host, r)
	if rs.err == nil {
		rs.err = checkInjectedHeaders(r.Header)
	}
	return teTrailers
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

// checkRequestLine refuses what would not survive being written as an
// HTTP/1.1 request line: a method that is not a token ("TRACE " would pass
// the method checks and reach an upstream that splits on whitespace as
// TRACE), and a target that is not origin-form (or "*" for OPTIONS) with
// only visible ASCII: an opaque target ("a:https://evil.example/x") is
// written as absolute-form, which makes the upstream serve another host
// with the injected credential (an absolute-form target with a host is
// written as its path; its host was the request's Host and was checked). h2's :method and :path and HTTP/1.1's
// request line are both parsed more loosely than that.
func checkRequestLine(r *http.Request) error {
	if r.Method == "" || !httpguts.ValidHeaderFieldName(r.Method) {
		return fmt.Errorf("%w: method %q is not a token", errBadRequest, r.Method)
	}
	if r.Method == http.MethodConnect {
		return nil // refused as a method (405) next
	}
	if r.URL.Opaque != "" {
		return fmt.Errorf("%w: the request target must be a path", errBadRequest)
	}
	target := r.URL.RequestURI()
	if target != "*" && !strings.HasPrefix(target, "/") || target == "*" && r.Method != http.MethodOptions {
		return fmt.Errorf("%w: the request target must be a path", errBadRequest)
	}
	for i := 0; i < len(target); i++ {
		if c := target[i]; c <= ' ' || c == 0x7f {
			return fmt.Errorf("%w: control character or space in the request target", errBadRequest)
		}
	}
	return nil
}
