package tlsmitm

import (
	"bytes"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"runtime"
	"runtime/pprof"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// FuzzH2Frames writes arbitrary bytes as the frame stream of an intercepted
// h2 connection (after a correct client preface) and checks the frontend of
// h2serve.go: it never panics; it answers only with well-formed h2 frames,
// SETTINGS first, that follow a server's stream states (no DATA before a
// response's HEADERS, nothing after a stream ended, no RST_STREAM for a
// stream the client never opened, none twice); it refuses a connection
// that does not start with SETTINGS; it names an error in a GOAWAY before
// it closes; it keeps reading what the client sends; it ends the
// connection and every request goroutine of it once the client has gone;
// and it keeps serving ordinary h2 requests afterwards.
//
//	go test -run '^$' -fuzz '^FuzzH2Frames$' -fuzztime 1m ./tlsmitm/
//
// One terminator serves the whole fuzz process. Each input is one TLS
// connection: the preface, the input (its last frame completed with zero
// bytes), then a PING whose ACK tells that the read loop got through the
// input; the server's answers are read until the streams the input opened
// have ended or gone quiet, then the client sends close_notify and the
// server must close. testdata/fuzz/FuzzH2Frames holds the inputs that
// failed (named ones minimized by hand).
func FuzzH2Frames(f *testing.F) {
	for _, seed := range h2FuzzSeeds() {
		f.Add(seed)
	}
	var logs syncBuffer // error lines only: a recovered panic's stack
	h := newHarness(f, harnessOpts{mutate: func(c *Config) {
		c.Logger = slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelError}))
		c.Auditor = nil // the recorder keeps every event: unbounded over a campaign
		c.ReadHeaderTimeout = 2 * time.Second
		c.BodyIdleTimeout = 2 * time.Second
		c.WriteIdleTimeout = 2 * time.Second
		// MaxConnsPerSource stays at its default: connections the server
		// failed to close would use it up and fail the dials.
	}})
	health := h.client(true)
	health.Transport.(*http.Transport).DisableKeepAlives = true // a fresh connection each time
	health.Timeout = 5 * time.Second
	cfg := &tls.Config{ServerName: apiHost, RootCAs: h.pool, NextProtos: []string{"h2"},
		ClientSessionCache: tls.NewLRUClientSessionCache(8)}
	baseGoroutines := -1
	execs := 0

	f.Fuzz(func(t *testing.T, in []byte) {
		execs++
		r := h2FuzzExchange(t, h.addr, cfg, in)
		t.Logf("%d frames back, sync %v, GOAWAY %v, ended by %v", r.frames, r.synced, r.goaway, r.readErr)
		if p := h.srv.Stats().Panics; p != 0 {
			t.Fatalf("%d panics serving %d bytes of frames; log:\n%s", p, len(in), logs.String())
		}
		if r.err != "" {
			t.Fatalf("%s\n(input %q)", r.err, h2FuzzTrim(in))
		}
		// The connection is gone from the client's side: the server holds
		// neither it nor any request of it for long.
		deadline := time.Now().Add(5 * time.Second)
		for st := h.srv.Stats(); st.ActiveHTTPConns != 0 || st.ActiveRequests != 0; st = h.srv.Stats() {
			if time.Now().After(deadline) {
				t.Fatalf("5s after the client closed, the server still holds %d h2 connections and %d requests\n%s",
					st.ActiveHTTPConns, st.ActiveRequests, goroutineDump())
			}
			time.Sleep(time.Millisecond)
		}
		// The terminator still serves a normal h2 request.
		resp, err := health.Get("https://" + apiHost + "/health")
		if err != nil {
			t.Fatalf("after the input, a normal h2 GET failed: %v", err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.ProtoMajor != 2 || resp.StatusCode != 200 || string(body) != "hello GET /health" {
			t.Fatalf("after the input, a normal h2 GET got %s %d %q", resp.Proto, resp.StatusCode, body)
		}
		if p := h.srv.Stats().Panics; p != 0 {
			t.Fatalf("%d panics; log:\n%s", p, logs.String())
		}
		logs.mu.Lock()
		logs.buf.Reset()
		logs.mu.Unlock()
		// Goroutines: no steady growth across inputs (the upstream pool's
		// connections come and go, hence the slack).
		if execs%64 == 1 {
			n := waitGoroutinesBelow(baseGoroutines+200, 3*time.Second)
			if baseGoroutines < 0 {
				baseGoroutines = n
			} else if n > baseGoroutines+200 {
				t.Fatalf("%d goroutines after %d inputs, %d after the first\n%s", n, execs, baseGoroutines, goroutineDump())
			}
		}
	})
}

// h2FuzzSync is the payload of the PING that follows the input.
var h2FuzzSync = [8]byte{'f', 'u', 'z', 'z', 's', 'y', 'n', 'c'}

type h2FuzzResult struct {
	err     string // a property violated
	frames  int
	goaway  bool
	synced  bool
	readErr error
}

// h2FuzzFrames completes the input's last frame with zero bytes (a frame
// the server will read, not wait for: the PING after it then lands on a
// frame boundary), and tells what its frames are: the streams HEADERS
// frames open (with those PRIORITY frames name), whether one is a GOAWAY,
// and whether the first is a SETTINGS.
func h2FuzzFrames(in []byte) (out []byte, w h2FuzzWalk) {
	out = bytes.Clone(in)
	w.opened = make(map[uint32]bool)
	for i := 0; i < len(out); {
		if len(out)-i < 9 {
			out = append(out, make([]byte, 9-(len(out)-i))...)
		}
		n := int(out[i])<<16 | int(out[i+1])<<8 | int(out[i+2])
		id := uint32(out[i+5]&0x7f)<<24 | uint32(out[i+6])<<16 | uint32(out[i+7])<<8 | uint32(out[i+8])
		switch typ := http2.FrameType(out[i+3]); {
		case typ == http2.FrameHeaders && id%2 == 1:
			w.opened[id] = true
		case typ == http2.FramePriority:
			w.named = append(w.named, id)
		case typ == http2.FrameGoAway:
			w.goaway = true
		}
		if i == 0 {
			w.settingsFirst = http2.FrameType(out[3]) == http2.FrameSettings && out[4]&byte(http2.FlagSettingsAck) == 0
		}
		if n > 16<<10 { // the server refuses it on its header
			break
		}
		i += 9 + n
		if i > len(out) {
			out = append(out, make([]byte, i-len(out))...)
		}
	}
	return out, w
}

type h2FuzzWalk struct {
	opened        map[uint32]bool // streams HEADERS frames open
	named         []uint32        // streams PRIORITY frames name
	goaway        bool            // the client sends GOAWAY
	settingsFirst bool            // the first frame is a SETTINGS (not an ACK)
}

// h2FuzzStream is what the server sent on one stream.
type h2FuzzStream struct {
	final bool // a final (non-1xx) HEADERS
	ended bool // END_STREAM
	reset bool // RST_STREAM
}

// h2FuzzExchange runs one input over one connection.
func h2FuzzExchange(t *testing.T, addr string, cfg *tls.Config, in []byte) (res h2FuzzResult) {
	frames, walk := h2FuzzFrames(in)
	opened := walk.opened
	priority := make(map[uint32]bool)
	for _, id := range walk.named {
		priority[id] = true
	}
	c, err := tls.Dial("tcp", addr, cfg)
	if err != nil {
		res.err = fmt.Sprintf("dial: %v", err)
		return
	}
	defer c.Close()
	if p := c.ConnectionState().NegotiatedProtocol; p != "h2" {
		res.err = fmt.Sprintf("negotiated %q, want h2", p)
		return
	}
	c.SetDeadline(time.Now().Add(10 * time.Second))

	// The reader: every frame the server sends must parse, and follow the
	// stream states of RFC 9113 section 5.1 as a server.
	var mu sync.Mutex
	streams := make(map[uint32]*h2FuzzStream)
	pending := len(opened) // opened streams the server has not ended
	activity := make(chan struct{}, 1)
	synced := make(chan struct{})
	done := make(chan struct{})
	go func() {
		defer close(done)
		fr := http2.NewFramer(io.Discard, c)
		fr.ReadMetaHeaders = hpack.NewDecoder(4096, nil)
		fr.SetMaxReadFrameSize(16 << 10) // the server never raises it, and caps its frames below
		violate := func(format string, args ...any) {
			res.err = fmt.Sprintf("after %d frames, the server sent ", res.frames) + fmt.Sprintf(format, args...)
		}
		for {
			f, err := fr.ReadFrame()
			if err != nil {
				res.readErr = err
				return
			}
			if res.frames == 0 {
				if sf, ok := f.(*http2.SettingsFrame); !ok || sf.IsAck() {
					violate("%v first, want SETTINGS", f.Header())
					return
				}
			}
			res.frames++
			id := f.Header().StreamID
			mu.Lock()
			st := streams[id]
			if st == nil {
				st = &h2FuzzStream{}
				streams[id] = st
			}
			wasEnded := st.ended || st.reset
			switch f := f.(type) {
			case *http2.GoAwayFrame:
				res.goaway = true
			case *http2.PingFrame:
				if f.IsAck() && f.Data == h2FuzzSync && !res.synced {
					res.synced = true
					close(synced)
				}
			case *http2.PushPromiseFrame:
				violate("PUSH_PROMISE on stream %d", id)
			case *http2.MetaHeadersFrame:
				status := f.PseudoValue("status")
				interim := len(status) == 3 && status[0] == '1'
				switch {
				case !opened[id]:
					violate("HEADERS on stream %d, which the client never opened", id)
				case wasEnded:
					violate("HEADERS on stream %d after it ended", id)
				case st.final && status != "":
					violate("a second response (%s) on stream %d", status, id)
				case st.final && !f.StreamEnded():
					violate("trailers without END_STREAM on stream %d", id)
				case !st.final && status == "":
					violate("HEADERS without :status on stream %d", id)
				case interim && f.StreamEnded():
					violate("an interim %s with END_STREAM on stream %d", status, id)
				}
				st.final = st.final || !interim
				st.ended = st.ended || f.StreamEnded()
			case *http2.DataFrame:
				switch {
				case !opened[id]:
					violate("DATA on stream %d, which the client never opened", id)
				case wasEnded:
					violate("DATA on stream %d after it ended", id)
				case !st.final:
					violate("DATA on stream %d before its response HEADERS", id)
				}
				st.ended = st.ended || f.StreamEnded()
			case *http2.RSTStreamFrame:
				switch {
				case !opened[id] && !priority[id]:
					// RFC 9113 section 5.1: never for an idle stream.
					violate("RST_STREAM on stream %d, which the client never opened", id)
				case st.reset:
					violate("a second RST_STREAM on stream %d", id)
				}
				st.reset = true
			}
			if opened[id] && !wasEnded && (st.ended || st.reset) {
				pending--
			}
			mu.Unlock()
			if res.err != "" {
				return
			}
			select {
			case activity <- struct{}{}:
			default:
			}
		}
	}()

	var out bytes.Buffer
	out.WriteString(http2.ClientPreface)
	out.Write(frames)
	http2.NewFramer(&out, nil).WritePing(false, h2FuzzSync)
	if _, err := c.Write(out.Bytes()); err != nil && isTimeout(err) {
		c.Close()
		<-done
		res.err = fmt.Sprintf("the server stopped reading: %d bytes not taken within 10s", out.Len())
		return
	}

	// Wait for the ACK of the sync PING, then for the server to end the
	// streams the input opened (or go quiet: a request may wait for a body
	// the input never sends).
	limit := time.NewTimer(300 * time.Millisecond)
	defer limit.Stop()
	select {
	case <-synced:
		quiet := time.NewTimer(20 * time.Millisecond)
	wait:
		for {
			mu.Lock()
			left := pending
			mu.Unlock()
			if left <= 0 {
				break
			}
			select {
			case <-activity:
				quiet.Reset(20 * time.Millisecond)
			case <-quiet.C:
				break wait
			case <-limit.C:
				break wait
			case <-done:
				break wait
			}
		}
		quiet.Stop()
	case <-limit.C:
	case <-done:
	}

	// An error in the input is a connection error the server names in a
	// GOAWAY before it closes (unless the client said GOAWAY first); a
	// connection that does not start with SETTINGS is one.
	select {
	case <-done:
		if res.err == "" && !res.goaway && !walk.goaway {
			res.err = fmt.Sprintf("the server closed the connection without a GOAWAY (%d frames read, ended by %v)", res.frames, res.readErr)
			return
		}
	default:
	}
	if !walk.settingsFirst {
		mu.Lock()
		accepted := res.synced
		mu.Unlock()
		if accepted {
			c.Close()
			<-done
			res.err = "the server served a connection whose first frame is not SETTINGS (RFC 9113 section 3.4)"
			return
		}
	}

	// The client leaves: the server must close within a bound.
	c.SetDeadline(time.Now().Add(5 * time.Second))
	c.CloseWrite()
	<-done
	if res.err != "" {
		return
	}
	switch err := res.readErr; {
	case err == io.EOF, errors.Is(err, io.ErrUnexpectedEOF), errors.Is(err, syscall.ECONNRESET), errors.Is(err, net.ErrClosed):
		// ended; a frame cut by an abrupt close is not a malformed one
	case isTimeout(err):
		res.err = fmt.Sprintf("the server did not close within 5s of the client's close_notify (%d frames read, sync %v)", res.frames, res.synced)
	default:
		res.err = fmt.Sprintf("the server sent a frame that does not parse after %d frames: %v", res.frames, err)
	}
	return
}

// waitGoroutinesBelow waits up to d for the goroutine count to drop to at
// most n (n < 0: no wait), and returns the last count.
func waitGoroutinesBelow(n int, d time.Duration) int {
	deadline := time.Now().Add(d)
	for {
		g := runtime.NumGoroutine()
		if n < 0 || g <= n || time.Now().After(deadline) {
			return g
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func goroutineDump() string {
	var b strings.Builder
	pprof.Lookup("goroutine").WriteTo(&b, 1)
	s := b.String()
	if len(s) > 64<<10 {
		s = s[:64<<10] + "\n..."
	}
	return s
}

func h2FuzzTrim(in []byte) []byte {
	if len(in) > 512 {
		return in[:512]
	}
	return in
}

// h2FuzzSeeds are frame streams (after the preface) in the shapes the
// frontend handles: requests with and without bodies, header blocks split
// over CONTINUATION, padding, priorities, trailers, flow control, resets,
// pings and GOAWAY, and some that it must refuse.
func h2FuzzSeeds() [][]byte {
	type frames struct {
		buf bytes.Buffer
		fr  *http2.Framer
		hb  bytes.Buffer
		enc *hpack.Encoder
	}
	newFrames := func() *frames {
		x := &frames{}
		x.fr = http2.NewFramer(&x.buf, nil)
		x.fr.AllowIllegalWrites = true
		x.enc = hpack.NewEncoder(&x.hb)
		return x
	}
	block := func(x *frames, fields ...string) []byte {
		x.hb.Reset()
		for i := 0; i+1 < len(fields); i += 2 {
			x.enc.WriteField(hpack.HeaderField{Name: fields[i], Value: fields[i+1]})
		}
		return append([]byte(nil), x.hb.Bytes()...)
	}
	req := func(method, path string, extra ...string) []string {
		return append([]string{":method", method, ":scheme", "https", ":authority", apiHost, ":path", path}, extra...)
	}
	get := req("GET", "/")
	var seeds [][]byte
	add := func(build func(x *frames)) {
		x := newFrames()
		build(x)
		seeds = append(seeds, bytes.Clone(x.buf.Bytes()))
	}

	// GET / with END_STREAM.
	add(func(x *frames) {
		x.fr.WriteSettings()
		x.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block(x, get...), EndStream: true, EndHeaders: true})
	})
	// GET / without END_STREAM, ended by an empty DATA.
	add(func(x *frames) {
		x.fr.WriteSettings(http2.Setting{ID: http2.SettingEnablePush, Val: 0})
		x.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block(x, get...), EndHeaders: true})
		x.fr.WriteData(1, true, nil)
	})
	// POST with a Content-Length body over two DATA frames, one padded.
	add(func(x *frames) {
		x.fr.WriteSettings()
		x.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block(x, req("POST", "/v1/messages", "content-length", "11", "content-type", "application/json")...), EndHeaders: true})
		x.fr.WriteData(1, false, []byte("{\"a\":"))
		x.fr.WriteDataPadded(1, true, []byte("\"bc\"}\n"), make([]byte, 7))
	})
	// A header block over HEADERS and two CONTINUATIONs.
	add(func(x *frames) {
		x.fr.WriteSettings()
		b := block(x, req("GET", "/split", "user-agent", "fuzz", "accept", "*/*", "cookie", "a=1", "cookie", "b=2")...)
		n := len(b) / 3
		x.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: b[:n], EndStream: true})
		x.fr.WriteContinuation(1, false, b[n:2*n])
		x.fr.WriteContinuation(1, true, b[2*n:])
	})
	// Padding and priority on HEADERS; PRIORITY frames.
	add(func(x *frames) {
		x.fr.WriteSettings()
		x.fr.WritePriority(3, http2.PriorityParam{StreamDep: 0, Weight: 15})
		x.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block(x, get...), EndStream: true, EndHeaders: true,
			PadLength: 9, Priority: http2.PriorityParam{StreamDep: 3, Exclusive: true, Weight: 200}})
		x.fr.WritePriority(1, http2.PriorityParam{StreamDep: 5, Weight: 1})
	})
	// PING, WINDOW_UPDATE on the connection and a stream, SETTINGS ACK.
	add(func(x *frames) {
		x.fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1 << 20})
		x.fr.WriteSettingsAck()
		x.fr.WritePing(false, [8]byte{1, 2, 3, 4, 5, 6, 7, 8})
		x.fr.WritePing(true, [8]byte{})
		x.fr.WriteWindowUpdate(0, 1<<16)
		x.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block(x, get...), EndStream: true, EndHeaders: true})
		x.fr.WriteWindowUpdate(1, 1<<16)
	})
	// Rapid reset: requests reset at once.
	add(func(x *frames) {
		x.fr.WriteSettings()
		for id := uint32(1); id <= 9; id += 2 {
			x.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: block(x, req("POST", "/r")...), EndHeaders: true})
			x.fr.WriteRSTStream(id, http2.ErrCodeCancel)
		}
	})
	// GOAWAY after a request, then a request that must be ignored.
	add(func(x *frames) {
		x.fr.WriteSettings()
		x.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block(x, get...), EndStream: true, EndHeaders: true})
		x.fr.WriteGoAway(0, http2.ErrCodeNo, []byte("bye"))
		x.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 3, BlockFragment: block(x, get...), EndStream: true, EndHeaders: true})
	})
	// A closed send window (INITIAL_WINDOW_SIZE 0), small frames, no
	// dynamic table, then the window opened.
	add(func(x *frames) {
		x.fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 0},
			http2.Setting{ID: http2.SettingMaxFrameSize, Val: 16384},
			http2.Setting{ID: http2.SettingHeaderTableSize, Val: 0})
		x.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block(x, get...), EndStream: true, EndHeaders: true})
		x.fr.WriteWindowUpdate(1, 5)
		x.fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 65535})
	})
	// Request trailers; Expect: 100-continue; HEAD; OPTIONS *.
	add(func(x *frames) {
		x.fr.WriteSettings()
		x.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block(x, req("POST", "/t", "te", "trailers", "expect", "100-continue")...), EndHeaders: true})
		x.fr.WriteData(1, false, []byte("body"))
		x.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block(x, "x-trailer", "1"), EndStream: true, EndHeaders: true})
		x.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 3, BlockFragment: block(x, req("HEAD", "/h")...), EndStream: true, EndHeaders: true})
		x.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 5, BlockFragment: block(x, req("OPTIONS", "*")...), EndStream: true, EndHeaders: true})
	})
	// Malformed requests: a connection-specific field, no :path, an
	// unknown pseudo-header, CONNECT, a Content-Length that does not
	// match, DATA on a closed stream, an even stream id.
	add(func(x *frames) {
		x.fr.WriteSettings()
		x.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block(x, req("GET", "/", "connection", "close")...), EndStream: true, EndHeaders: true})
		x.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 3, BlockFragment: block(x, ":method", "GET", ":scheme", "https"), EndStream: true, EndHeaders: true})
		x.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 5, BlockFragment: block(x, req("GET", "/", ":protocol", "websocket")...), EndStream: true, EndHeaders: true})
		x.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 7, BlockFragment: block(x, ":method", "CONNECT", ":authority", apiHost+":443"), EndHeaders: true})
		x.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 9, BlockFragment: block(x, req("POST", "/", "content-length", "3")...), EndHeaders: true})
		x.fr.WriteData(9, true, []byte("toolong"))
		x.fr.WriteData(1, false, []byte("late"))
		x.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 12, BlockFragment: block(x, get...), EndStream: true, EndHeaders: true})
	})
	// Protocol errors: SETTINGS ACK first; a frame on stream 0; a
	// CONTINUATION without HEADERS; PUSH_PROMISE from a client; a
	// WINDOW_UPDATE overflow.
	add(func(x *frames) { x.fr.WriteSettingsAck() })
	add(func(x *frames) {
		x.fr.WriteSettings()
		x.fr.WriteData(0, false, []byte("x"))
	})
	add(func(x *frames) {
		x.fr.WriteSettings()
		x.fr.WriteContinuation(1, true, block(x, get...))
	})
	add(func(x *frames) {
		x.fr.WriteSettings()
		x.fr.WritePushPromise(http2.PushPromiseParam{StreamID: 1, PromiseID: 2, BlockFragment: block(x, get...), EndHeaders: true})
	})
	add(func(x *frames) {
		x.fr.WriteSettings()
		x.fr.WriteWindowUpdate(0, 1<<31-1)
		x.fr.WriteWindowUpdate(0, 1<<31-1)
	})
	// An unknown frame type, and an empty stream.
	add(func(x *frames) {
		x.fr.WriteSettings()
		x.fr.WriteRawFrame(0xfa, 0x3, 1, []byte("unknown"))
		x.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: 1, BlockFragment: block(x, get...), EndStream: true, EndHeaders: true})
	})
	seeds = append(seeds, nil)
	return seeds
}
