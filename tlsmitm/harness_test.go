package tlsmitm

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"runtime/pprof"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/clauderon/clauderond/tlsmitm/tlstest"

	"go.uber.org/goleak"
)

const (
	realToken   = "REAL-TEST-TOKEN"
	placeholder = "sk-ant-oat01-clauderon-proxy-placeholder"
	apiHost     = "api.anthropic.com"
)

// suiteLog and suiteEvents collect every log line and audit event the suite
// writes; TestMain fails the run if the real token shows up in either.
var (
	suiteLog    syncBuffer
	suiteMu     sync.Mutex
	suiteEvents []Event
)

func TestMain(m *testing.M) {
	if os.Getenv("CLAUDERON_IDLE_CLIENT") != "" {
		idleClientMain() // child process of TestIdleConnMemory
		os.Exit(0)
	}
	if os.Getenv("CLAUDERON_FLOOD_ADDR") != "" {
		floodMain() // child process of TestAttack_OneSourceCannotExhaustMemory
		os.Exit(0)
	}
	code := m.Run()
	if code == 0 {
		if err := checkSecretsNeverLogged(); err != nil {
			fmt.Fprintln(os.Stderr, "TestSecrets_NeverInLogsOrAudit:", err)
			code = 1
		}
	}
	os.Exit(code)
}

// checkSecretsNeverLogged is TestSecrets_NeverInLogsOrAudit, run after all
// tests so that it sees everything they logged and audited.
func checkSecretsNeverLogged() error {
	logs := suiteLog.String()
	if strings.Contains(logs, realToken) {
		return errors.New("the real test token appears in the suite's log output")
	}
	fullRun := flag.Lookup("test.run").Value.String() == ""
	if fullRun && !strings.Contains(logs, "intercepted request failed") {
		return errors.New("the suite logged no request failure; the log check is vacuous")
	}
	suiteMu.Lock()
	defer suiteMu.Unlock()
	if len(suiteEvents) == 0 && fullRun {
		return errors.New("no audit events were recorded; the check is vacuous")
	}
	for _, ev := range suiteEvents {
		if strings.Contains(fmt.Sprintf("%+v", ev), realToken) {
			return fmt.Errorf("the real test token appears in audit event %+v", ev)
		}
	}
	return nil
}

type syncBuffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *syncBuffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *syncBuffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}

// testLogger writes JSON lines to the suite buffer (and t.Log at debug).
func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewJSONHandler(&suiteLog, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// fakeInjector is the test double for the credential injector: for
// api.anthropic.com it strips the placeholder and sets the real token; for
// forbidden.intercept.test it refuses.
type fakeInjector struct{}

func (fakeInjector) Apply(req *http.Request, host string, c Client) (string, bool, error) {
	switch {
	case host == apiHost:
		req.Header.Del("x-api-key")
		req.Header.Set("Authorization", "Bearer "+realToken)
		return "anthropic", true, nil
	case strings.HasPrefix(host, "forbidden."):
		return "forbidden-rule", false, fmt.Errorf("client %q may not use %s: %w", c.Name, host, ErrForbidden)
	case strings.HasPrefix(host, "broken."):
		return "broken-rule", false, errors.New("credential store unavailable")
	}
	return "", false, nil
}

func (fakeInjector) RedactResponse(host string, h http.Header) {
	for k, vs := range h {
		for _, v := range vs {
			if strings.Contains(v, realToken) {
				h.Del(k)
			}
		}
	}
}

// recorder is the test Auditor.
type recorder struct {
	mu     sync.Mutex
	events []Event
	ch     chan Event
}

func newRecorder() *recorder { return &recorder{ch: make(chan Event, 1024)} }

func (r *recorder) Record(ev Event) {
	r.mu.Lock()
	r.events = append(r.events, ev)
	r.mu.Unlock()
	suiteMu.Lock()
	suiteEvents = append(suiteEvents, ev)
	suiteMu.Unlock()
	select {
	case r.ch <- ev:
	default:
	}
}

// next waits for the next event.
func (r *recorder) next(t testing.TB) Event {
	t.Helper()
	return r.nextWithin(t, 5*time.Second)
}

func (r *recorder) nextWithin(t testing.TB, d time.Duration) Event {
	t.Helper()
	select {
	case ev := <-r.ch:
		return ev
	case <-time.After(d):
		t.Fatalf("no audit event within %v", d)
		return Event{}
	}
}

type fakeIdentity struct{}

func (fakeIdentity) Lookup(a netip.Addr) (Client, bool) {
	return Client{ID: "c0ffee", Name: "agent-1", Profile: "default", Known: true}, true
}

// staticResolver resolves every name to fixed addresses.
type staticResolver map[string][]netip.Addr

func (r staticResolver) LookupNetIP(_ context.Context, _, host string) ([]netip.Addr, error) {
	if a, ok := r[host]; ok {
		return a, nil
	}
	return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
}

type harness struct {
	srv      *Server
	addr     string // proxy listener
	pool     *x509.CertPool
	up       *tlstest.Upstream
	rec      *recorder
	stateDir string
	cancel   context.CancelFunc
	done     chan error
	clients  []*http.Transport
}

type harnessOpts struct {
	handler   http.Handler
	mutate    func(*Config)
	stateDir  string
	noCleanup bool
}

// newHarness starts an upstream for api.anthropic.com (reached through an
// upstreams override) and the terminator on loopback.
func newHarness(t testing.TB, o harnessOpts) *harness {
	t.Helper()
	if o.handler == nil {
		o.handler = echoHandler()
	}
	up := tlstest.NewUpstream(t, o.handler, apiHost, "pass.test", "anything.intercept.test", "forbidden.intercept.test", "broken.intercept.test", "git.intercept.test")
	router, err := NewStaticRouter([]string{apiHost, "*.intercept.test"}, []string{"pass.test"})
	if err != nil {
		t.Fatal(err)
	}
	if o.stateDir == "" {
		o.stateDir = t.TempDir()
	}
	rec := newRecorder()
	cfg := Config{
		StateDir: o.stateDir, Router: router, Injector: fakeInjector{}, Identity: fakeIdentity{}, Auditor: rec,
		Upstreams: []Upstream{
			{Host: apiHost, Address: up.Addr(), RootCAs: up.CA.Pool()},
			{Host: "anything.intercept.test", Address: up.Addr(), RootCAs: up.CA.Pool()},
			{Host: "forbidden.intercept.test", Address: up.Addr(), RootCAs: up.CA.Pool()},
			{Host: "broken.intercept.test", Address: up.Addr(), RootCAs: up.CA.Pool()},
			{Host: "git.intercept.test", Address: up.Addr(), RootCAs: up.CA.Pool()},
			{Host: "pass.test", Address: up.Addr()},
		},
		Resolver:     staticResolver{},
		Logger:       testLogger(t),
		DrainTimeout: 2 * time.Second,
	}
	if o.mutate != nil {
		o.mutate(&cfg)
	}
	srv, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	h := &harness{srv: srv, addr: ln.Addr().String(), pool: srv.CA().Pool(), up: up, rec: rec,
		stateDir: o.stateDir, cancel: cancel, done: make(chan error, 1)}
	go pprof.Do(ctx, pprof.Labels("side", "proxy"), func(ctx context.Context) { h.done <- srv.Serve(ctx, ln) })
	if !o.noCleanup {
		t.Cleanup(func() { h.stop(t) })
	}
	return h
}

// stop cancels Serve and waits for it to return nil.
func (h *harness) stop(t testing.TB) {
	t.Helper()
	for _, tr := range h.clients {
		tr.CloseIdleConnections()
	}
	h.cancel()
	select {
	case err := <-h.done:
		if err != nil {
			t.Errorf("Serve returned %v, want nil after cancel", err)
		}
	case <-time.After(15 * time.Second):
		t.Fatal("Serve did not return within 15s of cancel")
	}
	h.done <- nil // stop is idempotent
}

// client returns an HTTP client that dials the proxy for every name and
// trusts the local CA.
func (h *harness) client(h2 bool) *http.Client {
	dial := func(ctx context.Context, network, _ string) (net.Conn, error) {
		var d net.Dialer
		return d.DialContext(ctx, "tcp", h.addr)
	}
	tr := &http.Transport{
		DialContext:         dial,
		TLSClientConfig:     &tls.Config{RootCAs: h.pool},
		ForceAttemptHTTP2:   h2,
		MaxIdleConnsPerHost: 64,
	}
	if !h2 {
		tr.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
	}
	h.clients = append(h.clients, tr)
	return &http.Client{Transport: tr}
}

// echoHandler reports what the upstream saw, including the Authorization
// header (so tests can check that the real token arrived).
func echoHandler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("/", func(w http.ResponseWriter, r *http.Request) {
		// Read the body before answering, as an API does: over h2 the
		// proxy stops sending a body the upstream answered without, and the
		// audit's bytes_in would depend on that race.
		io.Copy(io.Discard, r.Body)
		w.Header().Set("X-Upstream-Proto", r.Proto)
		w.Header().Set("X-Upstream-Host", r.Host)
		// Report what arrived without echoing the credential itself.
		w.Header().Set("X-Auth-Is-Real", fmt.Sprint(r.Header.Get("Authorization") == "Bearer "+realToken))
		w.Header().Set("X-Saw-Placeholder", fmt.Sprint(strings.Contains(fmt.Sprint(r.Header), placeholder)))
		fmt.Fprintf(w, "hello %s %s", r.Method, r.URL.Path)
	})
	return mux
}

// checkGoroutines fails t if goroutines started after base (taken with
// goleak.IgnoreCurrent before the test started anything) are still running
// once they have had time to wind down. certmagic's FileStorage lock
// refresher is not counted: it sleeps up to 5s after its lock is released
// before it notices (certmagic's, not ours, and bounded).
func checkGoroutines(t testing.TB, base goleak.Option) {
	t.Helper()
	opts := []goleak.Option{base, goleak.IgnoreAnyFunction("github.com/caddyserver/certmagic.keepLockfileFresh")}
	for deadline := time.Now().Add(10 * time.Second); goleak.Find(opts...) != nil && time.Now().Before(deadline); {
		time.Sleep(20 * time.Millisecond)
	}
	goleak.VerifyNone(t, opts...)
}

// countingH2Transport is an h2 client of the proxy (closed with the
// harness) that counts the connections it dials.
func (h *harness) countingH2Transport(dials *atomic.Int32) *http.Transport {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			dials.Add(1)
			var d net.Dialer
			return d.DialContext(ctx, "tcp", h.addr)
		},
		TLSClientConfig:   &tls.Config{RootCAs: h.pool},
		ForceAttemptHTTP2: true,
	}
	h.clients = append(h.clients, tr)
	return tr
}

// waitFor polls cond until it holds, and fails t after d naming what it
// waited for.
func waitFor(t testing.TB, d time.Duration, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out after %v waiting for: %s", d, what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
