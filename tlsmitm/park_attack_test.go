package tlsmitm

import (
	"bufio"
	"context"
	"crypto/tls"
	"fmt"
	"io"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
)

// Attacks on the park (park.go): what a client can do to a connection
// around the moment it parks, and what the server must still hold to.

// TestParkAttack_ParkedH2HoldsNoReadBuffer: an h2 connection waiting for
// its next frame holds no read buffer (h2buffers.go), parked or not, also
// when the last frame it read was read through the buffer (one longer
// than a frame header: here a frame of an unknown type, which is ignored).
func TestParkAttack_ParkedH2HoldsNoReadBuffer(t *testing.T) {
	h := parkingHarness(t, nil)
	r := dialRawH2(t, h)
	r.mustGet("/")
	waitParked(t, h, 1)
	r.fr.WriteRawFrame(0xfa, 0, 0, make([]byte, 32))
	time.Sleep(4 * testParkAfter) // it wakes, reads the frame, waits ParkAfter and parks again
	waitParked(t, h, 1)
	if n := h.srv.stats.h2Buffers.Load(); n != 0 {
		t.Fatalf("a parked h2 connection holds %d buffers, want none", n)
	}
}

// splitConn is a client's socket whose writes can be held back, so that a
// test puts a TLS record on the wire in pieces, at times of its choosing.
type splitConn struct {
	net.Conn
	mu   sync.Mutex
	hold bool
	held []byte
}

func (c *splitConn) Write(p []byte) (int, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.hold {
		c.held = append(c.held, p...)
		return len(p), nil
	}
	return c.Conn.Write(p)
}

// capture returns what write puts on the wire, held back.
func (c *splitConn) capture(write func()) []byte {
	c.mu.Lock()
	c.hold = true
	c.mu.Unlock()
	write()
	c.mu.Lock()
	defer c.mu.Unlock()
	c.hold = false
	b := c.held
	c.held = nil
	return b
}

func dialSplit(t *testing.T, h *harness, proto string) (*tls.Conn, *splitConn) {
	t.Helper()
	raw, err := net.Dial("tcp", h.addr)
	if err != nil {
		t.Fatal(err)
	}
	hc := &splitConn{Conn: raw}
	c := tls.Client(hc, &tls.Config{ServerName: apiHost, RootCAs: h.pool, NextProtos: []string{proto}})
	t.Cleanup(func() { c.Close() })
	if err := c.Handshake(); err != nil {
		t.Fatal(err)
	}
	return c, hc
}

// TestParkAttack_TLSRecordSplitAcrossThePark: a TLS record whose first
// bytes reach the socket before the connection parks (crypto/tls keeps
// them, its read timed out) and the rest after it, or both while it is
// parked, is read whole: the request in it is served, over HTTP/1.1 and h2.
func TestParkAttack_TLSRecordSplitAcrossThePark(t *testing.T) {
	for _, beforePark := range []bool{true, false} {
		t.Run(map[bool]string{true: "first bytes before the park", false: "all while parked"}[beforePark], func(t *testing.T) {
			t.Run("http1.1", func(t *testing.T) {
				h := parkingHarness(t, nil)
				c, hc := dialSplit(t, h, "http/1.1")
				br := bufio.NewReader(c)
				get := func(path string) {
					t.Helper()
					resp, err := http.ReadResponse(br, nil)
					if err != nil {
						t.Fatalf("%s: %v", path, err)
					}
					b, _ := io.ReadAll(resp.Body)
					resp.Body.Close()
					if resp.StatusCode != 200 || string(b) != "hello GET "+path {
						t.Fatalf("%s: %d %q", path, resp.StatusCode, b)
					}
				}
				io.WriteString(c, "GET /first HTTP/1.1\r\nHost: "+apiHost+"\r\n\r\n")
				get("/first")
				rec := hc.capture(func() { io.WriteString(c, "GET /second HTTP/1.1\r\nHost: "+apiHost+"\r\n\r\n") })
				if !beforePark {
					waitParked(t, h, 1)
				}
				hc.Conn.Write(rec[:3])
				time.Sleep(3 * testParkAfter)
				if beforePark {
					waitParked(t, h, 1) // its wait timed out mid-record: it parked all the same
				}
				hc.Conn.Write(rec[3:])
				get("/second")
			})
			t.Run("h2", func(t *testing.T) {
				h := parkingHarness(t, nil)
				c, hc := dialSplit(t, h, "h2")
				r := startRawH2(t, c)
				if resp := r.read(r.send(reqFields("GET", "/first"), true), 3*time.Second); resp.status != "200" {
					t.Fatalf("/first: %+v", resp)
				}
				var id uint32
				rec := hc.capture(func() { id = r.send(reqFields("GET", "/second"), true) })
				if !beforePark {
					waitParked(t, h, 1)
				}
				hc.Conn.Write(rec[:3])
				time.Sleep(3 * testParkAfter)
				if beforePark {
					waitParked(t, h, 1)
				}
				hc.Conn.Write(rec[3:])
				if resp := r.read(id, 3*time.Second); resp.status != "200" || resp.body != "hello GET /second" {
					t.Fatalf("/second: %+v", resp)
				}
			})
		})
	}
}

// TestParkAttack_PipelinedRequestsNeverWaitParked: requests pipelined
// behind one another, one behind a bulk upload (whose socket reads went
// through the 64 KiB read-ahead, batchio.go, which then holds the next
// request's records), are all answered, in order, by a server that parks
// every wait at once: a request already read above the socket is never
// left waiting for a byte the client will not send.
func TestParkAttack_PipelinedRequestsNeverWaitParked(t *testing.T) {
	h := newHarness(t, harnessOpts{mutate: func(c *Config) { c.ParkAfter = time.Nanosecond }})
	c, err := tls.Dial("tcp", h.addr, &tls.Config{ServerName: apiHost, RootCAs: h.pool, NextProtos: []string{"http/1.1"}})
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	body := strings.Repeat("u", 300<<10)
	var all strings.Builder
	paths := []string{"/a", "/upload", "/b", "/c"}
	for _, p := range paths {
		if p == "/upload" {
			fmt.Fprintf(&all, "POST %s HTTP/1.1\r\nHost: %s\r\nContent-Length: %d\r\n\r\n%s", p, apiHost, len(body), body)
			continue
		}
		fmt.Fprintf(&all, "GET %s HTTP/1.1\r\nHost: %s\r\n\r\n", p, apiHost)
	}
	go io.WriteString(c, all.String())
	br := bufio.NewReader(c)
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	for _, p := range paths {
		resp, err := http.ReadResponse(br, nil)
		if err != nil {
			t.Fatalf("%s: %v", p, err)
		}
		b, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if resp.StatusCode != 200 || !strings.HasSuffix(string(b), " "+p) {
			t.Fatalf("%s: %d %q", p, resp.StatusCode, b)
		}
	}
}

// TestParkAttack_ClientCannotOutliveIdleTimeout: what wakes a parked
// connection without being a request does not extend its idle timeout:
// h2 PINGs every 2 ParkAfter (each wakes it and it parks again), or the
// first bytes of a TLS record never finished (it waits for the rest, no
// longer parked, until the idle deadline): the connection ends at its
// idle timeout all the same.
func TestParkAttack_ClientCannotOutliveIdleTimeout(t *testing.T) {
	const idle = 500 * time.Millisecond
	check := func(t *testing.T, start time.Time, ended bool) {
		t.Helper()
		if !ended {
			t.Fatal("the connection was not ended")
		}
		if d := time.Since(start); d < idle*3/4 || d > idle+time.Second {
			t.Errorf("ended %v after the last request, want about %v", d, idle)
		}
	}
	t.Run("h2 pings", func(t *testing.T) {
		h := parkingHarness(t, func(c *Config) { c.IdleTimeout = idle })
		r := dialRawH2(t, h)
		r.mustGet("/")
		start := time.Now()
		var goAway http2.Frame
		for i := 0; goAway == nil && time.Since(start) < idle+2*time.Second; i++ {
			r.fr.WritePing(false, [8]byte{byte(i)})
			goAway = r.nextFrame(2*testParkAfter, func(f http2.Frame) bool { _, ok := f.(*http2.GoAwayFrame); return ok })
		}
		check(t, start, goAway != nil)
	})
	for _, proto := range []string{"http/1.1", "h2"} {
		t.Run(proto+" half a record", func(t *testing.T) {
			h := parkingHarness(t, func(c *Config) { c.IdleTimeout = idle })
			c, sc := dialSplit(t, h, proto)
			if proto == "h2" {
				io.WriteString(c, http2.ClientPreface)
				fr := http2.NewFramer(c, c)
				fr.WriteSettings()
				r := &rawH2{t: t, c: c, fr: fr, next: 1}
				r.enc = hpack.NewEncoder(&r.hbuf)
				fr.ReadMetaHeaders = hpack.NewDecoder(65536, nil)
				r.mustGet("/")
			} else {
				io.WriteString(c, "GET / HTTP/1.1\r\nHost: "+apiHost+"\r\n\r\n")
				resp, err := http.ReadResponse(bufio.NewReader(c), nil)
				if err != nil {
					t.Fatal(err)
				}
				io.Copy(io.Discard, resp.Body)
			}
			start := time.Now()
			waitParked(t, h, 1)
			rec := sc.capture(func() { io.WriteString(c, "GET / HTTP/1.1\r\n") })
			sc.Conn.Write(rec[:4])
			waitParked(t, h, 0)
			sc.Conn.SetReadDeadline(time.Now().Add(idle + 2*time.Second))
			_, err := io.Copy(io.Discard, sc.Conn) // a GOAWAY first for h2, then the end
			check(t, start, err == nil || !isTimeout(err))
			waitFor(t, 2*time.Second, "the connection to be gone", func() bool { return h.srv.Stats().ActiveHTTPConns == 0 })
		})
	}
}

// TestParkAttack_ResetWhileParked: a client that resets its parked
// connection (RST) ends it: nothing stays counted, parked or open.
func TestParkAttack_ResetWhileParked(t *testing.T) {
	for _, h2 := range []bool{false, true} {
		t.Run(map[bool]string{false: "http1.1", true: "h2"}[h2], func(t *testing.T) {
			h := parkingHarness(t, nil)
			var raw *net.TCPConn
			tr := h.client(h2).Transport.(*http.Transport)
			tr.DialContext = func(ctx context.Context, _, _ string) (net.Conn, error) {
				var d net.Dialer
				c, err := d.DialContext(ctx, "tcp", h.addr)
				raw, _ = c.(*net.TCPConn)
				return c, err
			}
			resp, err := (&http.Client{Transport: tr}).Get("https://" + apiHost + "/")
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
			waitParked(t, h, 1)
			raw.SetLinger(0)
			raw.Close()
			waitFor(t, 3*time.Second, "the reset connection to end", func() bool {
				st := h.srv.Stats()
				return st.ParkedConns == 0 && st.ActiveHTTPConns == 0 && st.ActiveConns == 0
			})
		})
	}
}

// TestParkAttack_NoGoroutineLeft: connections parked and woken many times
// (every wait parks at once), over HTTP/1.1 and h2, then closed by their
// clients, by the idle timeout or by the drain, leave no goroutine behind
// once Serve has returned, and no count.
func TestParkAttack_NoGoroutineLeft(t *testing.T) {
	base := goleak.IgnoreCurrent()
	func() {
		h := newHarness(t, harnessOpts{noCleanup: true, mutate: func(c *Config) {
			c.ParkAfter = time.Nanosecond
			c.IdleTimeout = time.Second
		}})
		var wg sync.WaitGroup
		for i := range 8 {
			wg.Add(1)
			cl := h.client(i%2 == 0)
			go func() {
				defer wg.Done()
				for j := range 10 {
					resp, err := cl.Post("https://"+apiHost+"/", "text/plain", strings.NewReader("x"))
					if err != nil {
						t.Errorf("client %d request %d: %v", i, j, err)
						return
					}
					io.Copy(io.Discard, resp.Body)
					resp.Body.Close()
					time.Sleep(time.Duration(j%3) * 5 * time.Millisecond)
				}
				if i%4 == 1 { // the others are left to the idle timeout, or the drain
					cl.Transport.(*http.Transport).CloseIdleConnections()
				}
			}()
		}
		wg.Wait()
		if !t.Failed() {
			waitFor(t, 5*time.Second, "the idle connections to time out", func() bool { return h.srv.Stats().ActiveHTTPConns == 0 })
		}
		r := dialRawH2(t, h) // parked at the drain
		r.mustGet("/")
		waitParked(t, h, 1)
		h.stop(t)
		r.c.Close()
		if st := h.srv.Stats(); st.ParkedConns != 0 || st.ActiveHTTPConns != 0 || st.ActiveConns != 0 || st.ActiveRequests != 0 {
			t.Errorf("after Serve returned: %+v", st)
		}
		for _, tr := range h.clients {
			tr.CloseIdleConnections()
		}
		h.up.Close()
	}()
	checkGoroutines(t, base)
}

// TestParkAttack_DrainRacesThePark: a graceful stop that comes while
// connections park and wake (a ParkAfter of 1ms, clients sending requests
// at random intervals around it) ends them all: Serve returns before the
// drain deadline, with nothing parked or open left.
func TestParkAttack_DrainRacesThePark(t *testing.T) {
	h := newHarness(t, harnessOpts{mutate: func(c *Config) {
		c.ParkAfter = time.Millisecond
		c.DrainTimeout = 5 * time.Second
	}})
	stop := make(chan struct{})
	var wg sync.WaitGroup
	for i := range 12 {
		wg.Add(1)
		cl := h.client(i%2 == 0)
		go func() {
			defer wg.Done()
			for j := 0; ; j++ {
				select {
				case <-stop:
					return
				case <-time.After(time.Duration(j%5) * 700 * time.Microsecond):
				}
				resp, err := cl.Get("https://" + apiHost + "/")
				if err != nil {
					continue // the drain has begun
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
			}
		}()
	}
	time.Sleep(150 * time.Millisecond)
	start := time.Now()
	h.cancel()
	select {
	case err := <-h.done:
		if err != nil {
			t.Errorf("Serve: %v", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("Serve did not return")
	}
	h.done <- nil
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("Serve took %v to return, want the connections ended well before the drain deadline", d)
	}
	close(stop)
	wg.Wait()
	if st := h.srv.Stats(); st.ParkedConns != 0 || st.ActiveHTTPConns != 0 || st.ActiveConns != 0 {
		t.Errorf("after Serve returned: %+v", st)
	}
}
