package tlsmitm

// Review of a426144 (h2 clients relayed over the HTTP/1.1 upstream pool):
// attacks on the h2 → HTTP/1.1 translation. The upstream here is a raw TLS
// listener that records every request head exactly as it arrived on the
// wire; the client is raw h2 framing where Go's own h2 client would refuse
// to send what an attacker can.

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/clauderon/clauderond/tlsmitm/tlstest"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// rawUpstream is a TLS listener for apiHost that reads HTTP/1.1 request
// heads and answers each with respond (the head as received, the
// connection's buffered reader for the body, and the writer).
type rawUpstream struct {
	ln    net.Listener
	ca    *tlstest.CA
	mu    sync.Mutex
	heads []string
}

func newRawUpstream(t *testing.T, respond func(head string, br *bufio.Reader, w io.Writer) bool) *rawUpstream {
	t.Helper()
	ca := tlstest.NewCA(t)
	ln, err := tls.Listen("tcp", "127.0.0.1:0", &tls.Config{
		Certificates: []tls.Certificate{ca.Leaf(t, apiHost)},
		NextProtos:   []string{"http/1.1"},
	})
	if err != nil {
		t.Fatal(err)
	}
	u := &rawUpstream{ln: ln, ca: ca}
	t.Cleanup(func() { ln.Close() })
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				br := bufio.NewReader(c)
				for {
					var head strings.Builder
					for {
						line, err := br.ReadString('\n')
						if err != nil {
							return
						}
						head.WriteString(line)
						if line == "\r\n" {
							break
						}
					}
					u.mu.Lock()
					u.heads = append(u.heads, head.String())
					u.mu.Unlock()
					if !respond(head.String(), br, c) {
						return
					}
				}
			}()
		}
	}()
	return u
}

func (u *rawUpstream) allHeads() []string {
	u.mu.Lock()
	defer u.mu.Unlock()
	return append([]string(nil), u.heads...)
}

// harnessWith starts the terminator with apiHost pointed at u.
func harnessWith(t *testing.T, u *rawUpstream, mutate func(*Config)) *harness {
	return newHarness(t, harnessOpts{mutate: func(c *Config) {
		for i := range c.Upstreams {
			if c.Upstreams[i].Host == apiHost {
				c.Upstreams[i].Address = u.ln.Addr().String()
				c.Upstreams[i].RootCAs = u.ca.Pool()
			}
		}
		if mutate != nil {
			mutate(c)
		}
	}})
}

// okResponse answers every request with a short 200 (body read when framed
// by Content-Length).
func okResponse(head string, br *bufio.Reader, w io.Writer) bool {
	io.WriteString(w, "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\nok")
	return true
}

// rawH2 is a raw h2 client connection to the terminator.
type rawH2 struct {
	t    *testing.T
	c    net.Conn
	fr   *http2.Framer
	hbuf bytes.Buffer
	enc  *hpack.Encoder
	next uint32
}

func dialRawH2(t *testing.T, h *harness) *rawH2 {
	t.Helper()
	c, err := tls.Dial("tcp", h.addr, &tls.Config{ServerName: apiHost, RootCAs: h.pool, NextProtos: []string{"h2"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if p := c.ConnectionState().NegotiatedProtocol; p != "h2" {
		t.Fatalf("negotiated %q", p)
	}
	return startRawH2(t, c)
}

// startRawH2 sends the client preface and SETTINGS on c.
func startRawH2(t *testing.T, c net.Conn) *rawH2 {
	io.WriteString(c, http2.ClientPreface)
	fr := http2.NewFramer(c, c)
	fr.ReadMetaHeaders = hpack.NewDecoder(65536, nil)
	fr.WriteSettings()
	r := &rawH2{t: t, c: c, fr: fr, next: 1}
	r.enc = hpack.NewEncoder(&r.hbuf)
	return r
}

// mustGet sends GET path and fails the test unless it is answered 200.
func (r *rawH2) mustGet(path string) {
	r.t.Helper()
	if resp := r.read(r.send(reqFields("GET", path), true), 3*time.Second); resp.status != "200" {
		r.t.Fatalf("GET %s: %+v", path, resp)
	}
}

// send opens a stream with fields (pseudo-headers first, in order) and
// returns its id.
func (r *rawH2) send(fields [][2]string, endStream bool) uint32 {
	r.hbuf.Reset()
	for _, f := range fields {
		r.enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
	}
	id := r.next
	r.next += 2
	if err := r.fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: r.hbuf.Bytes(), EndHeaders: true, EndStream: endStream}); err != nil {
		r.t.Fatal(err)
	}
	return id
}

type rawResp struct {
	status  string
	header  http.Header
	body    string
	reset   bool // RST_STREAM
	goaway  bool
	timeout bool
}

// read reads frames until stream id ends (or d passes).
func (r *rawH2) read(id uint32, d time.Duration) rawResp {
	out := rawResp{header: make(http.Header)}
	var body bytes.Buffer
	end := r.nextFrame(d, func(f http2.Frame) bool {
		switch f := f.(type) {
		case *http2.GoAwayFrame:
			out.goaway = true
		case *http2.MetaHeadersFrame:
			if f.StreamID != id {
				return false
			}
			for _, hf := range f.Fields {
				if hf.Name == ":status" {
					out.status = hf.Value
				} else {
					out.header.Add(hf.Name, hf.Value)
				}
			}
			return f.StreamEnded()
		case *http2.DataFrame:
			if f.StreamID != id {
				return false
			}
			body.Write(f.Data())
			if n := len(f.Data()); n > 0 {
				r.fr.WriteWindowUpdate(0, uint32(n))
				r.fr.WriteWindowUpdate(id, uint32(n))
			}
			return f.StreamEnded()
		case *http2.RSTStreamFrame:
			out.reset = f.StreamID == id
			return out.reset
		}
		return false
	})
	out.timeout = end == nil
	out.body = body.String()
	return out
}

func reqFields(method, path string, extra ...[2]string) [][2]string {
	f := [][2]string{{":method", method}, {":scheme", "https"}, {":authority", apiHost}, {":path", path}}
	return append(f, extra...)
}

// TestH2Attack_HostHeaderNotForwarded: an h2 request may carry a regular
// "host" field besides :authority (net/http's h2 server keeps it in
// r.Header). The 421 check compares :authority with the SNI name; the relay
// then writes r.Header verbatim after its own "Host: <sni>", so the
// upstream receives a second Host line chosen by the container, next to the
// injected credential. Before a426144, http.Transport never wrote a Host
// from the header map (reqWriteExcludeHeader; the h2 transport skips it
// too).
func TestH2Attack_HostHeaderNotForwarded(t *testing.T) {
	for _, tc := range []struct {
		name   string
		fields [][2]string
	}{
		{"host differs from :authority", reqFields("GET", "/v1/models", [2]string{"host", "evil.example"})},
		// RFC 9113 8.3.1 allows Host instead of :authority (intermediaries
		// converting from HTTP/1.1 do this); a Go upstream then refuses the
		// duplicate with 400 "too many Host headers".
		{"host instead of :authority", [][2]string{{":method", "GET"}, {":scheme", "https"}, {":path", "/v1/models"}, {"host", apiHost}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			u := newRawUpstream(t, okResponse)
			h := harnessWith(t, u, nil)
			c := dialRawH2(t, h)
			resp := c.read(c.send(tc.fields, true), 5*time.Second)
			heads := u.allHeads()
			if len(heads) == 0 {
				t.Logf("refused before the upstream: %+v", resp)
				return
			}
			var hosts []string
			for _, line := range strings.Split(heads[0], "\r\n") {
				if k, v, ok := strings.Cut(line, ":"); ok && strings.EqualFold(k, "host") {
					hosts = append(hosts, strings.TrimSpace(v))
				}
			}
			if len(hosts) != 1 || hosts[0] != apiHost {
				t.Errorf("upstream request carries Host lines %q (with the injected credential); want exactly [%q]", hosts, apiHost)
			}
		})
	}
}

// lenientTraceUpstream parses the request line on whitespace-delimited
// words, as RFC 9112 section 3 allows a recipient to ("treat any form of
// whitespace as the SP separator while ignoring preceding or trailing
// whitespace"), and answers TRACE by echoing the request (RFC 9110 9.3.8;
// Apache's default TraceEnable On).
func lenientTraceUpstream(head string, br *bufio.Reader, w io.Writer) bool {
	line, _, _ := strings.Cut(head, "\r\n")
	words := strings.Fields(line)
	if len(words) == 3 && words[0] == "TRACE" {
		fmt.Fprintf(w, "HTTP/1.1 200 OK\r\nContent-Type: message/http\r\nContent-Length: %d\r\n\r\n%s", len(head), head)
		return true
	}
	return okResponse(head, br, w)
}

// TestH2Attack_MethodMustBeAToken: net/http's h2 server does not validate
// :method (HTTP/1's ReadRequest does, and http.Transport refused such a
// method with "invalid method" on the old path). The relay writes it into
// the upstream request line as is. "TRACE " (or "TRACE\t") is not
// refusedMethod's TRACE, nor the injector's strings.ToUpper(method) ==
// "TRACE", so the credential is injected; an upstream that reads the line
// on whitespace (allowed by RFC 9112) runs TRACE and echoes the injected
// Authorization back into the container. The same trick steps around
// method-specific deny entries ("DELETE /repos/*" does not match
// "DELETE ").
func TestH2Attack_MethodMustBeAToken(t *testing.T) {
	for _, method := range []string{"TRACE ", "TRACE\t", "GET /v1/other"} {
		t.Run(fmt.Sprintf("%q", method), func(t *testing.T) {
			u := newRawUpstream(t, lenientTraceUpstream)
			h := harnessWith(t, u, nil)
			c := dialRawH2(t, h)
			resp := c.read(c.send(reqFields(method, "/v1/messages"), true), 5*time.Second)
			if strings.Contains(resp.body, realToken) {
				t.Errorf(":method %q: the injected credential came back to the client in a %s response", method, resp.status)
			}
			for _, hd := range u.allHeads() {
				line, _, _ := strings.Cut(hd, "\r\n")
				if parts := strings.Split(line, " "); len(parts) != 3 || strings.ContainsAny(line, "\t") {
					t.Errorf(":method %q: upstream received the malformed request line %q; want the request refused (400/405) before the upstream", method, line)
				}
			}
		})
	}
}

// TestH2Attack_PathRetargetsUpstreamHost: net/http's h2 server accepts any
// :path url.ParseRequestURI accepts, including "scheme:opaque". The relay
// writes URL.RequestURI(), which for an opaque URL is the opaque part
// verbatim: ":path: a:https://evil.example/x" goes upstream as
// "GET https://evil.example/x HTTP/1.1". An origin server MUST take the
// absolute-form's authority over the Host header (RFC 9112 3.2.2), so the
// request and the injected credential are served by another virtual host
// than the SNI name, past the 421 check. This test's upstream is the
// harness's Go server, which does exactly that (r.Host = "evil.example").
// The old path's h2 transport refused such a :path ("invalid request
// :path").
func TestH2Attack_PathRetargetsUpstreamHost(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	c := dialRawH2(t, h)
	resp := c.read(c.send(reqFields("GET", "a:https://evil.example/steal"), true), 5*time.Second)
	if got := resp.header.Get("x-upstream-host"); got != "" && got != apiHost {
		t.Errorf("SNI %s, :authority %s, yet the upstream served Host %q (credential injected: %s, status %s)",
			apiHost, apiHost, got, resp.header.Get("x-auth-is-real"), resp.status)
	}
}

// TestH2Attack_PathWhitespaceInRequestLine: spaces in :path reach the
// upstream request line: in the query ("/q?a b"), or anywhere in an opaque
// target ("x:foo bar"; ParseRequestURI escapes spaces only in a path). The
// request line is then not method SP target SP version, and an upstream may
// split it where the proxy did not. The old path sent :path as one h2 field
// to upstreams that speak h2 (every default rule host); http.Transport
// wrote the same broken line only to HTTP/1.1-only upstreams.
func TestH2Attack_PathWhitespaceInRequestLine(t *testing.T) {
	for _, path := range []string{"/v1/messages?a=1 HTTP/1.0", "x:v1/messages HTTP/1.0"} {
		t.Run(fmt.Sprintf("%q", path), func(t *testing.T) {
			u := newRawUpstream(t, okResponse)
			h := harnessWith(t, u, nil)
			c := dialRawH2(t, h)
			c.read(c.send(reqFields("GET", path), true), 5*time.Second)
			for _, hd := range u.allHeads() {
				line, _, _ := strings.Cut(hd, "\r\n")
				if parts := strings.Split(line, " "); len(parts) != 3 || strings.ContainsAny(line, "\t") {
					t.Errorf(":path %q: upstream received the request line %q", path, line)
				}
			}
		})
	}
}

// --- Attacks that held (kept as regression tests) ---------------------------

// pathResponder answers "/one" with its own response and a second,
// unsolicited one, "/slow" with a head and part of its body and then
// nothing until release closes, and anything else with its path. Request
// bodies framed by Content-Length are read first.
func pathResponder(release chan struct{}) func(head string, br *bufio.Reader, w io.Writer) bool {
	return func(head string, br *bufio.Reader, w io.Writer) bool {
		req, err := http.ReadRequest(bufio.NewReader(strings.NewReader(head)))
		if err != nil {
			return false
		}
		if req.ContentLength > 0 {
			if _, err := io.CopyN(io.Discard, br, req.ContentLength); err != nil {
				return false
			}
		}
		switch req.URL.Path {
		case "/one":
			io.WriteString(w, "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\none"+
				"HTTP/1.1 200 OK\r\nContent-Length: 21\r\nX-Smuggled: yes\r\n\r\nsomeone else's answer")
		case "/slow":
			io.WriteString(w, "HTTP/1.1 200 OK\r\nContent-Length: 100\r\n\r\n0123456789")
			<-release
			return false
		case "/head":
			io.WriteString(w, "HTTP/1.1 200 OK\r\nContent-Length: 50\r\n\r\n")
		case "/304":
			io.WriteString(w, "HTTP/1.1 304 Not Modified\r\nContent-Length: 50\r\n\r\n")
		default:
			fmt.Fprintf(w, "HTTP/1.1 200 OK\r\nContent-Length: %d\r\n\r\n%s", len(req.URL.Path), req.URL.Path)
		}
		return true
	}
}

// TestH2Hold_PooledConnStaysInStep: after each way an h2 exchange can
// leave an upstream connection (unsolicited extra response, response cut
// by a client reset, request body shorter than its content-length, HEAD
// and 304 with a Content-Length), another client's next request gets its
// own answer.
func TestH2Hold_PooledConnStaysInStep(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	u := newRawUpstream(t, pathResponder(release))
	h := harnessWith(t, u, nil)
	check := func(step string) {
		t.Helper()
		c := dialRawH2(t, h) // another client
		resp := c.read(c.send(reqFields("GET", "/next"), true), 5*time.Second)
		if resp.status != "200" || resp.body != "/next" || resp.header.Get("x-smuggled") != "" {
			t.Fatalf("after %s: next client got %+v, want its own /next", step, resp)
		}
	}
	c := dialRawH2(t, h)
	if r := c.read(c.send(reqFields("GET", "/one"), true), 5*time.Second); r.body != "one" {
		t.Fatalf("/one: %+v", r)
	}
	check("an unsolicited second response")

	id := c.send(reqFields("GET", "/slow"), true)
	c.read(id, 500*time.Millisecond) // head and part of the body
	c.fr.WriteRSTStream(id, http2.ErrCodeCancel)
	time.Sleep(200 * time.Millisecond)
	check("a client reset mid-body")

	id = c.send(reqFields("POST", "/short", [2]string{"content-length", "10"}), false)
	c.fr.WriteData(id, true, []byte("12345"))
	c.read(id, 5*time.Second)
	check("a request body shorter than its content-length")

	if r := c.read(c.send(reqFields("HEAD", "/head"), true), 5*time.Second); r.status != "200" {
		t.Fatalf("HEAD: %+v", r)
	}
	check("HEAD")
	if r := c.read(c.send(reqFields("GET", "/304"), true), 5*time.Second); r.status != "304" {
		t.Fatalf("304: %+v", r)
	}
	check("304")
}

// TestH2Hold_InterimAndTrailersRedacted: a credential the upstream echoes
// in a 103, a skipped 1xx or a trailer does not reach the h2 client.
func TestH2Hold_InterimAndTrailersRedacted(t *testing.T) {
	h := newHarness(t, harnessOpts{handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		auth := r.Header.Get("Authorization")
		w.Header().Set("X-Echo", auth)
		w.WriteHeader(http.StatusEarlyHints)
		w.WriteHeader(http.StatusProcessing)
		w.Header().Del("X-Echo")
		w.Header().Set("Trailer", "X-Echo-Trailer")
		io.WriteString(w, "body")
		w.(http.Flusher).Flush()
		w.Header().Set("X-Echo-Trailer", auth)
	})})
	c := dialRawH2(t, h)
	id := c.send(reqFields("GET", "/"), true)
	var all strings.Builder
	c.c.SetReadDeadline(time.Now().Add(5 * time.Second))
	for done := false; !done; {
		f, err := c.fr.ReadFrame()
		if err != nil {
			t.Fatal(err)
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if !f.IsAck() {
				c.fr.WriteSettingsAck()
			}
		case *http2.MetaHeadersFrame:
			fmt.Fprintf(&all, "%v\n", f.Fields)
			done = f.StreamEnded() && f.StreamID == id
		case *http2.DataFrame:
			all.Write(f.Data())
			done = f.StreamEnded() && f.StreamID == id
		case *http2.RSTStreamFrame:
			t.Fatalf("stream reset: %v", f.ErrCode)
		}
	}
	if strings.Contains(all.String(), realToken) {
		t.Fatal("the real credential echoed by the upstream reached the h2 client")
	}
	if !strings.Contains(all.String(), "body") {
		t.Fatalf("no body: %s", all.String())
	}
}

// sendBodyGoroutines counts request body senders still running.
func sendBodyGoroutines() int {
	buf := make([]byte, 1<<20)
	buf = buf[:runtime.Stack(buf, true)]
	return strings.Count(string(buf), "tlsmitm.(*Server).sendBody(")
}

// TestH2Hold_BodySenderEnds: the request body sender of an h2 exchange
// ends when the upstream answers early while the client's body stalls,
// when the client resets during the upload, and when the body goes idle
// while the upstream waits for it.
func TestH2Hold_BodySenderEnds(t *testing.T) {
	release := make(chan struct{})
	defer close(release)
	u := newRawUpstream(t, func(head string, br *bufio.Reader, w io.Writer) bool {
		switch {
		case strings.HasPrefix(head, "POST /early "):
			io.WriteString(w, "HTTP/1.1 401 Unauthorized\r\nContent-Length: 4\r\n\r\nnope")
			<-release
			return false
		default: // read forever, never answer
			io.Copy(io.Discard, br)
			return false
		}
	})
	h := harnessWith(t, u, func(c *Config) { c.BodyIdleTimeout = 500 * time.Millisecond })
	base := sendBodyGoroutines()
	wait := func(step string) {
		t.Helper()
		deadline := time.Now().Add(5 * time.Second)
		for sendBodyGoroutines() > base {
			if time.Now().After(deadline) {
				t.Fatalf("after %s: %d request body senders still running", step, sendBodyGoroutines()-base)
			}
			time.Sleep(50 * time.Millisecond)
		}
	}
	c := dialRawH2(t, h)
	id := c.send(reqFields("POST", "/early", [2]string{"content-length", "100000"}), false)
	c.fr.WriteData(id, false, make([]byte, 1000))
	if r := c.read(id, 5*time.Second); r.status != "401" {
		t.Fatalf("early answer: %+v", r)
	}
	wait("an early answer with the body stalled")

	id = c.send(reqFields("POST", "/hang", [2]string{"content-length", "100000"}), false)
	c.fr.WriteData(id, false, make([]byte, 1000))
	time.Sleep(200 * time.Millisecond)
	c.fr.WriteRSTStream(id, http2.ErrCodeCancel)
	wait("a client reset during the upload")

	id = c.send(reqFields("POST", "/hang", [2]string{"content-length", "100000"}), false)
	c.fr.WriteData(id, false, make([]byte, 1000))
	if r := c.read(id, 5*time.Second); r.status != "408" {
		t.Errorf("stalled upload: %+v, want 408", r)
	}
	wait("a stalled upload")
}

// TestH1Relay_OpaqueTargetRetargetsUpstreamHost: the same opaque-target
// hole on the HTTP/1.1 relay (older than a426144: ReadRequest accepts
// "a:https://evil.example/x", req.Host comes from the Host header, and
// writeRequestHead writes RequestURI(), the opaque part, as the target).
func TestH1Relay_OpaqueTargetRetargetsUpstreamHost(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	c, br := h.rawH1(t)
	io.WriteString(c, "GET a:https://evil.example/steal HTTP/1.1\r\nHost: api.anthropic.com\r\n\r\n")
	resp, _ := readResp(t, br, "GET")
	if got := resp.Header.Get("X-Upstream-Host"); got != "" && got != apiHost {
		t.Errorf("Host %s, yet the upstream served Host %q (credential injected: %s, status %d)",
			apiHost, got, resp.Header.Get("X-Auth-Is-Real"), resp.StatusCode)
	}
}
