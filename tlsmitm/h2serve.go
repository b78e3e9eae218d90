package tlsmitm

import (
	"bufio"
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net/http"
	"sync"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// The h2 intercept path. An intercepted connection that negotiated h2 is
// served here, in the goroutine that accepted it, by a frame loop of our
// own over x/net/http2's Framer and HPACK: one goroutine per request (a
// reused worker, workers.go), which answers on the connection itself
// (h2wire.go) and relays to the upstream over the HTTP/1.1 relay's pool
// (h2relay.go). net/http's h2 server spends a serve loop, a frame-writer
// goroutine and channel handoffs on every request, and wrote a small
// response in two records.
//
// What it keeps of net/http's h2 server: SETTINGS toward the client (32
// concurrent streams, 16 KiB frames, 128 KiB/1 MiB upload windows, the
// header list limit, 431 beyond it), the Framer's checks of every frame
// (sizes, CONTINUATION order, HPACK, pseudo-header order and duplicates,
// header names and values), request validation (pseudo-headers, no
// connection-specific fields, TE only "trailers", Content-Length against
// the DATA received, cookies joined), flow control both ways, streams
// whose request still runs counted against the limit until it has ended
// (a reset does not free the slot: rapid reset), GOAWAY after a response
// that ends the connection, idle timeout and drain, and a write deadline
// on every write(2).

// Limits of the h2 frontend beyond those in intercept_h2.go.
const (
	// h2MaxDataFrame keeps a DATA frame and its 9-byte header inside one
	// 16 KiB TLS record.
	h2MaxDataFrame = 16<<10 - 9
	// h2ReadBuffer buffers the client's frames (a frame of up to
	// h2ClientFrameSize larger than it is read straight through).
	h2ReadBuffer = 4 << 10
	// h2WriteBuffer collects frames between flushes.
	h2WriteBuffer = 16 << 10
)

// h2Conn is an h2 client connection.
type h2Conn struct {
	s      *Server
	info   *connInfo
	tc     *tls.Conn
	br     *bufio.Reader
	fr     *http2.Framer
	w      h2Writer
	remote string

	ctx      context.Context // the streams' parent
	connErr  error           // the read error of the connection itself (read loop only)
	first    [1]byte         // a frame's first byte, read by awaitFrame
	hasFirst bool            // first is to be read before the connection

	mu         sync.Mutex
	ready      bool                 // the handshake is done: GOAWAY may be sent
	sentGoAway bool                 // a GOAWAY NO_ERROR went out
	streams    map[uint32]*h2Stream // open streams and streams whose request still runs
	maxID      uint32               // the highest stream the client opened
	goingAway  bool                 // GOAWAY sent or received: no new streams
	idleArmed  bool                 // the read deadline is the idle (or going-away) one
	idleUntil  time.Time            // the idle deadline armed last
	awaiting   bool                 // the read loop waits for a frame's first byte (awaitFrame)
	recvWindow int32                // connection window the client may still use
	unacked    int32                // connection window read, not yet granted back
	wg         sync.WaitGroup       // request goroutines
}

// serveH2 serves an intercepted h2 connection until either side ends it,
// and closes it.
func (s *Server) serveH2(tc *tls.Conn, rc *replayConn, info *connInfo) {
	s.stats.activeHTTP.Add(1)
	c := &h2Conn{s: s, info: info, tc: tc, streams: make(map[uint32]*h2Stream), remote: tc.RemoteAddr().String()}
	// ReverseProxy (the gRPC path) resets a response it cannot finish only
	// under a server: it looks for this key.
	c.ctx = context.WithValue(s.baseCtx, http.ServerContextKey, h2ServerMarker)
	c.fr = http2.NewFramer(&c.w, h2FrameSource{c})
	c.fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
	c.fr.MaxHeaderListSize = c.maxHeaderList()
	c.fr.SetMaxReadFrameSize(h2ClientFrameSize)
	c.w.init(tc, s.cfg.WriteIdleTimeout, c.fr, &s.stats.h2Buffers)
	rc.onRead = &c.w // frames wait only while the client's are being read
	s.registerH2(c, true)
	if !c.handshake() {
		c.end(rc, false)
		return
	}
	c.run(rc, false)
}

// h2ServerMarker is the http.ServerContextKey value of h2 requests; it is
// never served.
var h2ServerMarker = &http.Server{}

// openStreams lists the streams now open.
func (c *h2Conn) openStreams() []*h2Stream {
	c.mu.Lock()
	defer c.mu.Unlock()
	open := make([]*h2Stream, 0, len(c.streams))
	for _, st := range c.streams {
		open = append(open, st)
	}
	return open
}

// maxHeaderList is SETTINGS_MAX_HEADER_LIST_SIZE: MaxHeaderBytes plus
// net/http's allowance for the per-field overhead HPACK counts.
func (c *h2Conn) maxHeaderList() uint32 { return uint32(c.s.cfg.MaxHeaderBytes + 10*32) }

// handshake reads the client preface and sends our SETTINGS and the
// connection window.
func (c *h2Conn) handshake() bool {
	c.tc.SetReadDeadline(time.Now().Add(c.s.cfg.ReadHeaderTimeout))
	var preface [len(http2.ClientPreface)]byte
	if _, err := io.ReadFull(h2FrameSource{c}, preface[:]); err != nil || string(preface[:]) != http2.ClientPreface {
		return false
	}
	c.recvWindow = h2UploadConnWindow
	c.w.control(func(fr *http2.Framer) error {
		return fr.WriteSettings(
			http2.Setting{ID: http2.SettingMaxConcurrentStreams, Val: h2MaxStreams},
			http2.Setting{ID: http2.SettingInitialWindowSize, Val: h2UploadWindow},
			http2.Setting{ID: http2.SettingMaxHeaderListSize, Val: c.maxHeaderList()},
		)
	})
	c.w.control(func(fr *http2.Framer) error { return fr.WriteWindowUpdate(0, h2UploadConnWindow-65535) })
	if c.w.Flush() != nil {
		return false
	}
	c.mu.Lock()
	c.ready = true
	c.armIdleLocked()
	away := c.goingAway || c.s.draining.Load() // a drain that started meanwhile
	c.mu.Unlock()
	if away {
		c.goAway(http2.ErrCodeNo)
	}
	return true
}

// armIdleLocked sets the read deadline of a connection without streams:
// the idle timeout, or now when it is going away.
func (c *h2Conn) armIdleLocked() {
	c.idleArmed = true
	if c.goingAway {
		c.tc.SetReadDeadline(time.Unix(1, 0))
		return
	}
	now := time.Now()
	c.idleUntil = now.Add(c.s.cfg.IdleTimeout)
	deadline := c.idleUntil
	if c.awaiting { // at a frame boundary: it may park first
		deadline, _ = c.s.parkDeadline(now, c.idleUntil)
	}
	c.tc.SetReadDeadline(deadline)
}

// serve is the read loop. A resumed loop goes on after a parked wait, the
// client's SETTINGS long read.
func (c *h2Conn) serve(rc *replayConn, resumed bool) (outcome h2Outcome) {
	defer func() {
		if v := recover(); v != nil {
			c.s.recordPanic(v, "panic serving an h2 connection", "sni", c.info.sni)
			outcome = h2Failed
		}
	}()
	for first := !resumed; ; first = false {
		c.mu.Lock()
		if c.idleArmed && len(c.streams) > 0 {
			c.idleArmed = false
			c.tc.SetReadDeadline(time.Time{}) // a request's own timers bound it now
		}
		c.mu.Unlock()
		if !first && !resumed && c.awaitFrame(rc) {
			return h2Parked
		}
		resumed = false
		fh, err := c.fr.ReadFrameHeader()
		var f http2.Frame
		if err == nil {
			f, err = c.fr.ReadFrameForHeader(fh)
		}
		if err != nil {
			var se http2.StreamError
			if errors.As(err, &se) && !first && c.streamError(fh, se) {
				continue
			}
			return graceOf(c.readFailed(err))
		}
		if sf, ok := f.(*http2.SettingsFrame); first && (!ok || sf.IsAck()) {
			c.goAway(http2.ErrCodeProtocol) // the preface's SETTINGS must come first
			return h2Failed
		}
		if err := c.onFrame(f); err != nil {
			var ce http2.ConnectionError
			if errors.As(err, &ce) {
				c.goAway(http2.ErrCode(ce))
				return h2Failed
			}
			return graceOf(errors.Is(err, errH2GoneAway))
		}
	}
}

// streamError answers a frame the Framer refused for its stream: a reset
// for an open stream, or for the new stream of a malformed HEADERS. It
// reports false when it is a connection error instead (a frame for a
// stream that was never opened, or a HEADERS for a closed one: RFC 9113
// section 5.1 allows no RST_STREAM there).
func (c *h2Conn) streamError(fh http2.FrameHeader, se http2.StreamError) bool {
	c.mu.Lock()
	st := c.streams[se.StreamID]
	isNew := st == nil && fh.Type == http2.FrameHeaders && se.StreamID%2 == 1 && se.StreamID > c.maxID
	if isNew {
		c.maxID = se.StreamID
	}
	c.mu.Unlock()
	switch {
	case st != nil:
		c.resetStream(st, se.Code)
	case isNew:
		c.w.control(func(fr *http2.Framer) error { return fr.WriteRSTStream(se.StreamID, se.Code) })
	default:
		return false
	}
	return true
}

// readFailed ends the read loop on a read error: GOAWAY with the reason
// when the client broke the protocol, nothing more when the connection
// itself failed. It reports whether the end was graceful.
func (c *h2Conn) readFailed(err error) bool {
	var ce http2.ConnectionError
	switch {
	case c.connErr != nil && isTimeout(c.connErr):
		// Idle, or going away with no stream left: a deadline is armed
		// only then. A frame cut by it is not resumed.
		c.goAway(http2.ErrCodeNo)
		return true
	case c.connErr != nil: // the client hung up or the socket failed
	case errors.Is(err, http2.ErrFrameTooLarge):
		c.goAway(http2.ErrCodeFrameSize)
	case errors.As(err, &ce):
		c.goAway(http2.ErrCode(ce))
	default: // a frame too short for its own fields, a stream error first…
		c.goAway(http2.ErrCodeProtocol)
	}
	return false
}

var errH2GoneAway = errors.New("h2 client went away")

func (c *h2Conn) onFrame(f http2.Frame) error {
	switch f := f.(type) {
	case *http2.SettingsFrame:
		return c.onSettings(f)
	case *http2.MetaHeadersFrame:
		return c.onHeaders(f)
	case *http2.DataFrame:
		return c.onData(f)
	case *http2.WindowUpdateFrame:
		return c.onWindowUpdate(f)
	case *http2.RSTStreamFrame:
		st, err := c.stream(f.StreamID)
		if st != nil {
			st.abort(fmt.Errorf("%w: the client reset the stream (%v)", errClientClosed, f.ErrCode))
		}
		return err
	case *http2.PingFrame:
		if f.IsAck() {
			return nil
		}
		return c.w.control(func(fr *http2.Framer) error { return fr.WritePing(true, f.Data) })
	case *http2.GoAwayFrame:
		c.mu.Lock()
		defer c.mu.Unlock()
		c.goingAway = true
		if len(c.streams) == 0 {
			return errH2GoneAway
		}
		return nil
	case *http2.PushPromiseFrame: // only servers push
		return http2.ConnectionError(http2.ErrCodeProtocol)
	}
	return nil // PRIORITY (checked by the Framer) and unknown types
}

// stream returns an open stream; nil without error for one already closed,
// and a connection error for one the client never opened.
func (c *h2Conn) stream(id uint32) (*h2Stream, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if st := c.streams[id]; st != nil {
		return st, nil
	}
	if id > c.maxID {
		return nil, http2.ConnectionError(http2.ErrCodeProtocol)
	}
	return nil, nil
}

func (c *h2Conn) onHeaders(f *http2.MetaHeadersFrame) error {
	id := f.StreamID
	if id%2 == 0 {
		return http2.ConnectionError(http2.ErrCodeProtocol)
	}
	c.mu.Lock()
	if st := c.streams[id]; st != nil { // trailers
		c.mu.Unlock()
		if code := st.onTrailers(f); code != 0 {
			c.resetStream(st, code)
		}
		return nil
	}
	if id <= c.maxID {
		c.mu.Unlock()
		return http2.ConnectionError(http2.ErrCodeProtocol)
	}
	c.maxID = id
	if c.goingAway {
		c.mu.Unlock()
		return nil // after GOAWAY new streams are ignored
	}
	full := len(c.streams) >= h2MaxStreams
	c.mu.Unlock()
	if full { // streams whose request still runs count, reset or not
		c.resetID(id, http2.ErrCodeRefusedStream)
		return nil
	}
	if f.Truncated {
		c.w.mu.Lock()
		c.w.writeHeadersLocked(&h2Stream{id: id}, http.StatusRequestHeaderFieldsTooLarge, nil, true)
		c.w.mu.Unlock()
		return nil
	}
	ctx, cancel := context.WithCancel(c.ctx)
	st := &h2Stream{c: c, id: id, ctx: ctx, cancel: cancel, recvWindow: h2UploadWindow, declared: -1,
		sendWindow: c.w.newStreamWindow()}
	st.cond.L = &st.mu
	r, code := c.newRequest(st, f)
	if code != 0 {
		cancel()
		c.resetID(id, code)
		return nil
	}
	c.mu.Lock()
	c.streams[id] = st
	c.mu.Unlock()
	c.wg.Add(1)
	c.s.workers.run(func() { c.runStream(st, r) })
	return nil
}

// resetStream ends st with an RST_STREAM of code.
func (c *h2Conn) resetStream(st *h2Stream, code http2.ErrCode) {
	st.mu.Lock()
	st.peerDone = true
	st.mu.Unlock()
	c.w.resetStream(st, code, true) // before cancel: a cut response's INTERNAL_ERROR must not win
	st.cancel()
	st.endBody(fmt.Errorf("%w: stream reset (%v)", errClientClosed, code))
}

// resetID sends RST_STREAM for a stream that may have no state here.
func (c *h2Conn) resetID(id uint32, code http2.ErrCode) {
	c.mu.Lock()
	st := c.streams[id]
	c.mu.Unlock()
	if st != nil {
		c.resetStream(st, code)
		return
	}
	c.w.control(func(fr *http2.Framer) error { return fr.WriteRSTStream(id, code) })
}

// goAway sends GOAWAY (once with NO_ERROR; an error code may follow) and
// takes no new stream. The connection closes once its last stream ends.
// Before the handshake is done it only marks the connection: the
// handshake sends the GOAWAY after its SETTINGS.
func (c *h2Conn) goAway(code http2.ErrCode) {
	c.mu.Lock()
	c.goingAway = true
	send := c.ready && (code != http2.ErrCodeNo || !c.sentGoAway)
	if send && code == http2.ErrCodeNo {
		c.sentGoAway = true
	}
	last := c.maxID
	if c.ready && len(c.streams) == 0 {
		c.armIdleLocked()
	}
	c.mu.Unlock()
	if send {
		c.w.flushed(func(fr *http2.Framer) error { return fr.WriteGoAway(last, code, nil) })
	}
}

// registerH2 adds or removes c from the connections drain must reach.
func (s *Server) registerH2(c *h2Conn, add bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if add {
		s.h2[c] = struct{}{}
	} else {
		delete(s.h2, c)
	}
}

// drainH2 sends every h2 connection away (GOAWAY; each closes once its
// requests are done), or, at the drain deadline (force), closes them.
func (s *Server) drainH2(force bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for c := range s.h2 {
		if force {
			c.tc.NetConn().Close() // no close_notify: it could block on a stuck client
			continue
		}
		s.conns.Add(1)
		go func() { // a GOAWAY write can block on a client that does not read
			defer s.conns.Done()
			c.goAway(http2.ErrCodeNo)
		}()
	}
}
