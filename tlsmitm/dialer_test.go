package tlsmitm

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/netip"
	"sync/atomic"
	"testing"
	"time"
)

func TestAddrPolicy(t *testing.T) {
	p := addrPolicy{
		denied: []netip.Prefix{netip.MustParsePrefix("10.213.0.0/24")},
		own: &ownAddrs{list: func() ([]net.Addr, error) {
			return []net.Addr{&net.IPNet{IP: net.ParseIP("192.0.2.7"), Mask: net.CIDRMask(24, 32)}}, nil
		}},
	}
	override := netip.MustParseAddrPort("127.0.0.1:9443")
	tests := []struct {
		name  string
		addr  string
		allow netip.AddrPort
		ok    bool
	}{
		{"public_v4", "203.0.113.9:443", netip.AddrPort{}, true},
		{"public_v6", "[2001:db8::1]:443", netip.AddrPort{}, true},
		{"loopback_v4", "127.0.0.1:443", netip.AddrPort{}, false},
		{"loopback_v6", "[::1]:443", netip.AddrPort{}, false},
		{"v4_mapped_loopback", "[::ffff:127.0.0.1]:443", netip.AddrPort{}, false},
		{"metadata_link_local", "169.254.169.254:443", netip.AddrPort{}, false},
		{"link_local_v6", "[fe80::1]:443", netip.AddrPort{}, false},
		{"unspecified", "0.0.0.0:443", netip.AddrPort{}, false},
		{"multicast", "224.0.0.1:443", netip.AddrPort{}, false},
		{"broadcast", "255.255.255.255:443", netip.AddrPort{}, false},
		{"bridge_subnet", "10.213.0.5:443", netip.AddrPort{}, false},
		{"host_own_address", "192.0.2.7:443", netip.AddrPort{}, false},
		{"override_exact_loopback", "127.0.0.1:9443", override, true},
		{"override_other_port_still_refused", "127.0.0.1:443", override, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := p.check(netip.MustParseAddrPort(tt.addr), tt.allow)
			if (err == nil) != tt.ok || (err != nil && !errors.Is(err, ErrUpstreamDenied)) {
				t.Errorf("check(%s) = %v, want ok=%v", tt.addr, err, tt.ok)
			}
		})
	}
}

// TestUpstreamDialer_RefusesLoopbackWithoutOverride dials a name that
// resolves to a live loopback listener: the dialer must refuse before
// connecting, and the listener must see nothing.
func TestUpstreamDialer_RefusesLoopbackWithoutOverride(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	var accepted atomic.Int32
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			accepted.Add(1)
			c.Close()
		}
	}()
	port := ln.Addr().(*net.TCPAddr).Port
	h := newHarness(t, harnessOpts{mutate: func(c *Config) {
		c.Resolver = staticResolver{"internal.intercept.test": {netip.MustParseAddr("127.0.0.1")}}
	}})
	st := h.srv.state.Load()
	_, err = h.srv.dialUpstream(context.Background(), st, "internal.intercept.test", itoa(port))
	if !errors.Is(err, ErrUpstreamDenied) {
		t.Fatalf("dial = %v, want ErrUpstreamDenied", err)
	}
	// The same address through an override naming it exactly is allowed.
	st.overrides["internal.intercept.test"] = Upstream{Host: "internal.intercept.test", Address: ln.Addr().String()}
	c, err := h.srv.dialUpstream(context.Background(), st, "internal.intercept.test", "443")
	if err != nil {
		t.Fatalf("dial through override = %v", err)
	}
	c.Close()
	time.Sleep(50 * time.Millisecond)
	if n := accepted.Load(); n != 1 {
		t.Errorf("listener accepted %d connections, want exactly the override's 1", n)
	}
}

func itoa(n int) string {
	return netip.AddrPortFrom(netip.IPv4Unspecified(), uint16(n)).String()[len("0.0.0.0:"):]
}

func TestIntercept_StuckReaderIsCutAfterWriteIdle(t *testing.T) {
	h := newHarness(t, harnessOpts{
		mutate: func(c *Config) { c.WriteIdleTimeout = 300 * time.Millisecond },
		handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			buf := make([]byte, 64<<10)
			for i := 0; i < 4096; i++ { // 256 MiB, far more than socket buffers
				if _, err := w.Write(buf); err != nil {
					return
				}
			}
		}),
	})
	resp, err := h.client(false).Get("https://" + apiHost + "/big")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	io.ReadFull(resp.Body, make([]byte, 1000)) // then stop reading
	// Filling the socket buffers and h2 windows (~10 MB through two TLS
	// layers) takes a few seconds under the race detector.
	ev := h.rec.nextWithin(t, 30*time.Second)
	if ev.Err == "" {
		t.Errorf("audit = %+v, want an aborted response soon after the write idle timeout", ev)
	}
}
