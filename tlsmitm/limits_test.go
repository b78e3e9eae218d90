package tlsmitm

import (
	"crypto/tls"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"strings"
	"testing"
	"time"
)

// TestShare_HeavySourcesLeaveAReserve: one source cannot take the last
// quarter of MaxConns, and a new source still gets its floor once the heavy
// ones hold everything else.
func TestShare_HeavySourcesLeaveAReserve(t *testing.T) {
	l := newSourceLimiter(&Config{MaxConns: 256, MaxConnsPerSource: 256, MaxRequests: 1, MaxRequestsPerSource: 1})
	take := func(ip string) int {
		n := 0
		for ; n < 1000; n++ {
			if _, err := l.acquireConn(netip.MustParseAddr(ip)); err != nil {
				return n
			}
		}
		return n
	}
	if got := take("10.0.0.1"); got != 192 {
		t.Errorf("heavy source got %d connections, want 192 (three quarters of 256)", got)
	}
	if got := take("10.0.0.2"); got != 4 {
		t.Errorf("second source got %d connections once three quarters were taken, want its floor 4 (256/64)", got)
	}
	for i := 3; i < 3+15; i++ {
		if got := take(fmt.Sprintf("10.0.0.%d", i)); got != 4 {
			t.Fatalf("source %d got %d connections from the reserve, want 4", i, got)
		}
	}
	if got := take("10.0.1.1"); got != 0 {
		t.Errorf("with MaxConns held, a new source got %d, want 0", got)
	}
}

// blockingUpstream holds every request until release is closed, and reports
// each arrival on arrived.
func blockingUpstream() (http.Handler, chan struct{}, chan struct{}) {
	arrived, release := make(chan struct{}, 64), make(chan struct{})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.Copy(io.Discard, r.Body)
		if r.URL.Path == "/hold" {
			arrived <- struct{}{}
			<-release
		}
		io.WriteString(w, "ok")
	}), arrived, release
}

// TestLimits_RequestsPerSourceAnswered503: a source's requests beyond
// MaxRequestsPerSource, on any number of connections, get 503 with
// Retry-After, are audited with the limit named and counted; another source
// is still served.
func TestLimits_RequestsPerSourceAnswered503(t *testing.T) {
	for _, p := range protocols {
		t.Run(p.name, func(t *testing.T) {
			handler, arrived, release := blockingUpstream()
			h := newHarness(t, harnessOpts{handler: handler, mutate: func(c *Config) { c.MaxRequestsPerSource = 2 }})
			defer close(release)
			c := h.client(p.h2)
			for i := 0; i < 2; i++ {
				go func() {
					if resp, err := c.Get("https://" + apiHost + "/hold"); err == nil {
						resp.Body.Close()
					}
				}()
				<-arrived
			}
			resp, err := c.Get("https://" + apiHost + "/third")
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusServiceUnavailable || resp.Header.Get("Retry-After") == "" {
				t.Errorf("third request: %s, Retry-After %q; want 503 with Retry-After", resp.Status, resp.Header.Get("Retry-After"))
			}
			ev := h.rec.next(t)
			if ev.Status != 503 || !strings.Contains(ev.Err, "per-source limit 2") {
				t.Errorf("audit: status %d, err %q; want 503 naming the per-source limit", ev.Status, ev.Err)
			}
			if got := h.srv.Stats().RefusedRequests; got != 1 {
				t.Errorf("RefusedRequests = %d, want 1", got)
			}
			getOK(t, h.clientFrom(t, p.h2, "127.0.0.2"))
		})
	}
}

// TestLimits_StalledUploadFailsWithin408: a request body that stops making
// progress fails after BodyIdleTimeout with 408, the upstream request is
// cancelled, and it is audited and counted.
func TestLimits_StalledUploadFailsWith408(t *testing.T) {
	for _, p := range protocols {
		t.Run(p.name, func(t *testing.T) {
			upErr := make(chan error, 1)
			handler := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				_, err := io.Copy(io.Discard, r.Body)
				upErr <- err
			})
			h := newHarness(t, harnessOpts{handler: handler, mutate: func(c *Config) { c.BodyIdleTimeout = 300 * time.Millisecond }})
			pr, pw := io.Pipe()
			defer pw.Close()
			go pw.Write(make([]byte, 10)) // then nothing
			req, _ := http.NewRequest("POST", "https://"+apiHost+"/upload", pr)
			req.ContentLength = 1000
			start := time.Now()
			resp, err := h.client(p.h2).Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusRequestTimeout {
				t.Errorf("stalled upload: %s, want 408", resp.Status)
			}
			if d := time.Since(start); d < 290*time.Millisecond {
				t.Errorf("stalled upload failed after %v, before BodyIdleTimeout", d)
			}
			if err := <-upErr; err == nil {
				t.Error("the upstream read a whole body; want the upstream request cancelled")
			}
			ev := h.rec.next(t)
			if ev.Status != 408 || !strings.Contains(ev.Err, "request body idle") {
				t.Errorf("audit: status %d, err %q; want 408, request body idle", ev.Status, ev.Err)
			}
			if got := h.srv.Stats().BodyTimeouts; got != 1 {
				t.Errorf("BodyTimeouts = %d, want 1", got)
			}
		})
	}
}

// TestLimits_SlowButMovingUploadIsNotCut: a body that keeps arriving, more
// slowly than BodyIdleTimeout in total, goes through.
func TestLimits_SlowButMovingUploadIsNotCut(t *testing.T) {
	for _, p := range protocols {
		t.Run(p.name, func(t *testing.T) {
			h := newHarness(t, harnessOpts{mutate: func(c *Config) { c.BodyIdleTimeout = 400 * time.Millisecond }})
			pr, pw := io.Pipe()
			go func() {
				for i := 0; i < 8; i++ {
					pw.Write([]byte("0123456789"))
					time.Sleep(100 * time.Millisecond)
				}
				pw.Close()
			}()
			req, _ := http.NewRequest("POST", "https://"+apiHost+"/upload", pr)
			resp, err := h.client(p.h2).Do(req)
			if err != nil {
				t.Fatal(err)
			}
			resp.Body.Close()
			if resp.StatusCode != http.StatusOK {
				t.Errorf("slow upload: %s, want 200", resp.Status)
			}
		})
	}
}

// TestIntercept_H2SmallResponseHoldsItsSlotUntilWritten: a response small
// enough to sit in net/http's stream buffer when the handler returns still
// holds its request slot while a client that never opens its window keeps
// it unsent, and frees it when the write idle deadline resets the stream.
func TestIntercept_H2SmallResponseHoldsItsSlotUntilWritten(t *testing.T) {
	h := newHarness(t, harnessOpts{mutate: func(c *Config) { c.WriteIdleTimeout = time.Second }})
	c, err := tls.Dial("tcp", h.addr, &tls.Config{ServerName: apiHost, RootCAs: h.pool, NextProtos: []string{"h2"}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	floodConn(c, "noread", 1)
	// The upstream answers at once; the body waits for the client's window
	// (in net/http's stream buffer once the handler has returned).
	time.Sleep(400 * time.Millisecond)
	if n := h.srv.Stats().ActiveRequests; n != 1 {
		t.Fatalf("%d requests in flight while the response waits for the client's window; want 1", n)
	}
	waitFor(t, 10*time.Second, "the request's slot released", func() bool { return h.srv.Stats().ActiveRequests == 0 })
	if ev := h.rec.nextWithin(t, 10*time.Second); ev.Status != 200 {
		t.Errorf("audit = %+v, want the upstream's 200", ev)
	}
}

// TestIntercept_H2WindowNeverOpenedIsCutAfterWriteIdle: an h2 client that
// never opens its flow-control window pins no request past
// WriteIdleTimeout: the upstream response is abandoned, audited, and the
// request's slot is free again.
func TestIntercept_H2WindowNeverOpenedIsCutAfterWriteIdle(t *testing.T) {
	h := newHarness(t, harnessOpts{
		mutate: func(c *Config) { c.WriteIdleTimeout = 300 * time.Millisecond },
		handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			buf := make([]byte, 32<<10)
			for i := 0; i < 1024; i++ { // 32 MiB, far beyond every window
				if _, err := w.Write(buf); err != nil {
					return
				}
			}
		}),
	})
	c, err := tls.Dial("tcp", h.addr, &tls.Config{ServerName: apiHost, RootCAs: h.pool, NextProtos: []string{"h2"}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	floodConn(c, "noread", 1)
	ev := h.rec.nextWithin(t, 20*time.Second)
	if ev.Err == "" {
		t.Errorf("audit = %+v, want the response abandoned after the write idle timeout", ev)
	}
	waitFor(t, 10*time.Second, "the request's slot released", func() bool { return h.srv.Stats().ActiveRequests == 0 })
}
