package tlsmitm

import (
	"errors"
	"net/http"
	"net/url"
	"strconv"
	"strings"

	"golang.org/x/net/http2"
)

// A request's life on an h2 connection: built from its HEADERS, served on
// its own goroutine, its stream ended.

// newRequest builds the request of a HEADERS frame, or the stream error
// that refuses it (RFC 9113 section 8.1.1: malformed).
func (c *h2Conn) newRequest(st *h2Stream, f *http2.MetaHeadersFrame) (*http.Request, http2.ErrCode) {
	var method, scheme, authority, path string
	for _, hf := range f.PseudoFields() {
		switch hf.Name {
		case ":method":
			method = hf.Value
		case ":scheme":
			scheme = hf.Value
		case ":authority":
			authority = hf.Value
		case ":path":
			path = hf.Value
		default: // :protocol: extended CONNECT is not offered
			return nil, http2.ErrCodeProtocol
		}
	}
	isConnect := method == http.MethodConnect
	if isConnect && (path != "" || scheme != "" || authority == "") ||
		!isConnect && (method == "" || path == "" || scheme != "https" && scheme != "http") {
		return nil, http2.ErrCodeProtocol
	}
	regular := f.RegularFields()
	header := make(http.Header, len(regular))
	var cookies []string
	for _, hf := range regular {
		switch {
		case h2ConnectionHeader(hf.Name), hf.Name == "te" && hf.Value != "trailers":
			return nil, http2.ErrCodeProtocol
		case hf.Name == "cookie":
			cookies = append(cookies, hf.Value)
			continue
		}
		k := http.CanonicalHeaderKey(hf.Name)
		header[k] = append(header[k], hf.Value)
	}
	if len(cookies) > 0 {
		header["Cookie"] = []string{strings.Join(cookies, "; ")}
	}
	if authority == "" {
		authority = header.Get("Host")
	}
	var u *url.URL
	switch {
	case isConnect:
		u = &url.URL{Host: authority}
	case method == http.MethodOptions && path == "*":
		u = &url.URL{Path: "*"}
	default:
		var err error
		if u, err = url.ParseRequestURI(path); err != nil {
			return nil, http2.ErrCodeProtocol
		}
	}
	declared := int64(-1)
	if vv := header["Content-Length"]; len(vv) > 0 {
		n, err := strconv.ParseUint(vv[0], 10, 63)
		for _, v := range vv[1:] {
			if v != vv[0] {
				err = errors.New("conflicting Content-Length")
			}
		}
		if err != nil {
			return nil, http2.ErrCodeProtocol
		}
		declared = int64(n)
	}
	r := &http.Request{Method: method, URL: u, Proto: "HTTP/2.0", ProtoMajor: 2, Header: header,
		Host: authority, RequestURI: path, RemoteAddr: c.remote, Body: http.NoBody}
	if f.StreamEnded() {
		if declared > 0 {
			return nil, http2.ErrCodeProtocol
		}
		st.peerDone, st.eof = true, true
	} else {
		r.Body, r.ContentLength, st.declared = st, declared, declared
		st.needsContinue = strings.EqualFold(header.Get("Expect"), "100-continue")
	}
	return r.WithContext(st.ctx), 0
}

// runStream serves one request on a worker of its own (workers.go) and
// ends its stream.
// The request's slot is held until the response's last frame is out (or
// the write deadline reset the stream): a client that never opens its
// window holds its own slot, not a free one.
func (c *h2Conn) runStream(st *h2Stream, r *http.Request) {
	defer c.wg.Done()
	defer c.endStream(st)
	s := c.s
	s.stats.activeRequests.Add(1)
	defer s.stats.activeRequests.Add(-1)
	st.isHead = r.Method == http.MethodHead
	var admitted bool
	if c.handle(st, r, &admitted) {
		st.finish()
	} else { // a cut response: reset, so the client cannot take it for whole
		st.releasePending()
		c.w.resetStream(st, http2.ErrCodeInternal, true)
		c.w.Flush()
	}
	if admitted {
		s.releaseRequest(c.info)
	}
	if st.closeConn {
		c.goAway(http2.ErrCodeNo)
	}
}

// handle runs the request; false: it was aborted (a panic, or
// http.ErrAbortHandler for a response cut mid-body).
func (c *h2Conn) handle(st *h2Stream, r *http.Request, admitted *bool) (ok bool) {
	defer func() {
		if v := recover(); v != nil && v != http.ErrAbortHandler {
			c.s.recordPanic(v, "panic serving an h2 request", "sni", c.info.sni)
		}
	}()
	c.s.serveRequest(st, r, c.info, admitted)
	return true
}

// endStream forgets a stream whose request has ended. A client still
// sending its body is told to stop (RST_STREAM NO_ERROR after a complete
// response, RFC 9113 section 8.1).
func (c *h2Conn) endStream(st *h2Stream) {
	st.cancel()
	st.endBody(errH2StreamClosed)
	st.mu.Lock()
	stillSending := !st.peerDone
	st.peerDone = true
	st.mu.Unlock()
	if stillSending {
		c.w.resetStream(st, http2.ErrCodeNo, true)
		c.w.Flush()
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.streams, st.id)
	if len(c.streams) == 0 {
		c.armIdleLocked()
	}
}
