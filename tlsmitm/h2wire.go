package tlsmitm

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/net/http/httpguts"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// h2Writer puts frames on an h2 client connection. Every stream writes
// from its own goroutine, and the read loop writes its acknowledgements,
// under one mutex that also orders the HPACK encoder's state with the
// frames on the wire and guards the send windows. Frames collect in a
// buffer and go out in one write(2) at a flush: a small response is its
// HEADERS and DATA (with END_STREAM) in one TLS record.
type h2Writer struct {
	mu   sync.Mutex
	cond sync.Cond // on mu: a send window opened, or the connection failed
	raw  net.Conn  // under tls, closed when a write fails
	out  deadlineWriter
	bw   *bufio.Writer // pooled, from the first frame to the flush
	held *atomic.Int64 // the server's count of buffers out of their pools
	fr   *http2.Framer // its write side; the read loop owns the read side
	henc *hpack.Encoder
	hbuf bytes.Buffer

	maxFrame   int   // the client's SETTINGS_MAX_FRAME_SIZE
	connWindow int64 // what the client's connection window still takes
	initWindow int64 // the client's SETTINGS_INITIAL_WINDOW_SIZE
	unflushed  bool  // frames wait in bw
	err        error // sticky: nothing more can be written
}

// deadlineWriter bounds each write(2) on the client connection by the
// write idle timeout: a client that stops reading its socket fails the
// connection after it.
type deadlineWriter struct {
	c    net.Conn
	idle time.Duration
}

func (d *deadlineWriter) Write(p []byte) (int, error) {
	if d.idle > 0 {
		d.c.SetWriteDeadline(time.Now().Add(d.idle))
	}
	return d.c.Write(p)
}

func (w *h2Writer) init(tc *tls.Conn, idle time.Duration, fr *http2.Framer, held *atomic.Int64) {
	w.cond.L = &w.mu
	w.held = held
	w.raw, w.fr = tc.NetConn(), fr
	w.out = deadlineWriter{c: tc, idle: idle}
	w.henc = hpack.NewEncoder(&w.hbuf)
	w.maxFrame = h2MaxDataFrame // within the protocol's initial 16 KiB
	w.connWindow, w.initWindow = 65535, 65535
}

var (
	errH2StreamClosed = errors.New("h2 stream closed")
	errH2ConnClosed   = errors.New("h2 connection closed")
)

// failLocked makes every later write fail and closes the socket, which
// ends the read loop and so the connection's streams.
func (w *h2Writer) failLocked(err error) {
	if w.err == nil {
		w.err = err
		w.raw.Close()
	}
	w.releaseLocked()
	w.cond.Broadcast()
}

func (w *h2Writer) fail(err error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.failLocked(err)
}

// flushLocked writes out the frames waiting in the buffer.
func (w *h2Writer) flushLocked() error {
	if w.err != nil {
		return w.err
	}
	if !w.unflushed {
		return nil
	}
	w.unflushed = false
	err := w.bw.Flush()
	w.releaseLocked()
	if err != nil {
		w.failLocked(fmt.Errorf("%w: writing response: %w", errClientClosed, err))
		return w.err
	}
	return nil
}

// Flush sends the frames waiting in the buffer. replayConn.onRead calls it
// before each read(2) of the read loop (which may wait for the client), so
// frames that arrived together are answered together.
func (w *h2Writer) Flush() error {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.flushLocked()
}

// frameLocked runs one framer write and records the outcome.
func (w *h2Writer) frameLocked(err error) error {
	w.unflushed = true
	if err != nil {
		w.failLocked(fmt.Errorf("%w: writing response: %w", errClientClosed, err))
		return w.err
	}
	return nil
}

// control writes a frame of the read loop's (an acknowledgement, a window
// update, a reset), flushed before the loop next blocks.
func (w *h2Writer) control(write func(fr *http2.Framer) error) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.err != nil {
		return w.err
	}
	return w.frameLocked(write(w.fr))
}

// flushed writes a frame and flushes it (window updates from a stream's
// body reader: the read loop may be blocked on the client that waits for
// them).
func (w *h2Writer) flushed(write func(fr *http2.Framer) error) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.err != nil {
		return w.err
	}
	if err := w.frameLocked(write(w.fr)); err != nil {
		return err
	}
	return w.flushLocked()
}

// writeHeaders encodes a header block (":status" first) and writes it as
// HEADERS and CONTINUATION frames. Connection-specific fields and fields
// that are not valid on the wire are dropped (as net/http's server did).
func (w *h2Writer) writeHeadersLocked(st *h2Stream, status int, h http.Header, end bool) error {
	if w.err != nil {
		return w.err
	}
	if st.reset {
		return errH2StreamClosed
	}
	w.hbuf.Reset()
	if status != 0 {
		w.henc.WriteField(hpack.HeaderField{Name: ":status", Value: strconv.Itoa(status)})
	}
	for k, vv := range h {
		if strings.HasPrefix(k, http.TrailerPrefix) {
			continue
		}
		lk := lowerHeader(k)
		if !httpguts.ValidHeaderFieldName(lk) || h2ConnectionHeader(lk) {
			continue
		}
		for _, v := range vv {
			if httpguts.ValidHeaderFieldValue(v) {
				w.henc.WriteField(hpack.HeaderField{Name: lk, Value: v})
			}
		}
	}
	block := w.hbuf.Bytes()
	first := true
	for first || len(block) > 0 {
		n := min(len(block), w.maxFrame)
		frag := block[:n]
		block = block[n:]
		var err error
		if first {
			err = w.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: st.id, BlockFragment: frag, EndStream: end, EndHeaders: len(block) == 0})
			first = false
		} else {
			err = w.fr.WriteContinuation(st.id, len(block) == 0, frag)
		}
		if err := w.frameLocked(err); err != nil {
			return err
		}
	}
	return nil
}

// h2ConnectionHeader reports the fields HTTP/2 forbids (RFC 9113 section
// 8.2.2).
func h2ConnectionHeader(lk string) bool {
	switch lk {
	case "connection", "keep-alive", "proxy-connection", "transfer-encoding", "upgrade":
		return true
	}
	return false
}

// lowerHeader is the wire form of a canonical header key; the common ones
// without an allocation.
func lowerHeader(k string) string {
	if lk, ok := commonLowerHeader[k]; ok {
		return lk
	}
	return strings.ToLower(k)
}

var commonLowerHeader = func() map[string]string {
	m := make(map[string]string)
	for _, k := range []string{"Accept-Ranges", "Age", "Cache-Control", "Content-Encoding", "Content-Language",
		"Content-Length", "Content-Type", "Date", "Etag", "Expires", "Last-Modified", "Link", "Location",
		"Retry-After", "Server", "Set-Cookie", "Strict-Transport-Security", "Trailer", "Vary", "Via",
		"Www-Authenticate", "X-Clauderon-Error", "X-Content-Type-Options", "X-Request-Id", "Request-Id",
		"Anthropic-Ratelimit-Requests-Limit", "Anthropic-Ratelimit-Requests-Remaining", "Cf-Ray"} {
		m[k] = strings.ToLower(k)
	}
	return m
}()

// writeDataLocked sends p as DATA frames within the client's windows,
// waiting for them to open until st's write deadline; end sets END_STREAM
// on the last frame (an empty one when p is empty).
func (w *h2Writer) writeDataLocked(st *h2Stream, p []byte, end bool) error {
	for {
		if w.err != nil {
			return w.err
		}
		if st.reset {
			return errH2StreamClosed
		}
		if len(p) == 0 {
			if !end {
				return nil
			}
			return w.dataFrameLocked(st.id, true, nil)
		}
		n := int64(min(len(p), w.maxFrame))
		n = min(n, w.connWindow, st.sendWindow)
		if n <= 0 {
			if err := w.waitWindowLocked(st); err != nil {
				return err
			}
			continue
		}
		last := int(n) == len(p)
		if err := w.dataFrameLocked(st.id, end && last, p[:n]); err != nil {
			return err
		}
		w.connWindow -= n
		st.sendWindow -= n
		if last {
			return nil
		}
		p = p[n:]
	}
}

// dataFrameLocked writes a DATA frame straight into the buffer. The
// Framer would copy the payload into a buffer of its own first, and keep
// that buffer as large as the largest frame for the connection's life.
func (w *h2Writer) dataFrameLocked(id uint32, end bool, p []byte) error {
	var h [9]byte
	h[0], h[1], h[2] = byte(len(p)>>16), byte(len(p)>>8), byte(len(p))
	h[3] = byte(http2.FrameData)
	if end {
		h[4] = byte(http2.FlagDataEndStream)
	}
	binary.BigEndian.PutUint32(h[5:], id)
	bw := w.buffer()
	bw.Write(h[:])
	_, err := bw.Write(p) // a bufio.Writer's error sticks: the first write's shows here
	return w.frameLocked(err)
}

// waitWindowLocked flushes (the client may be waiting for those frames
// before it opens its window) and waits for a window update, a reset or the
// stream's write deadline, which resets the stream.
func (w *h2Writer) waitWindowLocked(st *h2Stream) error {
	if err := w.flushLocked(); err != nil {
		return err
	}
	if !st.wdeadline.IsZero() {
		d := time.Until(st.wdeadline)
		if d <= 0 {
			st.reset = true
			w.frameLocked(w.fr.WriteRSTStream(st.id, http2.ErrCodeCancel))
			w.flushLocked()
			return fmt.Errorf("%w: the client opened no flow-control window within the write idle timeout: %w", errClientClosed, os.ErrDeadlineExceeded)
		}
		t := time.AfterFunc(d, w.wake)
		defer t.Stop()
	}
	w.cond.Wait()
	return nil
}

func (w *h2Writer) wake() {
	w.mu.Lock()
	w.cond.Broadcast()
	w.mu.Unlock()
}

// addConnWindow applies a WINDOW_UPDATE for the connection.
func (w *h2Writer) addConnWindow(n uint32) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	if w.connWindow+int64(n) > 1<<31-1 {
		return http2.ConnectionError(http2.ErrCodeFlowControl)
	}
	w.connWindow += int64(n)
	w.cond.Broadcast()
	return nil
}

// addStreamWindow applies a WINDOW_UPDATE for st; false: it overflowed.
func (w *h2Writer) addStreamWindow(st *h2Stream, n uint32) bool {
	w.mu.Lock()
	defer w.mu.Unlock()
	if st.sendWindow+int64(n) > 1<<31-1 {
		return false
	}
	st.sendWindow += int64(n)
	w.cond.Broadcast()
	return true
}

// setInitialWindow applies the client's SETTINGS_INITIAL_WINDOW_SIZE to
// the streams open now and to those to come (RFC 9113 section 6.9.2).
func (w *h2Writer) setInitialWindow(v uint32, open []*h2Stream) error {
	w.mu.Lock()
	defer w.mu.Unlock()
	delta := int64(v) - w.initWindow
	w.initWindow = int64(v)
	for _, st := range open {
		st.sendWindow += delta
		if st.sendWindow > 1<<31-1 {
			return http2.ConnectionError(http2.ErrCodeFlowControl)
		}
	}
	w.cond.Broadcast()
	return nil
}

// newStreamWindow is a new stream's send window.
func (w *h2Writer) newStreamWindow() int64 {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.initWindow
}

// resetStream marks st reset (its writes fail from now on) and wakes its
// writer; with code it also sends RST_STREAM.
func (w *h2Writer) resetStream(st *h2Stream, code http2.ErrCode, send bool) {
	w.mu.Lock()
	defer w.mu.Unlock()
	if st.reset {
		return
	}
	st.reset = true
	if send && w.err == nil {
		w.frameLocked(w.fr.WriteRSTStream(st.id, code))
	}
	w.cond.Broadcast()
}
