package tlsmitm

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptrace"
	"net/textproto"
	"strings"
	"testing"
	"time"
)

// TestH2Relay_UpstreamLegIsHTTP11ExceptGRPC: an h2 client's request goes
// to the upstream over the HTTP/1.1 relay's pool, one upstream connection
// reused across requests; gRPC keeps an h2 upstream leg (it has no
// HTTP/1.1 form).
func TestH2Relay_UpstreamLegIsHTTP11ExceptGRPC(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	c := h.client(true)
	for i, tc := range []struct{ contentType, wantUpstream string }{
		{"", "HTTP/1.1"},
		{"application/json", "HTTP/1.1"},
		{"application/grpc", "HTTP/2.0"},
		{"application/grpc+proto", "HTTP/2.0"},
	} {
		req, _ := http.NewRequest("POST", "https://"+apiHost+"/v1/messages", strings.NewReader("{}"))
		req.Header.Set("Authorization", "Bearer "+placeholder)
		if tc.contentType != "" {
			req.Header.Set("Content-Type", tc.contentType)
		}
		resp, err := c.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.ProtoMajor != 2 || resp.StatusCode != 200 || string(body) != "hello POST /v1/messages" {
			t.Fatalf("request %d: %s %d %q", i, resp.Proto, resp.StatusCode, body)
		}
		if got := resp.Header.Get("X-Upstream-Proto"); got != tc.wantUpstream {
			t.Errorf("content type %q: upstream leg %s, want %s", tc.contentType, got, tc.wantUpstream)
		}
		if resp.Header.Get("X-Auth-Is-Real") != "true" || resp.Header.Get("X-Saw-Placeholder") != "false" {
			t.Errorf("content type %q: credential not injected: %v", tc.contentType, resp.Header)
		}
		if ev := h.rec.next(t); ev.Status != 200 || ev.BytesIn != 2 || ev.BytesOut != int64(len(body)) || !ev.AuthInjected {
			t.Errorf("content type %q: audit event %+v", tc.contentType, ev)
		}
	}
	if n := h.srv.state.Load().h1pool.idleCount(); n != 1 {
		t.Errorf("%d idle HTTP/1.1 upstream connections after sequential requests, want 1 (reused)", n)
	}
}

// TestH2Relay_ClientResetCancelsUpstream: an h2 client that resets its
// stream while the upstream works has the upstream request cut.
func TestH2Relay_ClientResetCancelsUpstream(t *testing.T) {
	cw := newCancelWatch(t)
	ctx, cancel := context.WithCancel(context.Background())
	req, _ := http.NewRequestWithContext(ctx, "POST", "https://"+apiHost+"/v1/messages", strings.NewReader("{}"))
	errc := make(chan error, 1)
	go func() {
		resp, err := cw.h.client(true).Do(req)
		if err == nil {
			resp.Body.Close()
		}
		errc <- err
	}()
	<-cw.started
	cancel()
	select {
	case <-cw.cancelled:
	case <-time.After(3 * time.Second):
		t.Fatal("the upstream request was still running 3s after its h2 client reset the stream")
	}
	if err := <-errc; !errors.Is(err, context.Canceled) {
		t.Fatalf("client: %v, want its own cancellation", err)
	}
	if ev := cw.h.rec.next(t); ev.Status != statusClientClosed {
		t.Errorf("audit status %d, want %d (client closed)", ev.Status, statusClientClosed)
	}
}

// TestH2Relay_CutUpstreamBodyResetsStream: an upstream that closes before
// the end of its body (the length it announced, or the last chunk) leaves
// the h2 client with a failed read, never a body that looks whole.
func TestH2Relay_CutUpstreamBodyResetsStream(t *testing.T) {
	for _, length := range []string{"100000", ""} {
		t.Run("length="+length, func(t *testing.T) {
			h := newHarness(t, harnessOpts{handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				if length != "" {
					w.Header().Set("Content-Length", length)
				}
				io.WriteString(w, strings.Repeat("x", 40000))
				w.(http.Flusher).Flush()
				c, _, err := http.NewResponseController(w).Hijack()
				if err == nil {
					c.Close()
				}
			})})
			resp, err := h.client(true).Get("https://" + apiHost + "/cut")
			if err != nil {
				t.Fatal(err)
			}
			body, err := io.ReadAll(resp.Body)
			resp.Body.Close()
			if err == nil {
				t.Fatalf("read %d bytes and then a clean end of stream; want a stream error", len(body))
			}
			ev := h.rec.next(t)
			if !strings.Contains(ev.Err, "reading response body from upstream") {
				t.Errorf("audit err %q, want the upstream read failure", ev.Err)
			}
		})
	}
}

// TestH2Relay_UploadOfUnknownLengthStreams: an h2 upload without a length
// reaches the HTTP/1.1 upstream chunked, and each part as the client sends
// it (an interactive stream is not held back until the end).
func TestH2Relay_UploadOfUnknownLengthStreams(t *testing.T) {
	firstPart := make(chan string, 1)
	h := newHarness(t, harnessOpts{handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		buf := make([]byte, 5)
		n, _ := io.ReadFull(r.Body, buf)
		firstPart <- string(buf[:n])
		rest, _ := io.ReadAll(r.Body)
		fmt.Fprintf(w, "%s %v %s%s", r.Proto, r.TransferEncoding, buf[:n], rest)
	})})
	pr, pw := io.Pipe()
	req, _ := http.NewRequest("POST", "https://"+apiHost+"/upload", pr)
	type result struct {
		body string
		err  error
	}
	done := make(chan result, 1)
	go func() {
		resp, err := h.client(true).Do(req)
		if err != nil {
			done <- result{err: err}
			return
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		done <- result{string(b), err}
	}()
	io.WriteString(pw, "first")
	select {
	case got := <-firstPart:
		if got != "first" {
			t.Fatalf("upstream read %q first", got)
		}
	case <-time.After(3 * time.Second):
		t.Fatal("the first part of a streamed upload did not reach the upstream before the rest was sent")
	}
	io.WriteString(pw, " second")
	pw.Close()
	r := <-done
	if r.err != nil || r.body != "HTTP/1.1 [chunked] first second" {
		t.Fatalf("got %q, %v; want the whole body, chunked over HTTP/1.1", r.body, r.err)
	}
}

// TestH2Relay_EarlyHintsStayInterim: a 103's headers reach the client in
// the 103 and are not carried into the final response.
func TestH2Relay_EarlyHintsStayInterim(t *testing.T) {
	h := newHarness(t, harnessOpts{handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Link", "</style.css>; rel=preload")
		w.WriteHeader(http.StatusEarlyHints)
		w.Header().Del("Link")
		io.WriteString(w, "done")
	})})
	var hints []string
	req, _ := http.NewRequest("GET", "https://"+apiHost+"/", nil)
	req = req.WithContext(httptrace.WithClientTrace(req.Context(), &httptrace.ClientTrace{
		Got1xxResponse: func(code int, hdr textproto.MIMEHeader) error {
			hints = append(hints, fmt.Sprint(code, hdr.Get("Link")))
			return nil
		}}))
	resp, err := h.client(true).Do(req)
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if len(hints) != 1 || hints[0] != "103</style.css>; rel=preload" {
		t.Errorf("interim responses %q, want the one 103 with its Link", hints)
	}
	if got := resp.Header.Get("Link"); got != "" {
		t.Errorf("the final response carries the 103's Link %q", got)
	}
}
