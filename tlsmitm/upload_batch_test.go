package tlsmitm

// Review of 8ca51cf: bulk request bodies batched (a read-ahead on the
// client's socket, a cork on the upstream's, flushed before each read(2)
// from the client).

import (
	"bufio"
	"io"
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

