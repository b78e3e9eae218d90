package tlsmitm

// Review of the batching commits (c21b83b, 692c2e1, 310043d): a read-ahead
// under the upstream's TLS, a cork under the client's, and pooled h2 read
// and write buffers. Each test names the property it pins; those that say
// "failed before the fix" failed against 310043d.

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"strconv"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// h2RawFrames frames with a throwaway Framer that writes what it is told.
func h2RawFrames(write func(fr *http2.Framer)) []byte {
	var b bytes.Buffer
	fr := http2.NewFramer(&b, nil)
	fr.AllowIllegalWrites = true
	write(fr)
	return b.Bytes()
}

// dialH2Bytes opens a TLS h2 connection to the terminator and sends the
// preface and then raw, in one write (one TLS record): the frontend's
// preface read fills its read buffer with all of raw.
func dialH2Bytes(t *testing.T, h *harness, raw []byte) *tls.Conn {
	t.Helper()
	c, err := tls.Dial("tcp", h.addr, &tls.Config{ServerName: apiHost, RootCAs: h.pool, NextProtos: []string{"h2"}})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { c.Close() })
	if _, err := c.Write(append([]byte(http2.ClientPreface), raw...)); err != nil {
		t.Fatal(err)
	}
	return c
}

// waitH2Closed reads c until the server closes it, then waits for the
// server to let go of the connection.
func waitH2Closed(t *testing.T, h *harness, c *tls.Conn) {
	t.Helper()
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := io.Copy(io.Discard, c); err != nil && !strings.Contains(err.Error(), "reset") {
		if ne, ok := err.(net.Error); ok && ne.Timeout() {
			t.Fatal("the server did not close the connection")
		}
	}
	waitFor(t, 5*time.Second, "the server to release the connection", func() bool {
		return h.srv.Stats().ActiveHTTPConns == 0
	})
}

// TestBatchAttack_H2BuffersBackAfterConnectionErrorWithBytesBuffered: a
// connection that ends on a frame error while its read buffer still holds
// the client's next bytes gives the buffer back (and the count of buffers
// out of their pools returns to zero). Failed before the fix: the read
// buffer was given back only when empty, so the count stayed at 1 for
// good.
func TestBatchAttack_H2BuffersBackAfterConnectionErrorWithBytesBuffered(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	raw := h2RawFrames(func(fr *http2.Framer) {
		fr.WriteSettings(http2.Setting{ID: http2.SettingEnablePush, Val: 0}, http2.Setting{ID: http2.SettingMaxFrameSize, Val: 16384})
		fr.WriteWindowUpdate(0, 0) // a zero increment: PROTOCOL_ERROR
		fr.WritePing(false, [8]byte{1})
		fr.WritePing(false, [8]byte{2}) // still buffered when the connection ends
	})
	c := dialH2Bytes(t, h, raw)
	waitH2Closed(t, h, c)
	waitFor(t, 2*time.Second, "the h2 buffers back in their pools", func() bool { return h.srv.stats.h2Buffers.Load() == 0 })
}

// TestBatchAttack_H2BuffersBackAfterGracefulEndWithFramesUnsent: a client
// whose SETTINGS and GOAWAY arrive together ends the connection gracefully
// while the SETTINGS acknowledgement waits in the write buffer. Failed
// before the fix: the write buffer was never given back (nor counted back).
func TestBatchAttack_H2BuffersBackAfterGracefulEndWithFramesUnsent(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	raw := h2RawFrames(func(fr *http2.Framer) {
		fr.WriteSettings(http2.Setting{ID: http2.SettingEnablePush, Val: 0})
		fr.WriteGoAway(0, http2.ErrCodeNo, nil)
	})
	c := dialH2Bytes(t, h, raw)
	waitH2Closed(t, h, c)
	waitFor(t, 2*time.Second, "the h2 buffers back in their pools", func() bool { return h.srv.stats.h2Buffers.Load() == 0 })
}

// rawByteCounter counts the bytes read from a socket.
type rawByteCounter struct {
	net.Conn
	n atomic.Int64
}

func (c *rawByteCounter) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.n.Add(int64(n))
	return n, err
}

// TestBatchAttack_H2ControlFloodAnsweredInBatches: a record full of PINGs
// is answered with its acknowledgements batched, as before the pooled read
// buffer. Failed before the fix: a frame of at most 9 bytes is read
// straight from the TLS connection, so the read buffer stayed empty and
// the read loop flushed after every frame: one write(2) and one TLS record
// (22 bytes of overhead) per 17-byte PING, 2.3 times the client's bytes
// back and ~25 times the time (a hostile container's cheap amplification).
func TestBatchAttack_H2ControlFloodAnsweredInBatches(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	sock, err := net.Dial("tcp", h.addr)
	if err != nil {
		t.Fatal(err)
	}
	cnt := &rawByteCounter{Conn: sock}
	c := tls.Client(cnt, &tls.Config{ServerName: apiHost, RootCAs: h.pool, NextProtos: []string{"h2"}})
	defer c.Close()
	c.SetDeadline(time.Now().Add(20 * time.Second))
	io.WriteString(c, http2.ClientPreface)
	fr := http2.NewFramer(c, c)
	fr.WriteSettings()
	fr.WritePing(false, [8]byte{9})
	for { // the server's SETTINGS, WINDOW_UPDATE, SETTINGS ack, then our PING's ack
		f, err := fr.ReadFrame()
		if err != nil {
			t.Fatal(err)
		}
		if p, ok := f.(*http2.PingFrame); ok && p.IsAck() {
			break
		}
	}
	const n = 900 // 15300 bytes: one TLS record
	flood := h2RawFrames(func(fr *http2.Framer) {
		for range n {
			fr.WritePing(false, [8]byte{2})
		}
	})
	before := cnt.n.Load()
	if _, err := c.Write(flood); err != nil {
		t.Fatal(err)
	}
	for i := range n {
		f, err := fr.ReadFrame()
		if err != nil {
			t.Fatalf("ack %d: %v", i, err)
		}
		if p, ok := f.(*http2.PingFrame); !ok || !p.IsAck() {
			t.Fatalf("frame %d: %v, want a PING ack", i, f)
		}
	}
	records := (cnt.n.Load() - before - n*17) / 22 // TLS 1.3: 22 bytes per record
	t.Logf("%d PING acks came in about %d TLS records", n, records)
	if records > n/10 {
		t.Errorf("%d PINGs in one record were answered in about %d TLS records (a write(2) each), want them batched", n, records)
	}
}

// TestBatchAttack_H2AcksStillLeaveBeforeTheReadLoopWaits: with the flush
// moved to the socket read, a control frame's answer still leaves while
// the read loop waits for the client, also after a frame split across
// records, and a connection waiting for its next frame holds no buffer.
func TestBatchAttack_H2AcksStillLeaveBeforeTheReadLoopWaits(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	r := dialRawH2(t, h)
	ping := h2RawFrames(func(fr *http2.Framer) { fr.WritePing(false, [8]byte{7}) })
	for i, split := range []int{len(ping), 3, 9, 12} {
		r.c.Write(ping[:split])
		if split < len(ping) {
			time.Sleep(20 * time.Millisecond) // the rest in a record of its own
			r.c.Write(ping[split:])
		}
		f := r.nextFrame(3*time.Second, func(f http2.Frame) bool {
			p, ok := f.(*http2.PingFrame)
			return ok && p.IsAck() && p.Data == [8]byte{7}
		})
		if f == nil {
			t.Fatalf("case %d (split at %d): no PING ack while the server waits for the next frame", i, split)
		}
	}
	waitFor(t, 2*time.Second, "an idle h2 connection to hold no buffer", func() bool { return h.srv.stats.h2Buffers.Load() == 0 })
}

// TestBatchAttack_H2FramesSplitAcrossRecordsParse: a request whose frames
// (padded HEADERS with a priority, CONTINUATIONs of a few bytes, padded
// DATA, control frames between them) arrive in TLS records of 1 to 17
// bytes parses as when it arrives whole: the frame source switches between
// reading straight from the connection (at most 9 bytes, nothing buffered)
// and reading through its buffer mid-frame.
func TestBatchAttack_H2FramesSplitAcrossRecordsParse(t *testing.T) {
	h := newHarness(t, harnessOpts{handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "%s %s %q", r.Method, r.Header.Get("X-Long"), b)
	})})
	long := strings.Repeat("v", 40)
	for _, size := range []int{1, 2, 5, 8, 9, 10, 17, 1 << 20} {
		r := dialRawH2(t, h)
		id := r.next
		r.next += 2
		r.hbuf.Reset()
		for _, f := range reqFields("POST", "/split", [2]string{"x-long", long}) {
			r.enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
		}
		block := append([]byte(nil), r.hbuf.Bytes()...)
		raw := h2RawFrames(func(fr *http2.Framer) {
			fr.WriteHeaders(http2.HeadersFrameParam{StreamID: id, BlockFragment: block[:7], PadLength: 3,
				Priority: http2.PriorityParam{StreamDep: 0, Weight: 15}})
			for rest := block[7:]; len(rest) > 0; {
				n := min(len(rest), 4)
				fr.WriteContinuation(id, n == len(rest), rest[:n])
				rest = rest[n:]
			}
			fr.WritePing(false, [8]byte{5})
			fr.WriteSettings(http2.Setting{ID: http2.SettingInitialWindowSize, Val: 1 << 20})
			fr.WriteDataPadded(id, false, []byte("hello, "), make([]byte, 6))
			fr.WriteWindowUpdate(0, 1000)
			fr.WriteDataPadded(id, false, nil, make([]byte, 2))
			fr.WriteData(id, true, []byte("world"))
		})
		for rest := raw; len(rest) > 0; {
			n := min(len(rest), size)
			if _, err := r.c.Write(rest[:n]); err != nil { // a record each
				t.Fatal(err)
			}
			rest = rest[n:]
		}
		resp := r.read(id, 5*time.Second)
		if want := fmt.Sprintf("POST %s %q", long, "hello, world"); resp.status != "200" || resp.body != want {
			t.Fatalf("records of %d bytes: %+v, want 200 %q", size, resp, want)
		}
		r.c.Close()
	}
}

// TestBatchAttack_BulkBodyExtraBytesNeverReachNextClient: an upstream that
// sends more than a bulk response (a body of at least batchSize, read
// through the read-ahead) leaves bytes in the read-ahead buffer, in TLS or
// in the socket; the pooled connection must not answer the next client
// with them.
func TestBatchAttack_BulkBodyExtraBytesNeverReachNextClient(t *testing.T) {
	body := strings.Repeat("b", 100_000)
	smuggled := "HTTP/1.1 200 OK\r\nContent-Length: 9\r\nX-Smuggled: yes\r\n\r\nsmuggled!"
	u := newRawUpstream(t, func(head string, br *bufio.Reader, w io.Writer) bool {
		switch {
		case strings.HasPrefix(head, "GET /same-write "):
			io.WriteString(w, "HTTP/1.1 200 OK\r\nContent-Length: "+strconv.Itoa(len(body))+"\r\n\r\n"+body+smuggled)
		case strings.HasPrefix(head, "GET /next-record "):
			io.WriteString(w, "HTTP/1.1 200 OK\r\nContent-Length: "+strconv.Itoa(len(body))+"\r\n\r\n"+body)
			io.WriteString(w, smuggled)
		case strings.HasPrefix(head, "GET /late "):
			io.WriteString(w, "HTTP/1.1 200 OK\r\nContent-Length: "+strconv.Itoa(len(body))+"\r\n\r\n"+body)
			time.Sleep(100 * time.Millisecond) // after the relay is done with the body
			io.WriteString(w, smuggled)
		default:
			io.WriteString(w, "HTTP/1.1 200 OK\r\nContent-Length: 3\r\n\r\nown")
		}
		return true
	})
	h := harnessWith(t, u, nil)
	for _, path := range []string{"/same-write", "/next-record", "/late"} {
		t.Run(path[1:], func(t *testing.T) {
			c1, br1 := h.rawH1(t)
			fmt.Fprintf(c1, "GET %s HTTP/1.1\r\nHost: %s\r\n\r\n", path, apiHost)
			if _, got := readResp(t, br1, "GET"); got != body {
				t.Fatalf("first response: %d bytes", len(got))
			}
			h.rec.next(t)
			time.Sleep(200 * time.Millisecond)
			for i := range 3 { // other clients
				c2, br2 := h.rawH1(t)
				fmt.Fprintf(c2, "GET /next HTTP/1.1\r\nHost: %s\r\n\r\n", apiHost)
				resp, got := readResp(t, br2, "GET")
				if resp.Header.Get("X-Smuggled") != "" || got != "own" {
					t.Fatalf("client %d got %q (X-Smuggled=%q): bytes the upstream sent after a bulk body", i, got, resp.Header.Get("X-Smuggled"))
				}
				h.rec.next(t)
			}
		})
	}
}

// TestBatchAttack_CorkedStreamingBodyFullDuplex: a chunked (hence corked)
// response whose upstream echoes each request chunk only once it has it,
// to a client that sends its next chunk only once it has the echo: nothing
// may wait in the cork while the relay waits for the upstream.
func TestBatchAttack_CorkedStreamingBodyFullDuplex(t *testing.T) {
	u := newRawUpstream(t, func(head string, br *bufio.Reader, w io.Writer) bool {
		io.WriteString(w, "HTTP/1.1 200 OK\r\nTransfer-Encoding: chunked\r\n\r\n")
		for {
			line, err := br.ReadString('\n')
			if err != nil {
				return false
			}
			n, _ := strconv.ParseInt(strings.TrimSpace(line), 16, 64)
			chunk := make([]byte, n+2)
			if _, err := io.ReadFull(br, chunk); err != nil {
				return false
			}
			if n == 0 {
				io.WriteString(w, "0\r\n\r\n")
				return true
			}
			fmt.Fprintf(w, "%x\r\n%s\r\n", n, chunk[:n])
		}
	})
	h := harnessWith(t, u, nil)
	c, br := h.rawH1(t)
	fmt.Fprintf(c, "POST /echo HTTP/1.1\r\nHost: %s\r\nTransfer-Encoding: chunked\r\n\r\n", apiHost)
	send := func(s string) { fmt.Fprintf(c, "%x\r\n%s\r\n", len(s), s) }
	send("first")
	resp, err := http.ReadResponse(br, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		want := "first"
		if i > 0 {
			want = "chunk" + strconv.Itoa(i)
		}
		got := make([]byte, len(want))
		c.SetReadDeadline(time.Now().Add(3 * time.Second))
		if _, err := io.ReadFull(resp.Body, got); err != nil || string(got) != want {
			t.Fatalf("echo %d: %q, %v (held in the cork?)", i, got, err)
		}
		send("chunk" + strconv.Itoa(i+1))
	}
	io.WriteString(c, "0\r\n\r\n")
	rest, err := io.ReadAll(resp.Body)
	if err != nil || string(rest) != "chunk5" {
		t.Fatalf("the end: %q, %v", rest, err)
	}
}

// TestBatchAttack_CorkedBodyThenCloseOrUpgrade: after a corked bulk body,
// what follows on the client connection is whole and in order: an
// HTTP/1.0 client's close-delimited body ends with every byte, a HEAD's
// large Content-Length passes without a body, and a protocol upgrade on
// the same connection after a bulk response is spliced both ways.
func TestBatchAttack_CorkedBodyThenCloseOrUpgrade(t *testing.T) {
	body := strings.Repeat("0123456789abcdef", 10_000) // 160000 bytes: batched
	u := newRawUpstream(t, func(head string, br *bufio.Reader, w io.Writer) bool {
		switch {
		case strings.HasPrefix(head, "GET /ws "):
			io.WriteString(w, "HTTP/1.1 101 Switching Protocols\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n")
			line, _ := br.ReadString('\n')
			io.WriteString(w, "echo "+line)
			return false
		case strings.HasPrefix(head, "HEAD "):
			io.WriteString(w, "HTTP/1.1 200 OK\r\nContent-Length: "+strconv.Itoa(len(body))+"\r\n\r\n")
		case strings.HasPrefix(head, "GET /unknown-length "):
			io.WriteString(w, "HTTP/1.1 200 OK\r\nConnection: close\r\n\r\n"+body)
			return false
		default:
			io.WriteString(w, "HTTP/1.1 200 OK\r\nContent-Length: "+strconv.Itoa(len(body))+"\r\n\r\n"+body)
		}
		return true
	})
	h := harnessWith(t, u, nil)

	c, br := h.rawH1(t)
	fmt.Fprintf(c, "GET /unknown-length HTTP/1.0\r\nHost: %s\r\n\r\n", apiHost)
	if _, got := readResp(t, br, "GET"); got != body {
		t.Fatalf("HTTP/1.0 close-delimited body: %d bytes, want %d", len(got), len(body))
	}

	c, br = h.rawH1(t)
	fmt.Fprintf(c, "HEAD /big HTTP/1.1\r\nHost: %s\r\n\r\n", apiHost)
	if resp, got := readResp(t, br, "HEAD"); resp.ContentLength != int64(len(body)) || got != "" {
		t.Fatalf("HEAD: Content-Length %d, body %d bytes", resp.ContentLength, len(got))
	}
	fmt.Fprintf(c, "GET /big HTTP/1.1\r\nHost: %s\r\n\r\n", apiHost)
	if _, got := readResp(t, br, "GET"); got != body {
		t.Fatalf("bulk body after HEAD: %d bytes", len(got))
	}
	fmt.Fprintf(c, "GET /ws HTTP/1.1\r\nHost: %s\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n", apiHost)
	resp, err := http.ReadResponse(br, nil)
	if err != nil || resp.StatusCode != http.StatusSwitchingProtocols {
		t.Fatalf("upgrade after a bulk body: %v %v", resp, err)
	}
	io.WriteString(c, "ping\n")
	if line, err := br.ReadString('\n'); err != nil || line != "echo ping\n" {
		t.Fatalf("spliced stream: %q, %v", line, err)
	}
}
