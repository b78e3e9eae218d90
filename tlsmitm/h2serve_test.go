package tlsmitm

import (
	"bytes"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// The h2 frontend's protocol behaviour (h2serve.go), tested with raw frames
// where Go's h2 client would not send what a peer can.

// nextFrame reads frames (answering SETTINGS and PING) until want accepts
// one, or d passes (nil).
func (r *rawH2) nextFrame(d time.Duration, want func(http2.Frame) bool) http2.Frame {
	r.t.Helper()
	r.c.SetReadDeadline(time.Now().Add(d))
	defer r.c.SetReadDeadline(time.Time{})
	for {
		f, err := r.fr.ReadFrame()
		if err != nil {
			return nil
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				r.fr.WriteSettingsAck()
			}
		case *http2.PingFrame:
			if !f.IsAck() {
				r.fr.WritePing(true, f.Data)
			}
		}
		if want(f) {
			return f
		}
	}
}

// resetOf waits for RST_STREAM on id and returns its code; false if none
// came within 3s.
func (r *rawH2) resetOf(id uint32) (http2.ErrCode, bool) {
	r.t.Helper()
	f := r.nextFrame(3*time.Second, func(f http2.Frame) bool {
		rst, ok := f.(*http2.RSTStreamFrame)
		return ok && rst.StreamID == id
	})
	if f == nil {
		return 0, false
	}
	return f.(*http2.RSTStreamFrame).ErrCode, true
}

// TestH2Serve_MalformedRequestsReset: what RFC 9113 section 8.1.1 calls
// malformed is refused with RST_STREAM PROTOCOL_ERROR, and never reaches
// the upstream; the connection stays usable.
func TestH2Serve_MalformedRequestsReset(t *testing.T) {
	var hits atomic.Int32
	h := newHarness(t, harnessOpts{handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hits.Add(1)
		io.WriteString(w, "ok")
	})})
	r := dialRawH2(t, h)
	for name, fields := range map[string][][2]string{
		"connection header":      reqFields("GET", "/", [2]string{"connection", "keep-alive"}),
		"transfer-encoding":      reqFields("GET", "/", [2]string{"transfer-encoding", "chunked"}),
		"te other than trailers": reqFields("GET", "/", [2]string{"te", "gzip"}),
		"upgrade":                reqFields("GET", "/", [2]string{"upgrade", "websocket"}),
		"no :path":               {{":method", "GET"}, {":scheme", "https"}, {":authority", apiHost}},
		"no :method":             {{":scheme", "https"}, {":authority", apiHost}, {":path", "/"}},
		"bad :scheme":            {{":method", "GET"}, {":scheme", "ftp"}, {":authority", apiHost}, {":path", "/"}},
		"extended CONNECT":       {{":method", "CONNECT"}, {":protocol", "websocket"}, {":scheme", "https"}, {":authority", apiHost}, {":path", "/"}},
		"bad content-length":     reqFields("GET", "/", [2]string{"content-length", "12x"}),
		"two content-lengths":    reqFields("POST", "/", [2]string{"content-length", "1"}, [2]string{"content-length", "2"}),
		"length but no body":     reqFields("POST", "/", [2]string{"content-length", "5"}),
	} {
		id := r.send(fields, true)
		if code, ok := r.resetOf(id); !ok || code != http2.ErrCodeProtocol {
			t.Errorf("%s: reset %v (%v), want RST_STREAM PROTOCOL_ERROR", name, code, ok)
		}
	}
	if resp := r.read(r.send(reqFields("GET", "/"), true), 3*time.Second); resp.status != "200" || resp.body != "ok" {
		t.Fatalf("a good request after the malformed ones: %+v", resp)
	}
	if n := hits.Load(); n != 1 {
		t.Errorf("upstream saw %d requests, want only the good one", n)
	}
}

// TestH2Serve_BodyLongerOrShorterThanItsLengthResets: DATA beyond the
// declared Content-Length, or END_STREAM before it, resets the stream.
func TestH2Serve_BodyLongerOrShorterThanItsLengthResets(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	r := dialRawH2(t, h)
	for _, tc := range []struct {
		name string
		data string
	}{{"longer", "0123456789ab"}, {"shorter", "01234"}} {
		id := r.send(reqFields("POST", "/", [2]string{"content-length", "10"}), false)
		r.fr.WriteData(id, true, []byte(tc.data))
		if code, ok := r.resetOf(id); !ok || code != http2.ErrCodeProtocol {
			t.Errorf("%s body: reset %v (%v), want RST_STREAM PROTOCOL_ERROR", tc.name, code, ok)
		}
	}
}

// TestH2Serve_StreamsBeyondTheLimitRefused: a 33rd concurrent stream is
// refused (REFUSED_STREAM, which a client may retry) while 32 run.
func TestH2Serve_StreamsBeyondTheLimitRefused(t *testing.T) {
	release := make(chan struct{})
	var started atomic.Int32
	h := newHarness(t, harnessOpts{mutate: func(c *Config) { c.MaxRequestsPerSource = 64; c.MaxRequests = 128 },
		handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			started.Add(1)
			<-release
		})})
	defer close(release)
	r := dialRawH2(t, h)
	for range h2MaxStreams {
		r.send(reqFields("GET", "/hold"), true)
	}
	waitFor(t, 10*time.Second, "32 requests at the upstream", func() bool { return started.Load() == h2MaxStreams })
	id := r.send(reqFields("GET", "/one-too-many"), true)
	if code, ok := r.resetOf(id); !ok || code != http2.ErrCodeRefusedStream {
		t.Fatalf("stream 33: reset %v (%v), want REFUSED_STREAM", code, ok)
	}
}

// TestH2Serve_ClientWindowIsHonoured: a client that grants 100 bytes gets
// 100 bytes of body until it grants more, then the rest; a window update
// that would overflow 2^31-1 resets the stream.
func TestH2Serve_ClientWindowIsHonoured(t *testing.T) {
	body := strings.Repeat("x", 1000)
	h := newHarness(t, harnessOpts{handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/hold" { // a head, then nothing until the proxy lets go
			w.(http.Flusher).Flush()
			<-r.Context().Done()
			return
		}
		io.WriteString(w, body)
	})})
	r := dialRawH2(t, h)
	r.fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 100})
	id := r.send(reqFields("GET", "/"), true)
	var got bytes.Buffer
	isData := func(f http2.Frame) bool { d, ok := f.(*http2.DataFrame); return ok && d.StreamID == id }
	for f := r.nextFrame(time.Second, isData); f != nil; f = r.nextFrame(300*time.Millisecond, isData) {
		got.Write(f.(*http2.DataFrame).Data())
	}
	if got.Len() != 100 {
		t.Fatalf("%d body bytes within a 100-byte window, want 100", got.Len())
	}
	r.fr.WriteWindowUpdate(id, 900)
	for got.Len() < 1000 {
		f := r.nextFrame(3*time.Second, isData)
		if f == nil {
			t.Fatalf("%d of 1000 bytes after the window opened", got.Len())
		}
		got.Write(f.(*http2.DataFrame).Data())
	}
	if got.String() != body {
		t.Fatal("body changed on the way")
	}

	// A stream that has sent nothing keeps its 100 bytes of window: one
	// more than 2^31-1 after this update.
	id = r.send(reqFields("GET", "/hold"), true)
	if f := r.nextFrame(3*time.Second, func(f http2.Frame) bool { m, ok := f.(*http2.MetaHeadersFrame); return ok && m.StreamID == id }); f == nil {
		t.Fatal("no response head for the held stream")
	}
	r.fr.WriteWindowUpdate(id, 1<<31-1)
	if code, ok := r.resetOf(id); !ok || code != http2.ErrCodeFlowControl {
		t.Errorf("stream window overflow: reset %v (%v), want FLOW_CONTROL_ERROR", code, ok)
	}
}

// TestH2Serve_ConnectionWindowOverflowGoesAway: the connection's window
// past 2^31-1 is a connection error (GOAWAY FLOW_CONTROL_ERROR).
func TestH2Serve_ConnectionWindowOverflowGoesAway(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	r := dialRawH2(t, h)
	r.fr.WriteWindowUpdate(0, 1<<31-1)
	f := r.nextFrame(3*time.Second, func(f http2.Frame) bool { _, ok := f.(*http2.GoAwayFrame); return ok })
	if f == nil || f.(*http2.GoAwayFrame).ErrCode != http2.ErrCodeFlowControl {
		t.Fatalf("got %v, want GOAWAY FLOW_CONTROL_ERROR", f)
	}
}

// TestH2Serve_IdleConnectionGoesAway: a connection without streams for
// IdleTimeout gets GOAWAY NO_ERROR and is closed.
func TestH2Serve_IdleConnectionGoesAway(t *testing.T) {
	h := newHarness(t, harnessOpts{mutate: func(c *Config) { c.IdleTimeout = 300 * time.Millisecond }})
	r := dialRawH2(t, h)
	if resp := r.read(r.send(reqFields("GET", "/"), true), 3*time.Second); resp.status != "200" {
		t.Fatalf("request: %+v", resp)
	}
	start := time.Now()
	f := r.nextFrame(5*time.Second, func(f http2.Frame) bool { _, ok := f.(*http2.GoAwayFrame); return ok })
	if f == nil || f.(*http2.GoAwayFrame).ErrCode != http2.ErrCodeNo || f.(*http2.GoAwayFrame).LastStreamID != 1 {
		t.Fatalf("got %v, want GOAWAY NO_ERROR after stream 1", f)
	}
	if d := time.Since(start); d < 200*time.Millisecond {
		t.Errorf("went away after %v, before the idle timeout", d)
	}
	if f := r.nextFrame(3*time.Second, func(http2.Frame) bool { return false }); f != nil {
		t.Errorf("frame %v after GOAWAY", f)
	}
}

// TestH2Serve_ExpectContinueAndRequestTrailers: a client waiting for 100
// Continue gets it when the upstream starts reading; request trailers end
// the body and are not forwarded.
func TestH2Serve_ExpectContinueAndRequestTrailers(t *testing.T) {
	h := newHarness(t, harnessOpts{handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		io.WriteString(w, string(b)+" trailer="+r.Trailer.Get("X-Trailer")+" expect="+r.Header.Get("Expect"))
	})})
	r := dialRawH2(t, h)
	id := r.send(reqFields("POST", "/", [2]string{"expect", "100-continue"}), false)
	f := r.nextFrame(3*time.Second, func(f http2.Frame) bool { m, ok := f.(*http2.MetaHeadersFrame); return ok && m.StreamID == id })
	if f == nil || f.(*http2.MetaHeadersFrame).PseudoValue("status") != "100" {
		t.Fatalf("got %v, want a 100 Continue before the body", f)
	}
	r.fr.WriteData(id, false, []byte("body"))
	var hbuf bytes.Buffer
	hpack.NewEncoder(&hbuf).WriteField(hpack.HeaderField{Name: "x-trailer", Value: "v"})
	r.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: hbuf.Bytes(), EndHeaders: true, EndStream: true})
	resp := r.read(id, 3*time.Second)
	if resp.status != "200" || resp.body != "body trailer= expect=" {
		t.Fatalf("got %+v, want the body without the trailer or Expect upstream", resp)
	}
}

// TestH2Serve_IdleConnectionsHoldNoBuffers: after requests with bodies both
// ways, connections that wait for their next frame have given their read
// and write buffers back to the pools (an idle connection's memory).
func TestH2Serve_IdleConnectionsHoldNoBuffers(t *testing.T) {
	big := strings.Repeat("x", 200<<10)
	h := newHarness(t, harnessOpts{handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		n, _ := io.Copy(io.Discard, r.Body)
		if r.Method == "GET" {
			io.WriteString(w, big)
			return
		}
		fmt.Fprintf(w, "%d", n)
	})})
	for i := range 3 {
		cl := h.client(true) // a connection each
		resp, err := cl.Post("https://"+apiHost+"/up", "text/plain", strings.NewReader(big[:100<<10]))
		if err != nil {
			t.Fatal(err)
		}
		got, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(got) != strconv.Itoa(100<<10) || resp.ProtoMajor != 2 {
			t.Fatalf("conn %d upload: %s %q", i, resp.Proto, got)
		}
		resp, err = cl.Get("https://" + apiHost + "/down")
		if err != nil {
			t.Fatal(err)
		}
		got, _ = io.ReadAll(resp.Body)
		resp.Body.Close()
		if len(got) != len(big) {
			t.Fatalf("conn %d download: %d bytes", i, len(got))
		}
	}
	deadline := time.Now().Add(3 * time.Second)
	for h.srv.stats.h2Buffers.Load() != 0 {
		if time.Now().After(deadline) {
			t.Fatalf("%d buffers still held by idle h2 connections", h.srv.stats.h2Buffers.Load())
		}
		time.Sleep(10 * time.Millisecond)
	}
	if n := h.srv.Stats().ActiveHTTPConns; n != 3 {
		t.Errorf("%d connections open, want the 3 idle ones", n)
	}
}
