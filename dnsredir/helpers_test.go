package dnsredir_test

import (
	"context"
	"io"
	"log/slog"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/clauderon/clauderond/dnsredir"
	"github.com/clauderon/clauderond/dnsredir/dnstest"
	"github.com/miekg/dns"

	"go.uber.org/goleak"
)

// mapPolicy decides from a fixed map; unknown names are denied. It records
// every name it was asked about.
type mapPolicy struct {
	mu      sync.Mutex
	m       map[string]dnsredir.Decision
	decided []string
}

func policy(m map[string]dnsredir.Decision) *mapPolicy { return &mapPolicy{m: m} }

func (p *mapPolicy) Decide(name string) (dnsredir.Decision, string) {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.decided = append(p.decided, name)
	d, ok := p.m[name]
	if !ok {
		return dnsredir.Deny, "default-deny"
	}
	return d, "rule:" + name
}

func (p *mapPolicy) names() []string {
	p.mu.Lock()
	defer p.mu.Unlock()
	return append([]string(nil), p.decided...)
}

// recordingResolver answers from a map and records every call, so tests can
// prove a name never reached it.
type recordingResolver struct {
	mu    sync.Mutex
	addrs map[string][]netip.Addr
	err   error
	calls []string // "network host"
}

func (r *recordingResolver) LookupNetIP(_ context.Context, network, host string) ([]netip.Addr, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.calls = append(r.calls, network+" "+host)
	if r.err != nil {
		return nil, r.err
	}
	a, ok := r.addrs[host]
	if !ok {
		return nil, &net.DNSError{Err: "no such host", Name: host, IsNotFound: true}
	}
	return a, nil
}

func (r *recordingResolver) Calls() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]string(nil), r.calls...)
}

// eventLog is an Auditor that keeps every event.
type eventLog struct {
	mu     sync.Mutex
	events []dnsredir.Event
}

func (a *eventLog) RecordDNS(e dnsredir.Event) {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.events = append(a.events, e)
}

func (a *eventLog) Events() []dnsredir.Event {
	a.mu.Lock()
	defer a.mu.Unlock()
	return append([]dnsredir.Event(nil), a.events...)
}

// testLogger writes to t.Log at debug level.
func testLogger(t testing.TB) *slog.Logger {
	return slog.New(slog.NewTextHandler(tWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
}

type tWriter struct{ t testing.TB }

func (w tWriter) Write(b []byte) (int, error) {
	w.t.Helper()
	w.t.Log(strings.TrimSpace(string(b)))
	return len(b), nil
}

func quietLogger() *slog.Logger { return slog.New(slog.NewTextHandler(io.Discard, nil)) }

func addrs(ss ...string) []netip.Addr {
	out := make([]netip.Addr, len(ss))
	for i, s := range ss {
		out[i] = netip.MustParseAddr(s)
	}
	return out
}

func newHandler(t testing.TB, cfg dnsredir.Config) *dnsredir.Handler {
	t.Helper()
	if cfg.EventLogger == nil {
		cfg.EventLogger = testLogger(t)
	}
	h, err := dnsredir.NewHandler(cfg)
	if err != nil {
		t.Fatalf("NewHandler: %v", err)
	}
	return h
}

// question builds a query for name and qtype.
func question(name string, qtype uint16) *dns.Msg {
	m := new(dns.Msg)
	m.SetQuestion(name, qtype)
	return m
}

// ask serves q through h against a fresh Recorder and returns the single
// reply, failing the test if there is not exactly one.
func ask(t testing.TB, h dns.Handler, rec *dnstest.Recorder, q *dns.Msg) *dns.Msg {
	t.Helper()
	before := rec.Writes()
	h.ServeDNS(rec, q)
	if got := rec.Writes() - before; got != 1 {
		t.Fatalf("ServeDNS wrote %d replies, want exactly 1", got)
	}
	m := rec.Msg()
	if m == nil {
		t.Fatal("reply did not pack")
	}
	if m.Id != q.Id || !m.Response {
		t.Fatalf("reply id %d response %v, want id %d and QR set", m.Id, m.Response, q.Id)
	}
	return m
}

// aAddrs returns the A records' addresses in m's answer section.
func aAddrs(t testing.TB, m *dns.Msg) []netip.Addr {
	t.Helper()
	var out []netip.Addr
	for _, rr := range m.Answer {
		a, ok := rr.(*dns.A)
		if !ok {
			t.Fatalf("answer holds %s, want only A records", rr)
		}
		ip, _ := netip.AddrFromSlice(a.A)
		out = append(out, ip.Unmap())
	}
	return out
}

// checkNoGoroutineLeak fails the test if, once it has finished, goroutines
// it started are still running (goleak, after a grace period for those
// that are exiting). Call it first, before starting anything.
func checkNoGoroutineLeak(t *testing.T) {
	t.Helper()
	before := goleak.IgnoreCurrent()
	t.Cleanup(func() {
		for deadline := time.Now().Add(5 * time.Second); goleak.Find(before) != nil && time.Now().Before(deadline); {
			time.Sleep(10 * time.Millisecond)
		}
		goleak.VerifyNone(t, before)
	})
}
