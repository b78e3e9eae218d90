package tlsmitm

import (
	"bufio"
	"crypto/tls"
	"fmt"
	"io"
	"log/slog"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"strings"
	"testing"
	"time"
)

// rawH1 opens an HTTP/1.1 TLS connection to the proxy for api.anthropic.com.
func (h *harness) rawH1(t *testing.T) (*tls.Conn, *bufio.Reader) {
	t.Helper()
	c, err := tls.Dial("tcp", h.addr, &tls.Config{ServerName: apiHost, RootCAs: h.pool, NextProtos: []string{"http/1.1"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	c.SetDeadline(time.Now().Add(10 * time.Second))
	return c, bufio.NewReader(c)
}

func readResp(t *testing.T, br *bufio.Reader, method string) (*http.Response, string) {
	t.Helper()
	resp, err := http.ReadResponse(br, &http.Request{Method: method})
	if err != nil {
		t.Fatalf("reading response: %v", err)
	}
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatalf("reading body: %v", err)
	}
	return resp, string(b)
}

// TestRelay_StalePooledConnectionIsRetried: the upstream closes its idle
// connections (as servers do after their keep-alive timeout); the next
// request, with or without a body, must not fail.
func TestRelay_StalePooledConnectionIsRetried(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	c := h.client(false)
	for i, method := range []string{"GET", "POST", "GET"} {
		var reqBody io.Reader
		if method == "POST" {
			reqBody = strings.NewReader(strings.Repeat("b", 10))
		}
		req, _ := http.NewRequest(method, "https://"+apiHost+"/v1/x", reqBody)
		resp, err := c.Do(req)
		if err != nil {
			t.Fatalf("request %d (%s): %v", i, method, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.HasPrefix(string(body), "hello "+method) {
			t.Fatalf("request %d (%s): %d %q", i, method, resp.StatusCode, body)
		}
		if ev := h.rec.next(t); ev.Status != 200 || ev.Err != "" {
			t.Fatalf("request %d audit: %+v", i, ev)
		}
		// Every upstream connection is now idle in the pool; close them
		// all from the upstream's side.
		h.up.CloseClientConnections()
		time.Sleep(20 * time.Millisecond) // the FIN reaches the proxy's socket
	}
}

// TestRelay_ExpectContinue: the relay answers 100-continue itself and the
// upstream gets the body without the Expect header.
func TestRelay_ExpectContinue(t *testing.T) {
	h := newHarness(t, harnessOpts{handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "%d %q", len(b), r.Header.Get("Expect"))
	})})
	c, br := h.rawH1(t)
	io.WriteString(c, "POST /v1/messages HTTP/1.1\r\nHost: api.anthropic.com\r\nContent-Length: 5\r\nExpect: 100-continue\r\n\r\n")
	resp, _ := readResp(t, br, "POST")
	if resp.StatusCode != 100 {
		t.Fatalf("first response %d, want 100 Continue", resp.StatusCode)
	}
	io.WriteString(c, "hello")
	resp, body := readResp(t, br, "POST")
	if resp.StatusCode != 200 || body != `5 ""` {
		t.Fatalf("response %d %q, want 200 with the body and no Expect upstream", resp.StatusCode, body)
	}

	io.WriteString(c, "POST / HTTP/1.1\r\nHost: api.anthropic.com\r\nContent-Length: 5\r\nExpect: something-else\r\n\r\n")
	if resp, _ := readResp(t, br, "POST"); resp.StatusCode != http.StatusExpectationFailed {
		t.Fatalf("unknown Expect: %d, want 417", resp.StatusCode)
	}
}

// TestRelay_ChunkedBodiesAndTrailers: a request body of unknown length
// arrives whole; a response of unknown length reaches an HTTP/1.1 client
// chunked, with its trailers.
func TestRelay_ChunkedBodiesAndTrailers(t *testing.T) {
	h := newHarness(t, harnessOpts{handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		w.Header().Set("Trailer", "X-Checksum")
		w.WriteHeader(200)
		fmt.Fprintf(w, "got %d bytes, te %v", len(b), r.TransferEncoding)
		w.(http.Flusher).Flush()
		w.Header().Set("X-Checksum", "abc")
	})})
	c, br := h.rawH1(t)
	io.WriteString(c, "POST /up HTTP/1.1\r\nHost: api.anthropic.com\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n6\r\n world\r\n0\r\n\r\n")
	resp, body := readResp(t, br, "POST")
	if body != "got 11 bytes, te [chunked]" {
		t.Errorf("body %q", body)
	}
	if len(resp.TransferEncoding) != 1 || resp.TransferEncoding[0] != "chunked" || resp.Trailer.Get("X-Checksum") != "abc" {
		t.Errorf("transfer encoding %v, trailer %v; want chunked with X-Checksum", resp.TransferEncoding, resp.Trailer)
	}
	if ev := h.rec.next(t); ev.BytesIn != 11 || ev.Status != 200 {
		t.Errorf("audit %+v, want bytes_in 11", ev)
	}
}

// TestRelay_HTTP10AndPipelining: an HTTP/1.0 client gets its answer and a
// closed connection; pipelined HTTP/1.1 requests are answered in order.
func TestRelay_HTTP10AndPipelining(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	c, br := h.rawH1(t)
	io.WriteString(c, "GET /a HTTP/1.1\r\nHost: api.anthropic.com\r\n\r\nGET /b HTTP/1.1\r\nHost: api.anthropic.com\r\n\r\n")
	for _, p := range []string{"/a", "/b"} {
		if _, body := readResp(t, br, "GET"); body != "hello GET "+p {
			t.Fatalf("pipelined %s: %q", p, body)
		}
	}
	c10, br10 := h.rawH1(t)
	io.WriteString(c10, "GET /old HTTP/1.0\r\nHost: api.anthropic.com\r\n\r\n")
	resp, body := readResp(t, br10, "GET")
	if body != "hello GET /old" || !resp.Close {
		t.Fatalf("HTTP/1.0: %q close=%v", body, resp.Close)
	}
	if _, err := br10.ReadByte(); err != io.EOF {
		t.Errorf("after an HTTP/1.0 exchange: %v, want EOF", err)
	}
}

// TestRelay_IdleConnectionsShareBuffersWithoutMixingThem: an idle
// keep-alive connection gives its buffers back to a pool and takes some
// again for its next request; connections taking turns (so the same
// buffers pass between them) each get their own answers, a request split
// after its first byte (the byte read while no buffer is held) included.
func TestRelay_IdleConnectionsShareBuffersWithoutMixingThem(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	type client struct {
		c  *tls.Conn
		br *bufio.Reader
	}
	var cs []client
	for range 3 {
		c, br := h.rawH1(t)
		cs = append(cs, client{c, br})
	}
	for round := range 20 {
		for i, cl := range cs {
			path := fmt.Sprintf("/c%d/r%d", i, round)
			req := "POST " + path + " HTTP/1.1\r\nHost: api.anthropic.com\r\nContent-Length: 5\r\n\r\nhello"
			if round%2 == 1 { // the first byte alone, then the rest
				io.WriteString(cl.c, req[:1])
				time.Sleep(time.Millisecond)
				req = req[1:]
			}
			io.WriteString(cl.c, req)
			if _, body := readResp(t, cl.br, "POST"); body != "hello POST "+path {
				t.Fatalf("connection %d, round %d: %q, want its own answer", i, round, body)
			}
		}
	}
}

// TestRelay_MalformedRequests: bad heads get net/http's answers and a
// closed connection; the daemon keeps serving.
func TestRelay_MalformedRequests(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	for _, tc := range []struct {
		name, head string
		want       int
	}{
		{"no Host", "GET / HTTP/1.1\r\n\r\n", 400},
		{"two Hosts", "GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", 400},
		{"bad header name", "GET / HTTP/1.1\r\nHost: api.anthropic.com\r\nBad Name: x\r\n\r\n", 400},
		{"bad header value", "GET / HTTP/1.1\r\nHost: api.anthropic.com\r\nX: a\x00b\r\n\r\n", 400},
		{"CL and garbage", "POST / HTTP/1.1\r\nHost: api.anthropic.com\r\nContent-Length: x\r\n\r\n", 400},
		{"two lengths", "POST / HTTP/1.1\r\nHost: api.anthropic.com\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n", 400},
		{"unknown TE", "POST / HTTP/1.1\r\nHost: api.anthropic.com\r\nTransfer-Encoding: gzip\r\n\r\n", 400},
		{"HTTP/1.5", "GET / HTTP/1.5\r\nHost: api.anthropic.com\r\n\r\n", 505},
		{"CONNECT", "CONNECT api.anthropic.com:443 HTTP/1.1\r\nHost: api.anthropic.com\r\n\r\n", 400},
		{"not HTTP", "\x16\x03\x01hello\r\n\r\n", 400},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c, br := h.rawH1(t)
			io.WriteString(c, tc.head)
			resp, _ := readResp(t, br, "GET")
			if resp.StatusCode != tc.want || !resp.Close {
				t.Fatalf("%d close=%v, want %d and close", resp.StatusCode, resp.Close, tc.want)
			}
		})
	}
	resp, err := h.client(false).Get("https://" + apiHost + "/still-up")
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("after malformed requests: %v %v", resp, err)
	}
	resp.Body.Close()
}

// TestRelay_UpstreamAnswersBeforeReadingTheBody: an upstream that refuses
// a large upload at once (413) reaches the client; nothing hangs.
func TestRelay_UpstreamAnswersBeforeReadingTheBody(t *testing.T) {
	h := newHarness(t, harnessOpts{handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Connection", "close")
		http.Error(w, "too large", http.StatusRequestEntityTooLarge)
	})})
	big := strings.NewReader(strings.Repeat("x", 32<<20))
	req, _ := http.NewRequest("POST", "https://"+apiHost+"/upload", big)
	done := make(chan struct{})
	go func() {
		defer close(done)
		resp, err := h.client(false).Do(req)
		if err != nil {
			// The client may see its upload cut instead of the 413.
			t.Logf("client: %v", err)
			return
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusRequestEntityTooLarge {
			t.Errorf("status %d, want 413", resp.StatusCode)
		}
	}()
	select {
	case <-done:
	case <-time.After(20 * time.Second):
		t.Fatal("request still running after 20s")
	}
	if ev := h.rec.next(t); ev.Status != http.StatusRequestEntityTooLarge && ev.Err == "" {
		t.Errorf("audit %+v, want 413 or an error", ev)
	}
}

// TestRelay_ClientGoneMidUpload is audited as 499 and the upstream sees a
// failed request, never a complete truncated body.
func TestRelay_ClientGoneMidUpload(t *testing.T) {
	got := make(chan string, 1)
	h := newHarness(t, harnessOpts{handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		got <- fmt.Sprintf("%d %v", len(b), err != nil)
	})})
	c, _ := h.rawH1(t)
	io.WriteString(c, "POST /up HTTP/1.1\r\nHost: api.anthropic.com\r\nContent-Length: 100000\r\n\r\n"+strings.Repeat("x", 5000))
	time.Sleep(100 * time.Millisecond)
	c.Close()
	select {
	case s := <-got:
		if !strings.HasSuffix(s, "true") {
			t.Errorf("upstream read %s, want an error (truncated body)", s)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("upstream handler never finished")
	}
	if ev := h.rec.next(t); ev.Status != statusClientClosed {
		t.Errorf("audit %+v, want status 499", ev)
	}
}

// TestRelay_HeadKeepsContentLength: a HEAD answer carries the entity's
// Content-Length and no body, and the connection stays usable.
func TestRelay_HeadKeepsContentLength(t *testing.T) {
	h := newHarness(t, harnessOpts{handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", "1234")
		if r.Method != "HEAD" {
			w.Write(make([]byte, 1234))
		}
	})})
	c, br := h.rawH1(t)
	io.WriteString(c, "HEAD /f HTTP/1.1\r\nHost: api.anthropic.com\r\n\r\nGET /f HTTP/1.1\r\nHost: api.anthropic.com\r\n\r\n")
	resp, body := readResp(t, br, "HEAD")
	if resp.ContentLength != 1234 || body != "" {
		t.Fatalf("HEAD: length %d body %q", resp.ContentLength, body)
	}
	if _, body := readResp(t, br, "GET"); len(body) != 1234 {
		t.Fatalf("GET after HEAD: %d bytes", len(body))
	}
}

// TestRelay_IdleConnectionClosedOnDrain: a kept-alive connection waiting
// for its next request does not hold up a graceful stop.
func TestRelay_IdleConnectionClosedOnDrain(t *testing.T) {
	h := newHarness(t, harnessOpts{noCleanup: true})
	c, br := h.rawH1(t)
	io.WriteString(c, "GET / HTTP/1.1\r\nHost: api.anthropic.com\r\n\r\n")
	readResp(t, br, "GET")
	start := time.Now()
	h.stop(t)
	if d := time.Since(start); d > time.Second {
		t.Errorf("stop took %v with one idle connection, want well under the 2s drain deadline", d)
	}
	if _, err := br.ReadByte(); err == nil {
		t.Error("idle connection still open after the drain")
	}
}

// newlineInjector sets a credential holding a line break.
type newlineInjector struct{ fakeInjector }

func (newlineInjector) Apply(req *http.Request, host string, c Client) (string, bool, error) {
	req.Header.Set("Authorization", "Bearer x\r\nX-Smuggled: 1")
	return "anthropic", true, nil
}

// TestRelay_InjectedLineBreakFailsTheRequest: the relay writes headers
// verbatim, so a credential value with CR/LF must not split the head.
func TestRelay_InjectedLineBreakFailsTheRequest(t *testing.T) {
	seen := make(chan string, 1)
	h := newHarness(t, harnessOpts{
		handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { seen <- r.Header.Get("X-Smuggled") }),
		mutate:  func(c *Config) { c.Injector = newlineInjector{} },
	})
	resp, err := h.client(false).Get("https://" + apiHost + "/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusInternalServerError {
		t.Errorf("status %d, want 500", resp.StatusCode)
	}
	select {
	case v := <-seen:
		t.Fatalf("the request reached the upstream (X-Smuggled %q)", v)
	default:
	}
}

// FuzzRelayRequest writes arbitrary bytes as the plaintext of an
// intercepted HTTP/1.1 connection: whatever they are, the relay answers or
// closes, never panics, and keeps serving the next connection.
//
//	go test -run '^$' -fuzz FuzzRelayRequest -fuzztime 1m ./tlsmitm/
func FuzzRelayRequest(f *testing.F) {
	for _, seed := range []string{
		"GET /v1/models HTTP/1.1\r\nHost: api.anthropic.com\r\n\r\n",
		"POST /v1/messages HTTP/1.1\r\nHost: api.anthropic.com\r\nContent-Length: 2\r\n\r\n{}",
		"POST / HTTP/1.1\r\nHost: api.anthropic.com\r\nTransfer-Encoding: chunked\r\n\r\n2\r\n{}\r\n0\r\nX-T: 1\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: api.anthropic.com\r\nExpect: 100-continue\r\nContent-Length: 1\r\n\r\nx",
		"GET / HTTP/1.1\r\nHost: api.anthropic.com\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n",
		"GET / HTTP/1.0\r\n\r\nGET / HTTP/1.1\r\nHost: api.anthropic.com\r\n\r\n",
		"GET http://api.anthropic.com/abs HTTP/1.1\r\nHost: other\r\n\r\n",
		"HEAD / HTTP/1.1\r\nHost: api.anthropic.com:443\r\nConnection: close, X-Foo\r\nX-Foo: 1\r\n\r\n",
		"POST / HTTP/1.1\r\nHost: api.anthropic.com\r\nContent-Length: 3\r\nTransfer-Encoding: chunked\r\n\r\n0\r\n\r\n",
		"GET / HTTP/1.1\r\nHost: api.anthropic.com\r\n Folded: x\r\n\r\n",
		"\r\n\r\n\x00\xff",
	} {
		f.Add([]byte(seed))
	}
	h := newHarness(f, harnessOpts{mutate: func(c *Config) {
		c.Logger = nil
		c.ReadHeaderTimeout = 200 * time.Millisecond
		c.MaxConnsPerSource = 1 << 20
	}})
	cfg := &tls.Config{ServerName: apiHost, RootCAs: h.pool, NextProtos: []string{"http/1.1"}, ClientSessionCache: tls.NewLRUClientSessionCache(8)}
	f.Fuzz(func(t *testing.T, in []byte) {
		c, err := tls.Dial("tcp", h.addr, cfg)
		if err != nil {
			t.Fatalf("dial: %v", err)
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(5 * time.Second))
		c.Write(in)
		c.CloseWrite()
		if _, err := io.Copy(io.Discard, c); err != nil && !strings.Contains(err.Error(), "reset") {
			t.Fatalf("the relay neither answered nor closed within 5s: %v", err)
		}
		if p := h.srv.Stats().Panics; p != 0 {
			t.Fatalf("%d panics serving %q", p, in)
		}
	})
}

// TestIntercept_H2InterimAndTrailersRedacted: on the h2 path too, a
// credential the upstream echoes in a 103 or in a trailer is redacted.
func TestIntercept_H2InterimAndTrailersRedacted(t *testing.T) {
	h := newHarness(t, harnessOpts{handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("X-Echo", r.Header.Get("Authorization"))
		w.WriteHeader(http.StatusEarlyHints)
		w.Header().Del("X-Echo")
		w.Header().Set("Trailer", "X-Echo-Trailer")
		io.WriteString(w, "body")
		w.(http.Flusher).Flush()
		w.Header().Set("X-Echo-Trailer", r.Header.Get("Authorization"))
	})})
	var interim []string
	req, _ := http.NewRequest("GET", "https://"+apiHost+"/", nil)
	req = req.WithContext(httptrace.WithClientTrace(req.Context(), &httptrace.ClientTrace{
		Got1xxResponse: func(code int, hdr textproto.MIMEHeader) error {
			interim = append(interim, fmt.Sprint(code, hdr))
			return nil
		}}))
	resp, err := h.client(true).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.ProtoMajor != 2 || string(body) != "body" {
		t.Fatalf("%s %q, want h2 and the body", resp.Proto, body)
	}
	if len(interim) == 0 {
		t.Fatal("no 103 reached the client; the test proves nothing")
	}
	if got := fmt.Sprint(interim, resp.Trailer); strings.Contains(got, realToken) {
		t.Fatalf("the real credential reached the client in a 1xx or a trailer: %s", got)
	}
}

// TestClientBuffers_UseAfterPoolingFailsLoudly: a client buffer back in its
// pool reads and writes nothing of any connection; a use is a panic naming
// the bug.
func TestClientBuffers_UseAfterPoolingFailsLoudly(t *testing.T) {
	br, bw := bufio.NewReaderSize(strings.NewReader("GET / HTTP/1.1\r\n"), 4<<10), bufio.NewWriterSize(io.Discard, 4<<10)
	br.Peek(4)
	bw.WriteString("secret")
	putClientBuffers(br, bw)
	for name, use := range map[string]func(){
		"read":  func() { br.ReadByte() },
		"flush": func() { bw.WriteString("x"); bw.Flush() },
	} {
		func() {
			defer func() {
				if v := recover(); v != errPooledBuffer {
					t.Errorf("%s after pooling: recovered %v, want errPooledBuffer", name, v)
				}
			}()
			use()
		}()
	}
}

// TestStreaming_RequestChunkFlushedWhenNextHeaderPartial: a chunked request
// body whose next chunk header has arrived only in part still has its
// previous chunk sent upstream (a client that waits for an answer to what
// it sent so far is not left hanging until BodyIdleTimeout).
func TestStreaming_RequestChunkFlushedWhenNextHeaderPartial(t *testing.T) {
	got := make(chan string, 1)
	h := newHarness(t, harnessOpts{handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		buf := make([]byte, 5)
		io.ReadFull(r.Body, buf)
		got <- string(buf)
		io.Copy(io.Discard, r.Body)
	})})
	c, br := h.rawH1(t)
	io.WriteString(c, "POST /u HTTP/1.1\r\nHost: api.anthropic.com\r\nTransfer-Encoding: chunked\r\n\r\n5\r\nhello\r\n5\r")
	select {
	case first := <-got:
		if first != "hello" {
			t.Errorf("upstream read %q, want the first chunk", first)
		}
	case <-time.After(5 * time.Second):
		t.Error("the first chunk did not reach the upstream while the next chunk header was partial")
	}
	io.WriteString(c, "\nworld\r\n0\r\n\r\n")
	if resp, _ := readResp(t, br, "POST"); resp.StatusCode != http.StatusOK {
		t.Errorf("status %d, want 200", resp.StatusCode)
	}
}

// bodyPanicInjector is fakeInjector, except that it gives every request a
// body whose reads panic (on the proxy's body sender, not the client).
type bodyPanicInjector struct{ fakeInjector }

func (i bodyPanicInjector) Apply(req *http.Request, host string, c Client) (string, bool, error) {
	req.Body = io.NopCloser(panickingReader{})
	return i.fakeInjector.Apply(req, host, c)
}

type panickingReader struct{}

func (panickingReader) Read([]byte) (int, error) { panic("body reader exploded") }

// TestPanic_InTheRequestBodySenderIsCountedAndLogged: a panic on the
// goroutine that sends a request body upstream fails that request, and is
// counted and logged with its stack like any other.
func TestPanic_InTheRequestBodySenderIsCountedAndLogged(t *testing.T) {
	logs := &syncBuffer{}
	h := newHarness(t, harnessOpts{mutate: func(c *Config) {
		c.Injector = bodyPanicInjector{}
		c.EventLogger = slog.New(slog.NewTextHandler(logs, nil))
	}})
	c, br := h.rawH1(t)
	io.WriteString(c, "POST /u HTTP/1.1\r\nHost: api.anthropic.com\r\nContent-Length: 5\r\n\r\nhello")
	if resp, _ := readResp(t, br, "POST"); resp.StatusCode < 500 {
		t.Errorf("status %d, want the request failed", resp.StatusCode)
	}
	waitFor(t, 10*time.Second, "the panic counted", func() bool { return h.srv.Stats().Panics == 1 })
	if s := logs.String(); !strings.Contains(s, "panic sending an intercepted request body") || !strings.Contains(s, "stack=") {
		t.Errorf("log = %q, want the panic with its stack", s)
	}
}
