package tlsmitm

import (
	"bytes"
	"crypto/rand"
	"io"
	"net"
	"net/http"
	"strconv"
	"sync/atomic"
	"testing"
	"time"
)

// tcpPair is a connected loopback TCP pair.
func tcpPair(t *testing.T) (a, b net.Conn) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	accepted := make(chan net.Conn, 1)
	go func() {
		c, _ := ln.Accept()
		accepted <- c
	}()
	a, err = net.Dial("tcp", ln.Addr().String())
	if err != nil {
		t.Fatal(err)
	}
	b = <-accepted
	if b == nil {
		t.Fatal("accept failed")
	}
	t.Cleanup(func() { a.Close(); b.Close() })
	return a, b
}

// countingConn counts the writes that reach the socket.
type countingConn struct {
	net.Conn
	writes atomic.Int32
}

func (c *countingConn) Write(p []byte) (int, error) {
	c.writes.Add(1)
	return c.Conn.Write(p)
}

// flushCounter is a batchConn.onBlock that counts its calls.
type flushCounter struct{ n int }

func (f *flushCounter) Flush() error { f.n++; return nil }

// TestReadAhead_BatchesReadsAndFlushesBeforeEachSocketRead: many small
// reads of one burst cost one read(2); onBlock runs before every read(2)
// and never while bytes are buffered; the buffer is given back once read.
func TestReadAhead_BatchesReadsAndFlushesBeforeEachSocketRead(t *testing.T) {
	a, b := tcpPair(t)
	burst := make([]byte, 40<<10)
	rand.Read(burst)
	if _, err := a.Write(burst); err != nil {
		t.Fatal(err)
	}
	time.Sleep(50 * time.Millisecond) // the whole burst is in b's socket
	fc := &flushCounter{}
	ra := &batchConn{Conn: b, onBlock: fc}
	got := make([]byte, 0, len(burst))
	p := make([]byte, 1000)
	for len(got) < len(burst) {
		n, err := ra.Read(p)
		if err != nil {
			t.Fatal(err)
		}
		got = append(got, p[:n]...)
	}
	if !bytes.Equal(got, burst) {
		t.Fatal("read-ahead corrupted the stream")
	}
	if fc.n != 1 {
		t.Errorf("onBlock ran %d times for one socket read, want 1", fc.n)
	}
	if ra.buf != nil {
		t.Error("an emptied read-ahead buffer is still held")
	}
	// The next read needs the socket again: onBlock first.
	a.Write([]byte("x"))
	if n, err := ra.Read(p); err != nil || n != 1 || p[0] != 'x' {
		t.Fatalf("read %d %q, %v", n, p[:n], err)
	}
	if fc.n != 2 {
		t.Errorf("onBlock ran %d times after a second socket read, want 2", fc.n)
	}
	// An error after buffered bytes comes after them.
	a.Write([]byte("tail"))
	a.Close()
	time.Sleep(20 * time.Millisecond)
	all, err := io.ReadAll(ra)
	if string(all) != "tail" || err != nil {
		t.Errorf("after the peer closed: %q, %v; want \"tail\" and EOF", all, err)
	}
}

// TestCork_OneWritePerBatch: corked writes leave in batchSize writes, and
// nothing leaves before a flush; uncorked writes go straight through.
func TestCork_OneWritePerBatch(t *testing.T) {
	a, b := tcpPair(t)
	cc := &countingConn{Conn: a}
	rc := &replayConn{batchConn: batchConn{Conn: cc}}
	rec := make([]byte, 16<<10+29) // a full TLS record
	rc.corkWrites()
	for range 3 {
		rc.Write(rec)
	}
	if n := cc.writes.Load(); n != 0 {
		t.Fatalf("%d writes reached the socket while corked and below a batch", n)
	}
	b.SetReadDeadline(time.Now().Add(50 * time.Millisecond))
	if n, _ := b.Read(make([]byte, 1)); n != 0 {
		t.Fatal("corked bytes reached the peer before a flush")
	}
	rc.Write(rec) // the fourth does not fit: the first three leave together
	if n := cc.writes.Load(); n != 1 {
		t.Errorf("%d writes after a full batch, want 1", n)
	}
	if err := rc.Flush(); err != nil {
		t.Fatal(err)
	}
	if n := cc.writes.Load(); n != 2 {
		t.Errorf("%d writes after the flush, want 2", n)
	}
	rc.Flush() // nothing held: no write
	if err := rc.uncork(); err != nil {
		t.Fatal(err)
	}
	rc.Write([]byte("direct"))
	if n := cc.writes.Load(); n != 3 {
		t.Errorf("%d writes after an uncorked write, want 3", n)
	}
	b.SetReadDeadline(time.Now().Add(5 * time.Second))
	got := make([]byte, 4*len(rec)+len("direct"))
	if _, err := io.ReadFull(b, got); err != nil {
		t.Fatal(err)
	}
	if string(got[len(got)-6:]) != "direct" {
		t.Error("the stream is out of order")
	}
}

// TestCork_FailedFlushFailsLaterWrites: a flush that fails (the client is
// gone) fails every later write, so the relay stops.
func TestCork_FailedFlushFailsLaterWrites(t *testing.T) {
	a, b := tcpPair(t)
	rc := &replayConn{batchConn: batchConn{Conn: a}}
	rc.corkWrites()
	rc.Write([]byte("hello"))
	b.Close()
	a.Close()
	if err := rc.Flush(); err == nil {
		t.Fatal("a flush on a closed connection succeeded")
	}
	if _, err := rc.Write([]byte("more")); err == nil {
		t.Error("a write after a failed flush succeeded")
	}
	if err := rc.uncork(); err == nil {
		t.Error("uncork after a failed flush reported no error")
	}
}

// TestIntercept_CorkNeverHoldsWhatTheClientWaitsFor: a response of known
// length whose second half the upstream sends only after the client has
// the first. A relay that held the first half for a fuller batch would
// wait forever.
func TestIntercept_CorkNeverHoldsWhatTheClientWaitsFor(t *testing.T) {
	half := bytes.Repeat([]byte("0123456789abcdef"), 3000) // 48000 B: below one batch
	gotFirst := make(chan struct{})
	h := newHarness(t, harnessOpts{handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Length", strconv.Itoa(2*len(half)))
		w.Write(half)
		w.(http.Flusher).Flush()
		select {
		case <-gotFirst:
		case <-time.After(10 * time.Second):
			return // cut: the client sees a short body
		}
		w.Write(half)
	})})
	for _, h2 := range []bool{false, true} {
		t.Run(map[bool]string{false: "http1.1", true: "h2"}[h2], func(t *testing.T) {
			resp, err := h.client(h2).Get("https://" + apiHost + "/halves")
			if err != nil {
				t.Fatal(err)
			}
			defer resp.Body.Close()
			first := make([]byte, len(half))
			if _, err := io.ReadFull(resp.Body, first); err != nil {
				t.Fatalf("first half: %v", err)
			}
			select {
			case gotFirst <- struct{}{}:
			case <-time.After(time.Second):
				t.Fatal("the first half came only after the upstream gave up on sending the second")
			}
			rest, err := io.ReadAll(resp.Body)
			if err != nil || !bytes.Equal(rest, half) {
				t.Fatalf("second half: %d bytes, %v", len(rest), err)
			}
		})
	}
}

// TestIntercept_UploadCorkNeverHoldsWhatTheUpstreamWaitsFor: a request
// body of known length whose second half the client sends only after the
// upstream has read the first. A relay that held the first half in the
// upstream's cork while it waited for the client would wait forever.
func TestIntercept_UploadCorkNeverHoldsWhatTheUpstreamWaitsFor(t *testing.T) {
	half := bytes.Repeat([]byte("fedcba9876543210"), 3000) // 48000 B: below one batch
	gotFirst := make(chan struct{}, 1)
	h := newHarness(t, harnessOpts{handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		first := make([]byte, len(half))
		if _, err := io.ReadFull(r.Body, first); err != nil {
			http.Error(w, "first half: "+err.Error(), http.StatusBadRequest)
			return
		}
		gotFirst <- struct{}{}
		rest, err := io.ReadAll(r.Body)
		if err != nil || !bytes.Equal(first, half) || !bytes.Equal(rest, half) {
			http.Error(w, "body mangled", http.StatusBadRequest)
			return
		}
		io.WriteString(w, "whole")
	})})
	pr, pw := io.Pipe()
	go func() {
		pw.Write(half)
		select {
		case <-gotFirst:
			pw.Write(half)
			pw.Close()
		case <-time.After(10 * time.Second):
			pw.CloseWithError(io.ErrUnexpectedEOF)
		}
	}()
	req, _ := http.NewRequest("POST", "https://"+apiHost+"/upload", pr)
	req.ContentLength = int64(2 * len(half))
	start := time.Now()
	resp, err := h.client(false).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != "whole" || time.Since(start) > 5*time.Second {
		t.Fatalf("after %v: %d %q; the first half reached the upstream only after the client gave up", time.Since(start), resp.StatusCode, body)
	}
}

func TestIsEventStream(t *testing.T) {
	for ct, want := range map[string]bool{
		"text/event-stream": true, "text/event-stream; charset=utf-8": true,
		"application/json": false, "": false, "text/plain": false,
	} {
		if got := isEventStream(http.Header{"Content-Type": {ct}}); got != want {
			t.Errorf("isEventStream(%q) = %v, want %v", ct, got, want)
		}
	}
}
