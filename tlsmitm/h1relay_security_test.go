package tlsmitm

// Properties of the HTTP/1.1 relay (h1relay.go, h1pool.go) found by a
// security review, named by the behaviour they pin (pool, smuggling,
// redaction, drain, streaming …): each failed against the first version of
// the relay, or pins a property that had no test.

import (
	"bufio"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"
)

// hijackRaw hijacks an upstream request and writes raw bytes on its
// connection; the connection is kept open (not read) until the test ends.
func hijackRaw(t *testing.T, w http.ResponseWriter, raw string) {
	c, brw, err := w.(http.Hijacker).Hijack()
	if err != nil {
		t.Errorf("hijack: %v", err)
		return
	}
	brw.WriteString(raw)
	brw.Flush()
	t.Cleanup(func() { c.Close() })
}

// --- 1. Smuggling / desync through the upstream pool -----------------------

// TestPool_UnsolicitedUpstreamBytesNotServedToNextClient: an upstream
// that sends more than one response for one request (a HEAD or 304 answered
// with a body, a body longer than its Content-Length, or a hostile/buggy
// intermediary) leaves bytes in the pooled connection's buffer. aliveCheck
// only peeks at the socket, so the connection goes back to the pool and the
// NEXT request - from another container - is answered with those bytes
// while its own answer is queued for the one after it (response queue
// poisoning across clients). net/http's Transport closes such a connection
// ("Unsolicited response received on idle HTTP channel").
func TestPool_UnsolicitedUpstreamBytesNotServedToNextClient(t *testing.T) {
	h := newHarness(t, harnessOpts{handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/one" {
			hijackRaw(t, w, "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\none"+
				"HTTP/1.1 200 OK\r\nContent-Length: 21\r\nX-Smuggled: yes\r\n\r\nsomeone else's answer")
			return
		}
		echoHandler().ServeHTTP(w, r)
	})})
	c1, br1 := h.rawH1(t)
	io.WriteString(c1, "GET /one HTTP/1.1\r\nHost: api.anthropic.com\r\n\r\n")
	if _, body := readResp(t, br1, "GET"); body != "one" {
		t.Fatalf("first response %q", body)
	}
	h.rec.next(t) // the upstream connection is back in the pool

	c2, br2 := h.rawH1(t) // another client
	io.WriteString(c2, "GET /two HTTP/1.1\r\nHost: api.anthropic.com\r\n\r\n")
	resp, body := readResp(t, br2, "GET")
	if resp.Header.Get("X-Smuggled") != "" || body != "hello GET /two" {
		t.Fatalf("second client got %d %q (X-Smuggled=%q): the answer left on the pooled connection by the previous exchange, want its own answer",
			resp.StatusCode, body, resp.Header.Get("X-Smuggled"))
	}
}

// TestRetry_BodylessPOSTNotRetried: a request sent on a reused
// upstream connection that the upstream then closes without answering is
// sent again on a new connection when it has no body - even a POST. The
// upstream may have acted on it (it closed after reading it), so a
// non-idempotent request runs twice. net/http's Transport retries only
// replayable requests (GET/HEAD/OPTIONS/TRACE or Idempotency-Key) once the
// request has been written.
func TestRetry_BodylessPOSTNotRetried(t *testing.T) {
	var charges atomic.Int32
	h := newHarness(t, harnessOpts{handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path == "/charge" {
			charges.Add(1)
			c, _, _ := w.(http.Hijacker).Hijack()
			c.Close() // acted on it, then the connection died
			return
		}
		echoHandler().ServeHTTP(w, r)
	})})
	c, br := h.rawH1(t)
	io.WriteString(c, "GET /warm HTTP/1.1\r\nHost: api.anthropic.com\r\n\r\n")
	readResp(t, br, "GET")
	h.rec.next(t) // pooled
	io.WriteString(c, "POST /charge HTTP/1.1\r\nHost: api.anthropic.com\r\nContent-Length: 0\r\n\r\n")
	resp, _ := readResp(t, br, "POST")
	if n := charges.Load(); n != 1 {
		t.Fatalf("the upstream received the POST %d times (client got %d), want once", n, resp.StatusCode)
	}
}

// TestSmuggling_UnreadBodyNeverParsedAsNextRequest pins: when the relay
// answers without reading the request body (417, 421), the client
// connection is closed, so a request hidden in that body is never relayed
// (with the real credential) as a request of its own.
func TestSmuggling_UnreadBodyNeverParsedAsNextRequest(t *testing.T) {
	var smuggled atomic.Int32
	h := newHarness(t, harnessOpts{handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if strings.HasPrefix(r.URL.Path, "/smuggled") {
			smuggled.Add(1)
		}
		io.Copy(io.Discard, r.Body)
	})})
	inner := "GET /smuggled HTTP/1.1\r\nHost: api.anthropic.com\r\n\r\n"
	for _, tc := range []struct{ name, head string }{
		{"417", "POST / HTTP/1.1\r\nHost: api.anthropic.com\r\nExpect: bogus\r\n"},
		{"421", "POST / HTTP/1.1\r\nHost: evil.example\r\n"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, br := h.rawH1(t)
			io.WriteString(c, fmt.Sprintf("%sContent-Length: %d\r\n\r\n%s", tc.head, len(inner), inner))
			resp, _ := readResp(t, br, "POST")
			if resp.StatusCode < 400 {
				t.Fatalf("status %d", resp.StatusCode)
			}
			c.SetReadDeadline(time.Now().Add(2 * time.Second))
			if b, err := io.ReadAll(br); err != nil || len(b) != 0 {
				t.Errorf("after an unread body: %q %v, want the connection closed", b, err)
			}
		})
	}
	time.Sleep(100 * time.Millisecond)
	if n := smuggled.Load(); n != 0 {
		t.Fatalf("a request hidden in an unread body reached the upstream %d times", n)
	}
}

// TestPool_TotalIdleBounded: the pool caps idle connections per
// host (64) but not in total; with wildcard rules a container can leave
// 64 idle TLS connections (fds, two 16 KiB buffers, TLS state) per distinct
// name for 90s. The transport this replaced had MaxIdleConns 256.
func TestPool_TotalIdleBounded(t *testing.T) {
	p := newH1Pool(nil)
	defer p.closeIdle()
	for i := range 300 {
		a, b := net.Pipe()
		defer b.Close()
		p.put(&upstreamConn{conn: a, br: bufio.NewReader(a), host: fmt.Sprintf("h%d.intercept.test", i)})
	}
	if n := p.idleCount(); n > 256 {
		t.Fatalf("%d idle upstream connections kept, want a total cap (the replaced transport kept at most 256)", n)
	}
}

// --- 2. Credential leakage --------------------------------------------------

// TestRouting_AbsoluteFormToOtherHostRefused pins: an absolute-form
// request-target naming another host (Host header right or wrong) is 421,
// and nothing reaches any upstream.
func TestRouting_AbsoluteFormToOtherHostRefused(t *testing.T) {
	var hits atomic.Int32
	h := newHarness(t, harnessOpts{handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { hits.Add(1) })})
	for _, req := range []string{
		"GET https://evil.example/steal HTTP/1.1\r\nHost: api.anthropic.com\r\n\r\n",
		"GET http://evil.example:443/steal HTTP/1.1\r\nHost: api.anthropic.com\r\n\r\n",
		"GET https://api.anthropic.com@evil.example/steal HTTP/1.1\r\nHost: api.anthropic.com\r\n\r\n",
	} {
		c, br := h.rawH1(t)
		io.WriteString(c, req)
		resp, _ := readResp(t, br, "GET")
		if resp.StatusCode != http.StatusMisdirectedRequest && resp.StatusCode != http.StatusBadRequest {
			t.Errorf("%q: status %d, want 421 (or 400)", req, resp.StatusCode)
		}
	}
	// Absolute form naming the SNI host with a wrong Host header goes to the
	// SNI host, with Host set to it.
	h2 := newHarness(t, harnessOpts{})
	c, br := h2.rawH1(t)
	io.WriteString(c, "GET https://api.anthropic.com/ok HTTP/1.1\r\nHost: evil.example\r\n\r\n")
	if resp, body := readResp(t, br, "GET"); resp.StatusCode != 200 || resp.Header.Get("X-Upstream-Host") != apiHost || body != "hello GET /ok" {
		t.Errorf("absolute form for the SNI host: %d host %q body %q", resp.StatusCode, resp.Header.Get("X-Upstream-Host"), body)
	}
	if n := hits.Load(); n != 0 {
		t.Errorf("upstream got %d requests, want 0", n)
	}
}

// TestRedaction_101Headers: RedactResponse is applied to final
// responses only. A 101's headers reach the client unredacted
// (switchProtocols writes them as received); ReverseProxy, which this
// replaced, ran ModifyResponse (and so RedactResponse) on a 101.
func TestRedaction_101Headers(t *testing.T) {
	h := newHarness(t, harnessOpts{handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hijackRaw(t, w, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n"+
			"X-Echo: "+r.Header.Get("Authorization")+"\r\n\r\n")
	})})
	c, br := h.rawH1(t)
	io.WriteString(c, "GET /ws HTTP/1.1\r\nHost: api.anthropic.com\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
	resp, err := http.ReadResponse(br, &http.Request{Method: "GET"})
	if err != nil {
		t.Fatal(err)
	}
	if resp.StatusCode != 101 {
		t.Fatalf("status %d, want 101", resp.StatusCode)
	}
	if strings.Contains(fmt.Sprint(resp.Header), realToken) {
		t.Fatal("the real credential echoed by the upstream in a 101 header reached the container")
	}
}

// TestRedaction_EarlyHints: a 103's headers are forwarded without
// RedactResponse.
func TestRedaction_EarlyHints(t *testing.T) {
	h := newHarness(t, harnessOpts{handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Echo", r.Header.Get("Authorization"))
		w.WriteHeader(http.StatusEarlyHints)
		w.Header().Del("X-Echo")
		io.WriteString(w, "ok")
	})})
	c, br := h.rawH1(t)
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: api.anthropic.com\r\n\r\n")
	for {
		resp, err := http.ReadResponse(br, &http.Request{Method: "GET"})
		if err != nil {
			t.Fatal(err)
		}
		if strings.Contains(fmt.Sprint(resp.Header), realToken) {
			t.Fatalf("the real credential echoed by the upstream in a %d header reached the container", resp.StatusCode)
		}
		if resp.StatusCode >= 200 {
			io.ReadAll(resp.Body)
			return
		}
	}
}

// TestRedaction_ResponseTrailers: response trailers are written
// to the client as received; RedactResponse never sees them.
func TestRedaction_ResponseTrailers(t *testing.T) {
	h := newHarness(t, harnessOpts{handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Trailer", "X-Echo")
		io.WriteString(w, "body")
		w.(http.Flusher).Flush()
		w.Header().Set("X-Echo", r.Header.Get("Authorization"))
	})})
	c, br := h.rawH1(t)
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: api.anthropic.com\r\n\r\n")
	resp, body := readResp(t, br, "GET")
	if body != "body" {
		t.Fatalf("body %q", body)
	}
	if strings.Contains(fmt.Sprint(resp.Trailer), realToken) {
		t.Fatal("the real credential echoed by the upstream in a response trailer reached the container")
	}
}

// TestRedaction_ReasonPhraseNotEchoed: the relay forwards the upstream's
// reason phrase verbatim (statusLine); RedactResponse only looks at header
// values, so a credential echoed there ("401 invalid token Bearer …")
// reaches the client. net/http's server (the replaced path) always wrote
// its own StatusText.
func TestRedaction_ReasonPhraseNotEchoed(t *testing.T) {
	h := newHarness(t, harnessOpts{handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hijackRaw(t, w, "HTTP/1.1 401 invalid token "+r.Header.Get("Authorization")+"\r\nContent-Length: 0\r\nConnection: close\r\n\r\n")
	})})
	c, br := h.rawH1(t)
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: api.anthropic.com\r\n\r\n")
	line, err := br.ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(line, realToken) {
		t.Fatal("the real credential echoed by the upstream in the reason phrase reached the container")
	}
}

// --- 3. Header injection ----------------------------------------------------

// TestRedaction_ReasonPhraseControlCharsNotForwarded: textproto checks
// header names and values, but the status line's reason phrase is only
// split at LF; a bare CR (or NUL) in it is written verbatim into the
// client's response head, where a lenient parser splits it into a header.
func TestRedaction_ReasonPhraseControlCharsNotForwarded(t *testing.T) {
	h := newHarness(t, harnessOpts{handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hijackRaw(t, w, "HTTP/1.1 200 OK\rSet-Cookie: injected=1\x00\r\nContent-Length: 2\r\nConnection: close\r\n\r\nok")
	})})
	c, br := h.rawH1(t)
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: api.anthropic.com\r\n\r\n")
	line, err := br.ReadString('\n')
	if err != nil {
		t.Fatal(err)
	}
	inner := strings.TrimSuffix(line, "\r\n")
	for _, b := range []byte(inner) {
		if b < 0x20 && b != '\t' || b == 0x7f {
			t.Fatalf("status line %q carries control byte %#x from the upstream", line, b)
		}
	}
}

// --- 4. Resource exhaustion / hangs ----------------------------------------

// TestDrain_DeadlineCutsSilentH1Stream: TestServe_DrainDeadline-
// CutsEndlessStreams for an HTTP/1.1 client. At the drain deadline closeH1
// closes the client's connection, but the relay is blocked reading the
// upstream (copyBody), and nothing closes the upstream connection or
// watches baseCtx; an upstream that sends nothing more (an SSE stream
// between events, a model thinking) keeps Serve from returning forever.
func TestDrain_DeadlineCutsSilentH1Stream(t *testing.T) {
	release := make(chan struct{})
	var once sync.Once
	h := newHarness(t, harnessOpts{noCleanup: true, mutate: func(c *Config) { c.DrainTimeout = 300 * time.Millisecond },
		handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			w.Header().Set("Content-Type", "text/event-stream")
			io.WriteString(w, "data: 1\n\n")
			http.NewResponseController(w).Flush()
			select {
			case <-r.Context().Done():
			case <-release:
			}
		})})
	t.Cleanup(func() { once.Do(func() { close(release) }); h.stop(t) })
	c, br := h.rawH1(t)
	io.WriteString(c, "GET /stream HTTP/1.1\r\nHost: api.anthropic.com\r\n\r\n")
	resp, err := http.ReadResponse(br, &http.Request{Method: "GET"})
	if err != nil {
		t.Fatal(err)
	}
	ev := make([]byte, len("data: 1\n\n"))
	if _, err := io.ReadFull(resp.Body, ev); err != nil {
		t.Fatalf("first event: %v", err)
	}
	if !h.cancelReturnsWithin(5 * time.Second) {
		once.Do(func() { close(release) })
		t.Fatal("Serve had not returned 5s after cancel with a 300ms drain deadline: the relay waits on a silent upstream")
	}
}

// TestDrain_DeadlineCutsPendingUpstream: the same while waiting
// for the response head (ResponseHeaderTimeout defaults to none).
func TestDrain_DeadlineCutsPendingUpstream(t *testing.T) {
	release := make(chan struct{})
	started := make(chan struct{}, 1)
	var once sync.Once
	h := newHarness(t, harnessOpts{noCleanup: true, mutate: func(c *Config) { c.DrainTimeout = 300 * time.Millisecond },
		handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			started <- struct{}{}
			select {
			case <-r.Context().Done():
			case <-release:
			}
		})})
	t.Cleanup(func() { once.Do(func() { close(release) }); h.stop(t) })
	c, _ := h.rawH1(t)
	io.WriteString(c, "GET /think HTTP/1.1\r\nHost: api.anthropic.com\r\n\r\n")
	<-started
	if !h.cancelReturnsWithin(5 * time.Second) {
		once.Do(func() { close(release) })
		t.Fatal("Serve had not returned 5s after cancel with a 300ms drain deadline: the relay waits for an upstream head")
	}
}

// cancelWatch is an upstream whose /v1/messages handler holds the request
// until its context is cancelled (the relay cut the upstream connection)
// or the test ends; /slow-first answers "ok" after more than one
// client-watch interval.
type cancelWatch struct {
	h         *harness
	started   chan struct{}
	cancelled chan struct{}
}

func newCancelWatch(t *testing.T) *cancelWatch {
	cw := &cancelWatch{started: make(chan struct{}, 1), cancelled: make(chan struct{}, 1)}
	release := make(chan struct{})
	cw.h = newHarness(t, harnessOpts{handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		// Read the body as an API does: net/http's server only watches for
		// a closed connection (and cancels the context) once it is read.
		io.ReadAll(r.Body)
		if r.URL.Path == "/slow-first" {
			time.Sleep(clientWatchInterval + 200*time.Millisecond)
			io.WriteString(w, "ok")
			return
		}
		cw.started <- struct{}{}
		select {
		case <-r.Context().Done():
			cw.cancelled <- struct{}{}
		case <-release:
		}
	})})
	t.Cleanup(func() { close(release) })
	return cw
}

// hangUpDuringMessage sends a held request on c, closes c once the upstream
// has it, and fails unless the upstream request is cancelled within 3s.
func (cw *cancelWatch) hangUpDuringMessage(t *testing.T, c net.Conn) {
	t.Helper()
	io.WriteString(c, "POST /v1/messages HTTP/1.1\r\nHost: api.anthropic.com\r\nContent-Length: 2\r\n\r\n{}")
	<-cw.started
	c.Close()
	select {
	case <-cw.cancelled:
	case <-time.After(3 * time.Second):
		t.Fatal("the upstream request was still running 3s after its client went away")
	}
}

// TestCancel_ClientGoneCancelsUpstream: a client that disconnects
// while the upstream is working is not noticed (nothing reads the client
// connection while the relay waits for the upstream), so the upstream
// request keeps running - a long model call keeps spending the operator's
// credential - and the relay goroutine, client slot and upstream connection
// stay held until the upstream answers. ReverseProxy under net/http's
// server cancelled the upstream request when the client went away.
func TestCancel_ClientGoneCancelsUpstream(t *testing.T) {
	cw := newCancelWatch(t)
	c, _ := cw.h.rawH1(t)
	cw.hangUpDuringMessage(t, c)
}

// TestCancel_ClientGoneOnALaterRequestCancelsUpstream: the watch for a
// client hanging up belongs to the connection and is re-armed per request;
// after a first request that waited on the upstream for longer than one
// watch interval, it still cuts the upstream when the client leaves during
// the second one.
func TestCancel_ClientGoneOnALaterRequestCancelsUpstream(t *testing.T) {
	cw := newCancelWatch(t)
	c, br := cw.h.rawH1(t)
	io.WriteString(c, "GET /slow-first HTTP/1.1\r\nHost: api.anthropic.com\r\n\r\n")
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	if body, _ := io.ReadAll(resp.Body); resp.StatusCode != 200 || string(body) != "ok" {
		t.Fatalf("first request: %d %q; want 200 \"ok\" (a client that stayed must not be cut)", resp.StatusCode, body)
	}
	cw.hangUpDuringMessage(t, c)
}

// TestLimits_UpstreamResponseHeadBounded: http.ReadResponse on the
// pooled connection has no size limit (net/http's Transport stops at
// MaxResponseHeaderBytes, 10 MiB by default), so an upstream (any name a
// wildcard rule intercepts) that sends an endless response head grows the
// daemon's memory without bound.
func TestLimits_UpstreamResponseHeadBounded(t *testing.T) {
	const total = 24 << 20
	wrote := make(chan int, 1)
	h := newHarness(t, harnessOpts{handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, brw, err := w.(http.Hijacker).Hijack()
		if err != nil {
			t.Error(err)
			return
		}
		defer c.Close()
		n := 0
		line := "X-Pad: " + strings.Repeat("a", 1000) + "\r\n"
		c.SetWriteDeadline(time.Now().Add(20 * time.Second))
		brw.WriteString("HTTP/1.1 200 OK\r\n")
		for n < total {
			if _, err := brw.WriteString(line); err != nil {
				break
			}
			n += len(line)
		}
		if brw.Flush() != nil {
			n = -n
		}
		wrote <- n
	})})
	c, br := h.rawH1(t)
	c.SetDeadline(time.Now().Add(30 * time.Second))
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: api.anthropic.com\r\n\r\n")
	go func() { http.ReadResponse(br, nil) }()
	select {
	case n := <-wrote:
		if n >= total {
			t.Fatalf("the relay read a %d MiB response head without giving up", n>>20)
		}
	case <-time.After(25 * time.Second):
		t.Fatal("upstream writer stuck")
	}
}

// TestStreaming_ChunkedFlushedWhenNextHeaderPartial: copyBody
// flushes only when the upstream reader has nothing buffered. When an
// upstream write ends in the middle of the next chunk's size line (or
// between a chunk's CR and LF), chunkedReader returns the data it has, a
// byte or two stay buffered, no flush happens, and the next Read blocks: the
// event already received (and the response head) wait in the client buffer
// until the upstream's next write. ReverseProxy flushed every write of a
// chunked response.
func TestStreaming_ChunkedFlushedWhenNextHeaderPartial(t *testing.T) {
	release := make(chan struct{})
	h := newHarness(t, harnessOpts{handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		c, brw, err := w.(http.Hijacker).Hijack()
		if err != nil {
			t.Error(err)
			return
		}
		defer c.Close()
		brw.WriteString("HTTP/1.1 200 OK\r\nContent-Type: text/event-stream\r\nTransfer-Encoding: chunked\r\n\r\n6\r\nevent1\r\n1")
		brw.Flush()
		<-release
		brw.WriteString("\r\nX\r\n0\r\n\r\n")
		brw.Flush()
	})})
	defer close(release)
	c, br := h.rawH1(t)
	io.WriteString(c, "GET /stream HTTP/1.1\r\nHost: api.anthropic.com\r\n\r\n")
	c.SetReadDeadline(time.Now().Add(2 * time.Second))
	resp, err := http.ReadResponse(br, &http.Request{Method: "GET"})
	if err != nil {
		t.Fatalf("no response head within 2s: %v", err)
	}
	buf := make([]byte, 6)
	if _, err := io.ReadFull(resp.Body, buf); err != nil || string(buf) != "event1" {
		t.Fatalf("first event not delivered within 2s: %q %v", buf, err)
	}
}

// TestStreaming_HeadFlushedBeforeFirstByte: respond writes the
// response head into the client buffer and flushes only after body bytes
// arrive; a response whose upstream sends its head and then waits (an SSE
// stream before its first event, a long poll) leaves the client without
// even the status line. ReverseProxy flushed the head at once for
// streaming responses (FlushInterval -1 arms an immediate flush).
func TestStreaming_HeadFlushedBeforeFirstByte(t *testing.T) {
	release := make(chan struct{})
	h := newHarness(t, harnessOpts{handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		w.WriteHeader(200)
		http.NewResponseController(w).Flush()
		select {
		case <-r.Context().Done():
		case <-release:
		}
	})})
	defer close(release)
	c, br := h.rawH1(t)
	io.WriteString(c, "GET /stream HTTP/1.1\r\nHost: api.anthropic.com\r\n\r\n")
	c.SetReadDeadline(time.Now().Add(2 * time.Second))
	if _, err := http.ReadResponse(br, &http.Request{Method: "GET"}); err != nil {
		t.Fatalf("the upstream's response head (sent and flushed) did not reach the client within 2s: %v", err)
	}
}

// cancelReturnsWithin cancels Serve and reports whether it returned within
// d (its result stays available to stop).
func (h *harness) cancelReturnsWithin(d time.Duration) bool {
	h.cancel()
	select {
	case err := <-h.done:
		h.done <- err
		return true
	case <-time.After(d):
		return false
	}
}
