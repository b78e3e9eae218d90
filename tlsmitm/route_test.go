package tlsmitm

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/clauderon/clauderond/tlsmitm/tlstest"
)

func TestStaticRouter(t *testing.T) {
	r, err := NewStaticRouter([]string{"API.Anthropic.com.", "*.usercontent.example"}, []string{"registry.npmjs.org", "*.pkg.dev", "api.anthropic.com"})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		sni      string
		want     Decision
		wantRule string
	}{
		{"api.anthropic.com", Intercept, "api.anthropic.com"},
		{"raw.usercontent.example", Intercept, "*.usercontent.example"},
		{"a.b.usercontent.example", Intercept, "*.usercontent.example"},
		{"usercontent.example", Deny, PolicyDefaultDeny},
		{"evilusercontent.example", Deny, PolicyDefaultDeny},
		{"registry.npmjs.org", Passthrough, "registry.npmjs.org"},
		{"europe-docker.pkg.dev", Passthrough, "*.pkg.dev"},
		{"anthropic.com", Deny, PolicyDefaultDeny},
		{"api.anthropic.com.evil.com", Deny, PolicyDefaultDeny},
	}
	for _, tt := range tests {
		t.Run(tt.sni, func(t *testing.T) {
			d, rule := r.Route(tt.sni)
			if d != tt.want || rule != tt.wantRule {
				t.Errorf("Route(%q) = %s, %s; want %s, %s", tt.sni, d, rule, tt.want, tt.wantRule)
			}
		})
	}
	if got := r.InterceptHosts(); len(got) != 1 || got[0] != "api.anthropic.com" {
		t.Errorf("InterceptHosts = %v", got)
	}
	for _, bad := range []string{"", "*", "a.*.com", "10.0.0.1", "bad name", "*.-x.com"} {
		if _, err := NewStaticRouter([]string{bad}, nil); err == nil {
			t.Errorf("NewStaticRouter(%q) accepted an invalid pattern", bad)
		}
	}
	// TestStaticRouter_WildcardOnPublicSuffixRefused: *.github.io would
	// intercept (or let through) anyone's GitHub Pages site.
	for _, ps := range []string{"*.github.io", "*.co.uk", "*.githubusercontent.com", "*.COM."} {
		if _, err := NewStaticRouter([]string{ps}, nil); err == nil || !strings.Contains(err.Error(), "public suffix") {
			t.Errorf("NewStaticRouter(intercept %q) = %v, want a public suffix error", ps, err)
		}
		if _, err := NewStaticRouter(nil, []string{ps}); err == nil || !strings.Contains(err.Error(), "public suffix") {
			t.Errorf("NewStaticRouter(passthrough %q) = %v, want a public suffix error", ps, err)
		}
	}
	var zero StaticRouter
	if d, _ := zero.Route("api.anthropic.com"); d != Deny {
		t.Errorf("zero StaticRouter routes to %s, want deny", d)
	}
}

// dialTLS connects to the proxy with sni and returns the handshake error.
func dialTLS(t *testing.T, addr string, cfg *tls.Config) (*tls.Conn, error) {
	t.Helper()
	raw, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err != nil {
		t.Fatal(err)
	}
	c := tls.Client(raw, cfg)
	c.SetDeadline(time.Now().Add(5 * time.Second))
	if err := c.Handshake(); err != nil {
		raw.Close()
		return nil, err
	}
	return c, nil
}

func TestDeny_UnknownSNIGetsTLSAlert(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	_, err := dialTLS(t, h.addr, &tls.Config{ServerName: "evil.example", RootCAs: h.pool})
	if err == nil || !strings.Contains(err.Error(), "remote error: tls: access denied") {
		t.Fatalf("handshake error = %v, want TLS alert access_denied", err)
	}
	ev := h.rec.next(t)
	if ev.Decision != Deny || ev.SNI != "evil.example" || ev.Rule != PolicyDefaultDeny || ev.Err == "" {
		t.Errorf("audit = %+v", ev)
	}
	if h.srv.Stats().Denied != 1 {
		t.Errorf("Stats().Denied = %d, want 1", h.srv.Stats().Denied)
	}
}

func TestDeny_NoSNIGetsUnrecognizedName(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	_, err := dialTLS(t, h.addr, &tls.Config{InsecureSkipVerify: true})
	if err == nil || !strings.Contains(err.Error(), "remote error: tls: unrecognized name") {
		t.Fatalf("handshake error = %v, want TLS alert unrecognized_name", err)
	}
	if ev := h.rec.next(t); ev.Decision != Deny || ev.Rule != PolicyNoSNI {
		t.Errorf("audit = %+v", ev)
	}
}

func TestDeny_IPLiteralSNI(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	// crypto/tls never sends an IP as SNI; patch a same-length name in.
	hello := tlstest.MustClientHello(tlstest.HelloOptions{ServerName: "aa.bbb.cc.dd"})
	hello = []byte(strings.Replace(string(hello), "aa.bbb.cc.dd", "10.200.30.40", 1))
	c, err := net.Dial("tcp", h.addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.Write(hello)
	c.SetReadDeadline(time.Now().Add(5 * time.Second))
	buf := make([]byte, 7)
	if _, err := io.ReadFull(c, buf); err != nil || buf[0] != 21 || buf[6] != alertUnrecognizedName {
		t.Fatalf("got % x (err %v), want a fatal unrecognized_name alert record", buf, err)
	}
	if ev := h.rec.next(t); ev.Decision != Deny || ev.Rule != PolicyIPLiteral || ev.SNI != "10.200.30.40" {
		t.Errorf("audit = %+v", ev)
	}
}

func TestPassthrough_SplicesBytesUntouched(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	// The client trusts only the upstream's CA: the handshake succeeds only
	// if the proxy did not terminate TLS.
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return (&net.Dialer{}).DialContext(ctx, "tcp", h.addr)
		},
		TLSClientConfig: &tls.Config{RootCAs: h.up.CA.Pool()},
	}
	defer tr.CloseIdleConnections()
	resp, err := (&http.Client{Transport: tr}).Get("https://pass.test/through")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(body) != "hello GET /through" || resp.Header.Get("X-Auth-Is-Real") != "false" {
		t.Errorf("body %q, auth-is-real %q: passthrough must not inject", body, resp.Header.Get("X-Auth-Is-Real"))
	}
	tr.CloseIdleConnections()
	ev := h.rec.next(t)
	if ev.Decision != Passthrough || ev.SNI != "pass.test" || ev.Rule != "pass.test" || ev.BytesIn < 200 || ev.BytesOut < 200 {
		t.Errorf("audit = %+v", ev)
	}
}

func TestPassthrough_RefusesLoopbackWithoutOverride(t *testing.T) {
	var accepted atomic.Int32
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
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
	h := newHarness(t, harnessOpts{mutate: func(c *Config) {
		c.Upstreams = nil
		c.Resolver = staticResolver{"pass.test": {netip.MustParseAddr("127.0.0.1")}}
	}})
	_, err = dialTLS(t, h.addr, &tls.Config{ServerName: "pass.test", InsecureSkipVerify: true})
	if err == nil {
		t.Fatal("handshake succeeded; the splice must refuse a loopback upstream")
	}
	ev := h.rec.next(t)
	if ev.Decision != Passthrough || !strings.Contains(ev.Err, "refused") || !strings.Contains(ev.Err, "loopback") {
		t.Errorf("audit = %+v, want a refused loopback dial", ev)
	}
	if accepted.Load() != 0 {
		t.Error("a loopback listener was dialled")
	}
}

// errorBodyOf decodes the proxy's JSON error body.
func errorBodyOf(t *testing.T, resp *http.Response) errorDetail {
	t.Helper()
	defer resp.Body.Close()
	var b errorBody
	if err := json.NewDecoder(resp.Body).Decode(&b); err != nil {
		t.Fatalf("error body is not JSON: %v", err)
	}
	return b.Error
}

func TestIntercept_SNIHostMismatchIs421(t *testing.T) {
	var hits atomic.Int32
	h := newHarness(t, harnessOpts{handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { hits.Add(1) })})
	for _, h2 := range []bool{false, true} {
		req, _ := http.NewRequest("GET", "https://"+apiHost+"/v1/models", nil)
		req.Host = "evil.example" // SNI stays api.anthropic.com
		req.Header.Set("Authorization", "Bearer "+placeholder)
		resp, err := h.client(h2).Do(req)
		if err != nil {
			t.Fatal(err)
		}
		if resp.StatusCode != http.StatusMisdirectedRequest {
			t.Errorf("h2=%v: status %d, want 421", h2, resp.StatusCode)
		}
		if e := errorBodyOf(t, resp); e.Type != "clauderon_misdirected_request" {
			t.Errorf("error body %+v", e)
		}
		ev := h.rec.next(t)
		if ev.Status != 421 || ev.AuthInjected || ev.Host != "evil.example" || !strings.Contains(ev.Err, "does not match") {
			t.Errorf("audit = %+v", ev)
		}
	}
	if hits.Load() != 0 {
		t.Errorf("upstream got %d requests, want 0", hits.Load())
	}
}

func TestIntercept_InjectorErrors(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	tests := []struct {
		host     string
		status   int
		typ      string
		wantRule string
	}{
		{"forbidden.intercept.test", 403, "clauderon_forbidden", "forbidden-rule"},
		{"broken.intercept.test", 500, "clauderon_injector_error", "broken-rule"},
	}
	for _, tt := range tests {
		t.Run(tt.host, func(t *testing.T) {
			resp, err := h.client(false).Get("https://" + tt.host + "/x")
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != tt.status {
				t.Errorf("status %d, want %d", resp.StatusCode, tt.status)
			}
			if e := errorBodyOf(t, resp); e.Type != tt.typ {
				t.Errorf("error body %+v, want type %s", e, tt.typ)
			}
			if ev := h.rec.next(t); ev.Status != tt.status || ev.Rule != tt.wantRule {
				t.Errorf("audit = %+v", ev)
			}
		})
	}
}

func TestIntercept_UpstreamErrorsAre502WithKind(t *testing.T) {
	closedAddr := refusingAddr(t)
	silent, err := net.Listen("tcp", "127.0.0.1:0") // accepts, never speaks TLS
	if err != nil {
		t.Fatal(err)
	}
	defer silent.Close()
	go func() {
		for {
			c, err := silent.Accept()
			if err != nil {
				return
			}
			defer c.Close()
		}
	}()
	var loopHits atomic.Int32
	loop := tlstest.NewUpstream(t, http.HandlerFunc(func(http.ResponseWriter, *http.Request) { loopHits.Add(1) }), "loop.intercept.test")
	loopAddr := netip.MustParseAddrPort(loop.Addr())
	h := newHarness(t, harnessOpts{mutate: func(c *Config) {
		c.Upstreams = append(c.Upstreams,
			Upstream{Host: "refused.intercept.test", Address: closedAddr},
			Upstream{Host: "untrusted.intercept.test", Address: h0addr(c)}, // system roots do not trust the test CA
			Upstream{Host: "slow.intercept.test", Address: silent.Addr().String()},
		)
		c.Resolver = staticResolver{"loop.intercept.test": {loopAddr.Addr()}}
		c.UpstreamTLSTimeout = 1500 * time.Millisecond
	}})
	tests := []struct{ host, kind string }{
		{"nodns.intercept.test", KindDNS},
		{"refused.intercept.test", KindConnect},
		{"untrusted.intercept.test", KindTLS},
		{"slow.intercept.test", KindTimeout},
		{"loop.intercept.test", KindRefused}, // resolves to loopback, no override
	}
	for _, tt := range tests {
		t.Run(tt.kind, func(t *testing.T) {
			resp, err := h.client(false).Get("https://" + tt.host + "/x")
			if err != nil {
				t.Fatal(err)
			}
			if resp.StatusCode != http.StatusBadGateway || resp.Header.Get("X-Clauderon-Error") != tt.kind {
				t.Errorf("status %d, X-Clauderon-Error %q; want 502, %q", resp.StatusCode, resp.Header.Get("X-Clauderon-Error"), tt.kind)
			}
			if e := errorBodyOf(t, resp); e.Type != "clauderon_upstream_error" || e.Kind != tt.kind || e.Message == "" {
				t.Errorf("error body %+v", e)
			}
			if ev := h.rec.next(t); ev.Status != 502 || ev.Err == "" {
				t.Errorf("audit = %+v", ev)
			}
		})
	}
	if loopHits.Load() != 0 {
		t.Error("the upstream dialer reached a loopback address that no override names")
	}
}

// h0addr is the harness upstream's address (set before New runs).
func h0addr(c *Config) string { return c.Upstreams[0].Address }

// refusingAddr returns a loopback address that refuses connections for the
// whole test: a socket bound to it that never listens. (A listener closed
// at once leaves its port free for the next test's listener to take.)
func refusingAddr(t *testing.T) string {
	fd, err := syscall.Socket(syscall.AF_INET, syscall.SOCK_STREAM, 0)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Close(fd) })
	if err := syscall.Bind(fd, &syscall.SockaddrInet4{Addr: [4]byte{127, 0, 0, 1}}); err != nil {
		t.Fatal(err)
	}
	sa, err := syscall.Getsockname(fd)
	if err != nil {
		t.Fatal(err)
	}
	return fmt.Sprintf("127.0.0.1:%d", sa.(*syscall.SockaddrInet4).Port)
}
