package tlsmitm

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/http"
	"os"
	"strings"
	"sync"
	"time"

	"golang.org/x/net/http/httpguts"
	"golang.org/x/net/http2"
)

// h2Stream is one request of an h2 client connection: the request body
// the read loop fills (within the window this side granted), and the
// http.ResponseWriter the request's goroutine answers through.
type h2Stream struct {
	c      *h2Conn
	id     uint32
	ctx    context.Context
	cancel context.CancelFunc

	// The request body, under mu; the read loop fills it, the request's
	// body reader drains it.
	mu            sync.Mutex
	cond          sync.Cond // on mu
	buf           bytes.Buffer
	eof           bool  // END_STREAM received
	rerr          error // the stream or connection ended, or the handler closed the body
	recvWindow    int32 // what the client may still send
	unacked       int32 // read, not yet granted back
	declared      int64 // the request's Content-Length, or -1
	received      int64
	peerDone      bool // the client's side is closed (END_STREAM or RST_STREAM)
	needsContinue bool // Expect: 100-continue, answered at the first read
	rtimer        *time.Timer
	rtimedOut     bool

	// The response, written by the request's goroutine; reset and
	// sendWindow are under c.w.mu.
	header     http.Header
	status     int      // the final status once sent
	trailers   []string // declared in the Trailer header
	pending    []byte   // body bytes not yet framed (up to h2PendingMax)
	isHead     bool
	closeConn  bool // the response asked to end the connection (GOAWAY after it)
	wdeadline  time.Time
	reset      bool // under c.w.mu
	finalSent  bool // under c.w.mu: the final HEADERS are written (no 100 after them)
	sendWindow int64
}

// h2PendingMax is the response body a stream holds before framing it: a
// small body goes out with the HEADERS and END_STREAM in one write.
const h2PendingMax = 4 << 10

var h2PendingBufs = sync.Pool{New: func() any { b := make([]byte, 0, h2PendingMax); return &b }}

var errH2BodyClosed = errors.New("h2 request body closed")

// Read implements the request body.
func (st *h2Stream) Read(p []byte) (int, error) {
	st.mu.Lock()
	if st.needsContinue {
		st.needsContinue = false
		st.mu.Unlock()
		st.c.w.mu.Lock()
		if !st.finalSent {
			st.c.w.writeHeadersLocked(st, http.StatusContinue, nil, false)
			st.c.w.flushLocked()
		}
		st.c.w.mu.Unlock()
		st.mu.Lock()
	}
	for st.buf.Len() == 0 && !st.eof && st.rerr == nil && !st.rtimedOut {
		st.cond.Wait()
	}
	if st.buf.Len() > 0 {
		n, _ := st.buf.Read(p)
		st.unacked += int32(n)
		var grant int32
		if !st.eof && st.unacked >= h2UploadWindow/4 {
			grant, st.unacked = st.unacked, 0
			st.recvWindow += grant
		}
		st.mu.Unlock()
		st.c.consumed(int32(n), st.id, grant)
		return n, nil
	}
	defer st.mu.Unlock()
	switch {
	case st.rerr != nil:
		return 0, st.rerr
	case st.rtimedOut:
		return 0, os.ErrDeadlineExceeded
	}
	return 0, io.EOF
}

// Close implements the request body: later DATA is dropped (its window is
// given back at once).
func (st *h2Stream) Close() error {
	st.endBody(errH2BodyClosed)
	return nil
}

// endBody fails the body's reads with err (unless it already ended) and
// gives the connection window of unread bytes back.
func (st *h2Stream) endBody(err error) {
	st.mu.Lock()
	if st.rerr == nil {
		st.rerr = err
	}
	unread := int32(st.buf.Len())
	st.buf = bytes.Buffer{}
	if st.rtimer != nil {
		st.rtimer.Stop()
	}
	st.cond.Broadcast()
	st.mu.Unlock()
	if unread > 0 {
		st.c.consumed(unread, st.id, 0)
	}
}

// SetReadDeadline bounds the body's reads (countingBody's idle watch).
func (st *h2Stream) SetReadDeadline(t time.Time) error {
	st.mu.Lock()
	defer st.mu.Unlock()
	st.rtimedOut = false
	if t.IsZero() {
		if st.rtimer != nil {
			st.rtimer.Stop()
		}
		return nil
	}
	d := time.Until(t)
	if st.rtimer == nil {
		st.rtimer = time.AfterFunc(d, st.readTimedOut)
	} else {
		st.rtimer.Reset(d)
	}
	return nil
}

func (st *h2Stream) readTimedOut() {
	st.mu.Lock()
	st.rtimedOut = true
	st.cond.Broadcast()
	st.mu.Unlock()
}

// SetWriteDeadline bounds the wait for the client's flow-control window
// (statusWriter's sliding write deadline).
func (st *h2Stream) SetWriteDeadline(t time.Time) error {
	st.wdeadline = t
	return nil
}

// Header implements http.ResponseWriter.
func (st *h2Stream) Header() http.Header {
	if st.header == nil {
		st.header = make(http.Header)
	}
	return st.header
}

// WriteHeader implements http.ResponseWriter: an interim (1xx) response
// goes out at once; the final HEADERS wait in the writer's buffer for the
// body or the end.
func (st *h2Stream) WriteHeader(code int) {
	if st.status != 0 || code < 100 || code > 999 {
		return
	}
	w := &st.c.w
	if code < 200 && code != http.StatusSwitchingProtocols {
		w.mu.Lock()
		w.writeHeadersLocked(st, code, st.header, false)
		w.flushLocked()
		w.mu.Unlock()
		return
	}
	st.status = code
	h := st.Header()
	if httpguts.HeaderValuesContainsToken(h["Connection"], "close") {
		st.closeConn = true
	}
	for _, v := range h["Trailer"] {
		for k := range strings.SplitSeq(v, ",") {
			if k = http.CanonicalHeaderKey(strings.TrimSpace(k)); k != "" {
				st.trailers = append(st.trailers, k)
			}
		}
	}
	w.mu.Lock()
	st.finalSent = true
	w.writeHeadersLocked(st, code, h, false)
	w.mu.Unlock()
}

// Write implements http.ResponseWriter.
func (st *h2Stream) Write(p []byte) (int, error) {
	if st.status == 0 {
		st.WriteHeader(http.StatusOK)
	}
	if st.isHead || !bodyAllowedForStatus(st.status) {
		return len(p), nil // as net/http: a HEAD's body is dropped
	}
	if len(st.pending)+len(p) <= h2PendingMax {
		if st.pending == nil {
			st.pending = (*h2PendingBufs.Get().(*[]byte))[:0]
		}
		st.pending = append(st.pending, p...)
		return len(p), nil
	}
	w := &st.c.w
	w.mu.Lock()
	defer w.mu.Unlock()
	if err := w.writeDataLocked(st, st.pending, false); err != nil {
		return 0, err
	}
	st.pending = st.pending[:0]
	if err := w.writeDataLocked(st, p, false); err != nil {
		return 0, err
	}
	return len(p), nil
}

func bodyAllowedForStatus(status int) bool {
	return status >= 200 && status != http.StatusNoContent && status != http.StatusNotModified
}

// Flush implements http.Flusher.
func (st *h2Stream) Flush() { st.FlushError() }

// FlushError sends the head and what the body has so far.
func (st *h2Stream) FlushError() error {
	if st.status == 0 {
		st.WriteHeader(http.StatusOK)
	}
	w := &st.c.w
	w.mu.Lock()
	defer w.mu.Unlock()
	if err := w.writeDataLocked(st, st.pending, false); err != nil {
		return err
	}
	st.pending = st.pending[:0]
	return w.flushLocked()
}

// finish ends the response: the body's last bytes with END_STREAM, or the
// trailers. It blocks while the client's window is closed, up to the write
// deadline: the request keeps its slot until its response is out.
func (st *h2Stream) finish() error {
	if st.status == 0 {
		st.WriteHeader(http.StatusOK)
	}
	defer st.releasePending()
	// Trailers: the keys the Trailer header declared, and those set with
	// http.TrailerPrefix after the head.
	var trailers http.Header
	add := func(k string, vv []string) {
		if len(vv) > 0 {
			if trailers == nil {
				trailers = make(http.Header)
			}
			trailers[k] = vv
		}
	}
	for k, vv := range st.header {
		if tk, ok := strings.CutPrefix(k, http.TrailerPrefix); ok {
			add(http.CanonicalHeaderKey(tk), vv)
		}
	}
	for _, k := range st.trailers {
		add(k, st.header[k])
	}
	w := &st.c.w
	w.mu.Lock()
	defer w.mu.Unlock()
	if err := w.writeDataLocked(st, st.pending, len(trailers) == 0); err != nil {
		return err
	}
	if len(trailers) > 0 {
		if err := w.writeHeadersLocked(st, 0, trailers, true); err != nil {
			return err
		}
	}
	return w.flushLocked()
}

func (st *h2Stream) releasePending() {
	if st.pending != nil {
		b := st.pending[:0]
		st.pending = nil
		h2PendingBufs.Put(&b)
	}
}

// onData takes a DATA frame's payload (the read loop). It returns the
// stream error to reset the stream with, if any; the connection window
// the frame used is the caller's.
func (st *h2Stream) onData(f *http2.DataFrame) (http2.ErrCode, bool) {
	n := int32(f.Length)
	data := f.Data()
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.peerDone {
		return http2.ErrCodeStreamClosed, false
	}
	if n > st.recvWindow {
		return http2.ErrCodeFlowControl, false
	}
	st.recvWindow -= n
	st.received += int64(len(data))
	if st.declared >= 0 && st.received > st.declared {
		return http2.ErrCodeProtocol, false
	}
	if f.StreamEnded() {
		st.peerDone = true
		if st.declared >= 0 && st.received != st.declared {
			return http2.ErrCodeProtocol, false
		}
	}
	if st.rerr == nil {
		st.buf.Write(data)
		if f.StreamEnded() {
			st.eof = true
		}
		st.cond.Broadcast()
		// Padding is flow-controlled but never read: grant it back now.
		if pad := n - int32(len(data)); pad > 0 {
			st.unacked += pad
		}
		return 0, true
	}
	return 0, false // the handler is done with the body: the caller grants it back
}

// onTrailers ends the request body (request trailers are not forwarded:
// they would bypass the Injector's header rules).
func (st *h2Stream) onTrailers(f *http2.MetaHeadersFrame) http2.ErrCode {
	if !f.StreamEnded() {
		return http2.ErrCodeProtocol
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.peerDone {
		return http2.ErrCodeStreamClosed
	}
	st.peerDone = true
	if st.declared >= 0 && st.received != st.declared {
		return http2.ErrCodeProtocol
	}
	st.eof = true
	st.cond.Broadcast()
	return 0
}

// abort ends the stream from outside its goroutine: the client reset it,
// or the connection is closing. Its context ends (which cuts the
// upstream), its body reads and its writes fail.
func (st *h2Stream) abort(err error) {
	st.mu.Lock()
	st.peerDone = true
	st.mu.Unlock()
	st.cancel()
	st.endBody(err)
	st.c.w.resetStream(st, 0, false)
}
