package tlsmitm

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/clauderon/clauderond/tlsmitm/localca"
	"github.com/clauderon/clauderond/tlsmitm/tlstest"

	"go.uber.org/goleak"
)

// leafSerial handshakes with sni through the proxy and returns the leaf's
// serial and issuer fingerprint check.
func leafOf(t *testing.T, h *harness, sni string) *tls.ConnectionState {
	t.Helper()
	c, err := dialTLS(t, h.addr, &tls.Config{ServerName: sni, RootCAs: h.pool, NextProtos: []string{"http/1.1"}})
	if err != nil {
		t.Fatalf("handshake for %s: %v", sni, err)
	}
	cs := c.ConnectionState()
	c.Close()
	return &cs
}

func TestCerts_ReusedAfterRestart(t *testing.T) {
	dir := t.TempDir()
	h1 := newHarness(t, harnessOpts{stateDir: dir, noCleanup: true})
	cs1 := leafOf(t, h1, apiHost)
	wild1 := leafOf(t, h1, "anything.intercept.test") // on-demand issuance
	fp1 := h1.srv.CA().Fingerprint()
	h1.stop(t)

	h2 := newHarness(t, harnessOpts{stateDir: dir})
	cs2 := leafOf(t, h2, apiHost)
	wild2 := leafOf(t, h2, "anything.intercept.test")
	if fp2 := h2.srv.CA().Fingerprint(); fp2 != fp1 {
		t.Errorf("CA fingerprint changed across restart: %s -> %s", fp1, fp2)
	}
	if a, b := cs1.PeerCertificates[0].SerialNumber, cs2.PeerCertificates[0].SerialNumber; a.Cmp(b) != 0 {
		t.Errorf("rule host leaf re-issued after restart (serial %v -> %v), want it served from storage", a, b)
	}
	if a, b := wild1.PeerCertificates[0].SerialNumber, wild2.PeerCertificates[0].SerialNumber; a.Cmp(b) != 0 {
		t.Errorf("on-demand leaf re-issued after restart (serial %v -> %v)", a, b)
	}
	leaf := cs2.PeerCertificates[0]
	if leaf.NotAfter.Sub(leaf.NotBefore) > localca.DefaultLeafLifetime+time.Hour {
		t.Errorf("leaf lifetime %v, want <= %v", leaf.NotAfter.Sub(leaf.NotBefore), localca.DefaultLeafLifetime)
	}
}

// TestCerts_IssuanceNeverDials proves issuance (at start-up and on demand)
// makes no outbound connection and no DNS lookup: the injected dialer and
// resolver fail the test if they are called.
func TestCerts_IssuanceNeverDials(t *testing.T) {
	var dials, lookups atomic.Int32
	h := newHarness(t, harnessOpts{mutate: func(c *Config) {
		c.DialContext = func(ctx context.Context, network, addr string, _ ControlFunc) (net.Conn, error) {
			dials.Add(1)
			return nil, errors.New("dial forbidden in this test")
		}
		c.Resolver = countingResolver{&lookups}
	}})
	leafOf(t, h, apiHost)                     // issued by ManageSync in New
	leafOf(t, h, "fresh-name.intercept.test") // issued on demand in the handshake
	if d, l := dials.Load(), lookups.Load(); d != 0 || l != 0 {
		t.Errorf("issuance made %d dials and %d DNS lookups, want none", d, l)
	}
	// The hook is live: a request does reach it.
	resp, err := h.client(false).Get("https://fresh-name.intercept.test/")
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if lookups.Load() == 0 && dials.Load() == 0 {
		t.Error("neither hook was called for a proxied request; the test proves nothing")
	}
}

type countingResolver struct{ n *atomic.Int32 }

func (r countingResolver) LookupNetIP(_ context.Context, _, host string) ([]netip.Addr, error) {
	r.n.Add(1)
	return nil, &net.DNSError{Err: "lookups forbidden in this test", Name: host}
}

func TestCerts_RefusedForNonInterceptedNames(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	for _, name := range []string{"10.1.2.3", "pass.test", "evil.example"} {
		if err := decideCert(h.srv.state.Load().router, name); !errors.Is(err, ErrCertificate) {
			t.Errorf("DecisionFunc(%q) = %v, want refusal", name, err)
		}
	}
	if err := decideCert(h.srv.state.Load().router, "x.intercept.test"); err != nil {
		t.Errorf("DecisionFunc(x.intercept.test) = %v, want allowed", err)
	}
}

func TestServe_DrainsInFlightRequestsThenReturnsNil(t *testing.T) {
	started := make(chan struct{})
	h := newHarness(t, harnessOpts{noCleanup: true, handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		close(started)
		time.Sleep(300 * time.Millisecond)
		io.WriteString(w, "finished")
	})})
	type result struct {
		body string
		err  error
	}
	res := make(chan result, 1)
	go func() {
		resp, err := h.client(false).Get("https://" + apiHost + "/slow")
		if err != nil {
			res <- result{err: err}
			return
		}
		b, err := io.ReadAll(resp.Body)
		resp.Body.Close()
		res <- result{string(b), err}
	}()
	<-started
	h.stop(t) // cancels while the request is in flight
	if r := <-res; r.err != nil || r.body != "finished" {
		t.Errorf("in-flight request during drain: body %q, err %v", r.body, r.err)
	}
	if _, err := net.DialTimeout("tcp", h.addr, time.Second); err == nil {
		t.Error("listener still accepting after Serve returned")
	}
}

func TestServe_DrainDeadlineCutsEndlessStreams(t *testing.T) {
	base := goleak.IgnoreCurrent()
	func() {
		h := newHarness(t, harnessOpts{noCleanup: true, mutate: func(c *Config) { c.DrainTimeout = 300 * time.Millisecond },
			handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Header().Set("Content-Type", "text/event-stream")
				w.WriteHeader(200)
				http.NewResponseController(w).Flush()
				<-r.Context().Done()
			})})
		resp, err := h.client(true).Get("https://" + apiHost + "/stream")
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		start := time.Now()
		h.stop(t)
		if d := time.Since(start); d > 3*time.Second {
			t.Errorf("Serve took %v to return with a 300ms drain deadline", d)
		}
		if _, err := io.ReadAll(resp.Body); err == nil {
			t.Error("endless stream ended cleanly; want it cut at the drain deadline")
		}
		h.up.Close()
	}()
	checkGoroutines(t, base)
}

func TestServe_NoGoroutineLeakAcrossAllPaths(t *testing.T) {
	base := goleak.IgnoreCurrent()
	func() {
		h := newHarness(t, harnessOpts{noCleanup: true})
		for _, h2 := range []bool{false, true} {
			resp, err := h.client(h2).Get("https://" + apiHost + "/")
			if err != nil {
				t.Fatal(err)
			}
			io.Copy(io.Discard, resp.Body)
			resp.Body.Close()
		}
		dialTLS(t, h.addr, &tls.Config{ServerName: "evil.example"})
		if c, err := dialTLS(t, h.addr, &tls.Config{ServerName: "pass.test", RootCAs: h.up.CA.Pool()}); err == nil {
			c.Close()
		}
		c, _ := net.Dial("tcp", h.addr) // never sends a hello
		h.stop(t)
		c.Close()
		if st := h.srv.Stats(); st.ActiveConns != 0 || st.ActiveHTTPConns != 0 || st.ActiveRequests != 0 {
			t.Errorf("after Serve returned: %+v, want no active connections or requests", st)
		}
		h.up.Close()
	}()
	checkGoroutines(t, base)
}

func TestUpdate_SwapsRouterAtomically(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	leafOf(t, h, apiHost)
	cfg := h.srv.cfg.reloadable()
	r, _ := NewStaticRouter(nil, nil) // deny everything
	cfg.Router = r
	if err := h.srv.Update(cfg); err != nil {
		t.Fatal(err)
	}
	_, err := dialTLS(t, h.addr, &tls.Config{ServerName: apiHost, RootCAs: h.pool})
	if err == nil || !strings.Contains(err.Error(), "access denied") {
		t.Errorf("after Update to deny-all: handshake err %v, want access denied", err)
	}
}

func TestUpdate_KeptAliveConnectionStopsInjecting(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	cl := h.client(false)
	get := func() *http.Response {
		resp, err := cl.Get("https://" + apiHost + "/")
		if err != nil {
			t.Fatal(err)
		}
		io.Copy(io.Discard, resp.Body)
		resp.Body.Close()
		return resp
	}
	if resp := get(); resp.Header.Get("X-Auth-Is-Real") != "true" {
		t.Fatal("first request was not injected")
	}
	cfg := h.srv.cfg.reloadable()
	cfg.Router, _ = NewStaticRouter(nil, []string{apiHost}) // now passthrough only
	if err := h.srv.Update(cfg); err != nil {
		t.Fatal(err)
	}
	if resp := get(); resp.StatusCode != http.StatusForbidden || resp.Header.Get("X-Auth-Is-Real") != "" {
		t.Errorf("same connection after reload: status %d, want 403 and no upstream call", resp.StatusCode)
	}
}

type panickyInjector struct{ fakeInjector }

func (panickyInjector) Apply(req *http.Request, host string, c Client) (string, bool, error) {
	if req.URL.Path == "/panic" {
		panic("injector bug")
	}
	return fakeInjector{}.Apply(req, host, c)
}

func TestServe_PanicFailsOneRequestNotTheDaemon(t *testing.T) {
	h := newHarness(t, harnessOpts{mutate: func(c *Config) { c.Injector = panickyInjector{} }})
	cl := h.client(false)
	if resp, err := cl.Get("https://" + apiHost + "/panic"); err == nil {
		resp.Body.Close()
		t.Errorf("panicking request got status %d, want a closed connection", resp.StatusCode)
	}
	if ev := h.rec.next(t); !strings.Contains(ev.Err, "internal error") {
		t.Errorf("audit = %+v", ev)
	}
	resp, err := cl.Get("https://" + apiHost + "/fine")
	if err != nil {
		t.Fatalf("request after a panic: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != 200 || h.srv.Stats().Panics != 1 {
		t.Errorf("status %d, panics %d; want 200, 1", resp.StatusCode, h.srv.Stats().Panics)
	}
}

func TestUpdate_SwapsUpstreamOverride(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	other := tlstest.NewUpstream(t, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		io.WriteString(w, "from the new upstream")
	}), apiHost)
	cfg := h.srv.cfg.reloadable()
	cfg.Upstreams = []Upstream{{Host: apiHost, Address: other.Addr(), RootCAs: other.CA.Pool()}}
	if err := h.srv.Update(cfg); err != nil {
		t.Fatal(err)
	}
	resp, err := h.client(false).Get("https://" + apiHost + "/")
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != "from the new upstream" {
		t.Errorf("after Update: body %q, want the new upstream's", b)
	}
}

func TestIntercept_TLSSessionResumption(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	cache := tls.NewLRUClientSessionCache(8)
	cfg := &tls.Config{ServerName: apiHost, RootCAs: h.pool, ClientSessionCache: cache}
	for i, want := range []bool{false, true} {
		c, err := dialTLS(t, h.addr, cfg)
		if err != nil {
			t.Fatal(err)
		}
		// TLS 1.3 tickets arrive after the handshake; read to receive them.
		c.SetReadDeadline(time.Now().Add(100 * time.Millisecond))
		c.Read(make([]byte, 1))
		if got := c.ConnectionState().DidResume; got != want {
			t.Errorf("connection %d: DidResume = %v, want %v", i, got, want)
		}
		c.Close()
	}
}

// TestCerts_OnDemandIssuanceIsRateLimited: a container cycling random names
// under a wildcard rule gets onDemandPerMinute leaves a minute, not one per
// name; names already issued keep working.
func TestCerts_OnDemandIssuanceIsRateLimited(t *testing.T) {
	h := newHarness(t, harnessOpts{})
	for i := 0; i < onDemandPerMinute; i++ {
		leafOf(t, h, fmt.Sprintf("n%d.intercept.test", i))
	}
	c, err := dialTLS(t, h.addr, &tls.Config{ServerName: "one-too-many.intercept.test", RootCAs: h.pool})
	if err == nil {
		c.Close()
		t.Fatalf("leaf %d within a minute was issued", onDemandPerMinute+1)
	}
	leafOf(t, h, "n0.intercept.test") // cached: no issuance needed
	leafOf(t, h, apiHost)             // exact names are issued up front
}
