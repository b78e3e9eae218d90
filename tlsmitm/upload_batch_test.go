package tlsmitm

// Review of 8ca51cf: bulk request bodies batched (a read-ahead on the
// client's socket, a cork on the upstream's, flushed before each read(2)
// from the client).

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"fmt"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

// TestUploadBatch_StoppingASenderStuckFlushingIsPrompt: an upstream that
// answers a large upload at once and then neither reads nor closes leaves
// the body sender blocked writing the cork's bytes before its next read
// from the client. Stopping it after bodyGrace must end the exchange then,
// not once crypto/tls gives up sending its close_notify behind the stuck
// flush (5s). Failed before the fix: the client connection was closed
// about 6s after the response instead of about 1s.
func TestUploadBatch_StoppingASenderStuckFlushingIsPrompt(t *testing.T) {
	release := make(chan struct{})
	u := newRawUpstream(t, func(head string, br *bufio.Reader, w io.Writer) bool {
		io.WriteString(w, "HTTP/1.1 413 Request Entity Too Large\r\nContent-Length: 9\r\n\r\ntoo large")
		<-release // neither reads the body nor closes
		return false
	})
	t.Cleanup(func() { close(release) })
	h := harnessWith(t, u, nil)
	c, br := h.rawH1(t)
	c.SetDeadline(time.Now().Add(20 * time.Second))
	io.WriteString(c, "POST /upload HTTP/1.1\r\nHost: "+apiHost+"\r\nContent-Length: 1073741824\r\n\r\n")
	go func() { // a record at a time, each read from the socket on its own
		piece := strings.Repeat("u", 8<<10)
		for {
			if _, err := io.WriteString(c, piece); err != nil {
				return
			}
			time.Sleep(100 * time.Microsecond)
		}
	}()
	if resp, body := readResp(t, br, "POST"); resp.StatusCode != 413 || body != "too large" {
		t.Fatalf("got %d %q, want the upstream's 413", resp.StatusCode, body)
	}
	answered := time.Now()
	io.Copy(io.Discard, br) // until the relay closes the connection
	if d := time.Since(answered); d > bodyGrace+2*time.Second {
		t.Fatalf("the relay closed the client connection %v after the response (bodyGrace %v)", d, bodyGrace)
	}
	h.rec.next(t)
}

// bodyDigestHandler answers a request with its method, path, body length
// and body digest.
func bodyDigestHandler(seen chan<- int) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, err := io.ReadAll(r.Body)
		if seen != nil {
			seen <- len(b)
		}
		if err != nil {
			return
		}
		fmt.Fprintf(w, "%s %s %d %x", r.Method, r.URL.Path, len(b), sha256.Sum256(b))
	})
}

// TestUploadBatch_PipelinedRequestAfterBulkBody: a bulk body (chunked or
// of known length) and the next request arrive in the same write, so the
// client's read-ahead holds the next request when the body ends. The body
// reaches the upstream whole and alone, and the next request is served
// after it, in order.
func TestUploadBatch_PipelinedRequestAfterBulkBody(t *testing.T) {
	h := newHarness(t, harnessOpts{handler: bodyDigestHandler(nil)})
	body := bytes.Repeat([]byte("0123456789abcdef"), 12_500) // 200000 bytes: batched
	var chunked bytes.Buffer
	for rest := body; len(rest) > 0; {
		n := min(len(rest), 30_000)
		fmt.Fprintf(&chunked, "%x\r\n%s\r\n", n, rest[:n])
		rest = rest[n:]
	}
	chunked.WriteString("0\r\n\r\n")
	framings := map[string]string{
		"chunked":        "Transfer-Encoding: chunked\r\n\r\n" + chunked.String(),
		"content-length": fmt.Sprintf("Content-Length: %d\r\n\r\n%s", len(body), body),
	}
	want := fmt.Sprintf("POST /up %d %x", len(body), sha256.Sum256(body))
	for name, framed := range framings {
		t.Run(name, func(t *testing.T) {
			c, br := h.rawH1(t)
			io.WriteString(c, "POST /up HTTP/1.1\r\nHost: "+apiHost+"\r\n"+framed+
				"GET /next HTTP/1.1\r\nHost: "+apiHost+"\r\n\r\n"+
				"POST /small HTTP/1.1\r\nHost: "+apiHost+"\r\nContent-Length: 3\r\n\r\nabc")
			if _, got := readResp(t, br, "POST"); got != want {
				t.Fatalf("bulk body: upstream saw %q, want %q", got, want)
			}
			if _, got := readResp(t, br, "GET"); !strings.HasPrefix(got, "GET /next 0 ") {
				t.Fatalf("pipelined GET: %q", got)
			}
			if _, got := readResp(t, br, "POST"); !strings.HasPrefix(got, "POST /small 3 ") {
				t.Fatalf("pipelined POST: %q", got)
			}
			for range 3 {
				if ev := h.rec.next(t); ev.Status != http.StatusOK {
					t.Fatalf("audit %+v", ev)
				}
			}
		})
	}
}

// TestUploadBatch_StalledBulkBodyReachesUpstreamThenTimesOut: a bulk body
// that stops midway: what came so far reaches the upstream while the relay
// waits (nothing is held in the cork), the body idle timeout still fires
// (408), and the upstream sees a failed, not a complete, body.
func TestUploadBatch_StalledBulkBodyReachesUpstreamThenTimesOut(t *testing.T) {
	seen := make(chan int, 1)
	sent := 150_000
	got := make(chan struct{})
	h := newHarness(t, harnessOpts{
		handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			b := make([]byte, sent)
			if _, err := io.ReadFull(r.Body, b); err == nil {
				close(got)
			}
			rest, err := io.ReadAll(r.Body)
			seen <- len(b) + len(rest)
			if err == nil {
				io.WriteString(w, "complete?")
			}
		}),
		mutate: func(c *Config) { c.BodyIdleTimeout = time.Second },
	})
	c, br := h.rawH1(t)
	io.WriteString(c, "POST /stall HTTP/1.1\r\nHost: "+apiHost+"\r\nContent-Length: 1000000\r\n\r\n"+strings.Repeat("s", sent))
	start := time.Now()
	select {
	case <-got:
	case <-time.After(900 * time.Millisecond):
		t.Fatal("the part of the body the client sent did not reach the upstream while the relay waited for more")
	}
	resp, _ := readResp(t, br, "POST")
	if resp.StatusCode != http.StatusRequestTimeout {
		t.Fatalf("status %d, want 408", resp.StatusCode)
	}
	if d := time.Since(start); d > 5*time.Second {
		t.Fatalf("408 after %v, BodyIdleTimeout 1s", d)
	}
	select {
	case n := <-seen:
		if n >= 1000000 {
			t.Fatalf("the upstream read a complete body of %d bytes", n)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("the upstream handler never finished")
	}
	if ev := h.rec.next(t); ev.Status != http.StatusRequestTimeout {
		t.Errorf("audit %+v, want 408", ev)
	}
}
