package tlsmitm

import (
	"bufio"
	"crypto/tls"
	"io"
	"net/http"
	"net/http/httptrace"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
	"golang.org/x/net/http2"
)

// Idle connections park (park.go): they are served on after it, and the
// idle timeout and the drain still end them.

const testParkAfter = 50 * time.Millisecond

func parkingHarness(t *testing.T, mutate func(*Config)) *harness {
	return newHarness(t, harnessOpts{mutate: func(c *Config) {
		c.ParkAfter = testParkAfter
		if mutate != nil {
			mutate(c)
		}
	}})
}

func waitParked(t *testing.T, h *harness, n int64) {
	t.Helper()
	waitFor(t, 3*time.Second, "connections to park", func() bool { return h.srv.Stats().ParkedConns == n })
}

// TestPark_IdleConnectionsParkAndServeOn: a keep-alive connection idle for
// ParkAfter parks, and its next request is served on the same connection,
// over HTTP/1.1 and h2, again and again.
func TestPark_IdleConnectionsParkAndServeOn(t *testing.T) {
	for _, h2 := range []bool{false, true} {
		t.Run(map[bool]string{false: "http1.1", true: "h2"}[h2], func(t *testing.T) {
			h := parkingHarness(t, nil)
			cl := h.client(h2)
			for i := range 4 {
				reused := false
				ctx := httptrace.WithClientTrace(t.Context(), &httptrace.ClientTrace{GotConn: func(ci httptrace.GotConnInfo) { reused = ci.Reused }})
				req, _ := http.NewRequestWithContext(ctx, "POST", "https://"+apiHost+"/echo", strings.NewReader("body"))
				resp, err := cl.Do(req)
				if err != nil {
					t.Fatalf("request %d: %v", i, err)
				}
				b, _ := io.ReadAll(resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 || string(b) != "hello POST /echo" || resp.ProtoMajor != map[bool]int{false: 1, true: 2}[h2] {
					t.Fatalf("request %d: %s %d %q", i, resp.Proto, resp.StatusCode, b)
				}
				if i > 0 && !reused {
					t.Errorf("request %d came on a new connection", i)
				}
				waitParked(t, h, 1)
			}
			for _, tr := range h.clients {
				tr.CloseIdleConnections()
			}
			waitFor(t, 3*time.Second, "the connection to end", func() bool {
				st := h.srv.Stats()
				return st.ParkedConns == 0 && st.ActiveHTTPConns == 0
			})
		})
	}
}

// TestPark_IdleTimeoutEndsAParkedConnection: a parked connection still ends
// at its idle timeout, counted from its last request, not from the park:
// close_notify for HTTP/1.1, GOAWAY NO_ERROR for h2.
func TestPark_IdleTimeoutEndsAParkedConnection(t *testing.T) {
	const idle = 400 * time.Millisecond
	t.Run("http1.1", func(t *testing.T) {
		h := parkingHarness(t, func(c *Config) { c.IdleTimeout = idle })
		c, err := tls.Dial("tcp", h.addr, &tls.Config{ServerName: apiHost, RootCAs: h.pool, NextProtos: []string{"http/1.1"}})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		io.WriteString(c, "GET / HTTP/1.1\r\nHost: "+apiHost+"\r\n\r\n")
		br := bufio.NewReader(c)
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		start := time.Now()
		waitParked(t, h, 1)
		c.SetReadDeadline(time.Now().Add(5 * time.Second))
		if n, err := br.Read(make([]byte, 1)); err != io.EOF {
			t.Fatalf("read %d bytes, %v; want the connection closed (EOF)", n, err)
		}
		if d := time.Since(start); d < idle*3/4 || d > idle+time.Second {
			t.Errorf("closed %v after the response, want about %v", d, idle)
		}
	})
	t.Run("h2", func(t *testing.T) {
		h := parkingHarness(t, func(c *Config) { c.IdleTimeout = idle })
		r := dialRawH2(t, h)
		r.mustGet("/")
		start := time.Now()
		waitParked(t, h, 1)
		f := r.nextFrame(5*time.Second, func(f http2.Frame) bool { _, ok := f.(*http2.GoAwayFrame); return ok })
		if f == nil || f.(*http2.GoAwayFrame).ErrCode != http2.ErrCodeNo || f.(*http2.GoAwayFrame).LastStreamID != 1 {
			t.Fatalf("got %v, want GOAWAY NO_ERROR after stream 1", f)
		}
		if d := time.Since(start); d < idle*3/4 || d > idle+time.Second {
			t.Errorf("went away %v after the response, want about %v", d, idle)
		}
	})
}

// TestPark_DrainEndsParkedConnections: a graceful stop reaches parked
// connections at once (HTTP/1.1 closed, h2 sent GOAWAY) and Serve returns
// well before the drain deadline.
func TestPark_DrainEndsParkedConnections(t *testing.T) {
	h := parkingHarness(t, func(c *Config) { c.DrainTimeout = 10 * time.Second })
	h1 := h.client(false)
	resp, err := h1.Get("https://" + apiHost + "/")
	if err != nil {
		t.Fatal(err)
	}
	io.Copy(io.Discard, resp.Body) // the connection stays open
	resp.Body.Close()
	r := dialRawH2(t, h)
	r.mustGet("/")
	waitParked(t, h, 2)
	goAway := make(chan http2.Frame, 1)
	go func() {
		goAway <- r.nextFrame(5*time.Second, func(f http2.Frame) bool { _, ok := f.(*http2.GoAwayFrame); return ok })
	}()
	start := time.Now()
	h.stop(t)
	if d := time.Since(start); d > 2*time.Second {
		t.Errorf("Serve took %v to return with parked connections, want them ended at once", d)
	}
	if f := <-goAway; f == nil {
		t.Error("the parked h2 connection got no GOAWAY")
	}
	if st := h.srv.Stats(); st.ParkedConns != 0 || st.ActiveHTTPConns != 0 {
		t.Errorf("after Serve returned: %+v", st)
	}
}

// TestPark_FrameSplitAcrossTheParkIsRead: an h2 frame whose first bytes
// come before the connection would park and the rest after is read whole,
// and so is an HTTP/1.1 request head cut the same way.
func TestPark_FrameSplitAcrossTheParkIsRead(t *testing.T) {
	t.Run("h2", func(t *testing.T) {
		h := parkingHarness(t, nil)
		r := dialRawH2(t, h)
		r.mustGet("/")
		waitParked(t, h, 1)
		// A PING whose header comes in two writes, 3 ParkAfter apart.
		ping := []byte{0, 0, 8, byte(http2.FramePing), 0, 0, 0, 0, 0, 1, 2, 3, 4, 5, 6, 7, 8}
		r.c.Write(ping[:3])
		time.Sleep(3 * testParkAfter)
		r.c.Write(ping[3:])
		f := r.nextFrame(3*time.Second, func(f http2.Frame) bool { p, ok := f.(*http2.PingFrame); return ok && p.IsAck() })
		if f == nil || f.(*http2.PingFrame).Data != [8]byte{1, 2, 3, 4, 5, 6, 7, 8} {
			t.Fatalf("got %v, want the PING acknowledged", f)
		}
		r.mustGet("/")
	})
	t.Run("http1.1", func(t *testing.T) {
		h := parkingHarness(t, nil)
		c, err := tls.Dial("tcp", h.addr, &tls.Config{ServerName: apiHost, RootCAs: h.pool, NextProtos: []string{"http/1.1"}})
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		br := bufio.NewReader(c)
		head := "GET /second HTTP/1.1\r\nHost: " + apiHost + "\r\n\r\n"
		for i, part := range []string{"GET /first HTTP/1.1\r\nHost: " + apiHost + "\r\n\r\n", head[:5], head[5:]} {
			switch i {
			case 1:
				waitParked(t, h, 1)
			case 2: // the head's first bytes woke the connection: it waits for the rest
				time.Sleep(3 * testParkAfter)
			}
			io.WriteString(c, part)
			if i == 1 {
				continue
			}
			resp, err := http.ReadResponse(br, nil)
			if err != nil {
				t.Fatalf("part %d: %v", i, err)
			}
			b, _ := io.ReadAll(resp.Body)
			resp.Body.Close()
			if resp.StatusCode != 200 || !strings.Contains(string(b), map[int]string{0: "/first", 2: "/second"}[i]) {
				t.Fatalf("part %d: %d %q", i, resp.StatusCode, b)
			}
		}
	})
}

// TestPark_NoGoroutineLeak: connections that parked, were served on and
// parked again leave no goroutine behind once Serve has returned.
func TestPark_NoGoroutineLeak(t *testing.T) {
	base := goleak.IgnoreCurrent()
	func() {
		h := newHarness(t, harnessOpts{noCleanup: true, mutate: func(c *Config) { c.ParkAfter = testParkAfter }})
		clients := []*http.Client{h.client(false), h.client(true)}
		for round := range 2 {
			for _, cl := range clients {
				resp, err := cl.Get("https://" + apiHost + "/")
				if err != nil {
					t.Fatal(err)
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
			waitParked(t, h, 2)
			if round == 1 {
				for _, tr := range h.clients[:1] {
					tr.CloseIdleConnections() // one ends while parked, the other at the drain
				}
			}
		}
		h.stop(t)
		if st := h.srv.Stats(); st.ParkedConns != 0 || st.ActiveHTTPConns != 0 {
			t.Errorf("after Serve returned: %+v", st)
		}
		h.up.Close()
	}()
	checkGoroutines(t, base)
}
