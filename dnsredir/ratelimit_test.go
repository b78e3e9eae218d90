package dnsredir

import (
	"net/netip"
	"testing"
	"time"

	"github.com/clauderon/clauderond/dnsredir/dnstest"
	"github.com/miekg/dns"
)

var t0 = time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)

func TestBucket_RefillsAtRateUpToBurst(t *testing.T) {
	b := bucket{tokens: 2, last: t0}
	steps := []struct {
		at   time.Duration
		want bool
	}{
		{0, true}, {0, true}, {0, false}, // burst of 2 spent
		{100 * time.Millisecond, false}, // 0.5 tokens
		{200 * time.Millisecond, true},  // 1 token
		{10 * time.Second, true},        // refilled, capped at 2
		{10 * time.Second, true},
		{10 * time.Second, false},
	}
	for i, s := range steps {
		if got := b.take(t0.Add(s.at), 5, 2); got != s.want {
			t.Errorf("step %d at %v: take = %v, want %v", i, s.at, got, s.want)
		}
	}
}

func TestClientLimiter_TableIsBoundedUnderSpoofedFlood(t *testing.T) {
	l := newClientLimiter(1, 2, 4)
	now := t0
	// 1000 spoofed sources at once: only 4 get their own bucket, the rest
	// share the overflow bucket, which holds a single burst.
	admitted := 0
	for i := range 1000 {
		a := netip.AddrFrom4([4]byte{10, 0, byte(i >> 8), byte(i)})
		if l.allow(a, now) {
			admitted++
		}
	}
	if l.size() != 4 {
		t.Errorf("limiter tracks %d addresses, want the bound 4", l.size())
	}
	if want := 4 + 2; admitted != want {
		t.Errorf("flood admitted %d queries, want %d (4 first buckets + one shared burst)", admitted, want)
	}
	// A tracked client keeps its own bucket during the flood.
	first := netip.AddrFrom4([4]byte{10, 0, 0, 0})
	if !l.allow(first, now) {
		t.Error("tracked client lost its remaining burst token to the flood")
	}
	// Once buckets have refilled, a sweep frees the table for new clients.
	now = now.Add(10 * time.Second)
	newcomer := netip.MustParseAddr("10.213.0.77")
	if !l.allow(newcomer, now) {
		t.Error("newcomer refused after the table went idle")
	}
	if l.size() != 1 {
		t.Errorf("after the sweep the limiter tracks %d addresses, want 1", l.size())
	}
}

func TestClientLimiter_SweepsAtMostOncePerSecond(t *testing.T) {
	l := newClientLimiter(1000, 1, 2)
	a, b, c := netip.MustParseAddr("10.0.0.1"), netip.MustParseAddr("10.0.0.2"), netip.MustParseAddr("10.0.0.3")
	l.allow(a, t0)
	l.allow(b, t0)
	l.allow(c, t0.Add(2*time.Second)) // sweeps: a and b refilled long ago
	if l.size() != 1 {
		t.Fatalf("size after sweep = %d, want 1", l.size())
	}
	l.allow(a, t0.Add(2*time.Second))
	// The table is full again; a sweep within the same second is skipped,
	// so d shares the overflow bucket instead of being tracked.
	l.allow(netip.MustParseAddr("10.0.0.4"), t0.Add(2*time.Second+500*time.Millisecond))
	if l.size() != 2 {
		t.Errorf("size = %d, want 2 (no second sweep within a second)", l.size())
	}
}

func TestThrottle_CountsSuppressed(t *testing.T) {
	now := t0
	th := newThrottle(1, 2, func() time.Time { return now })
	for i, want := range []bool{true, true, false, false, false} {
		if ok, _ := th.admit(); ok != want {
			t.Errorf("admit %d = %v, want %v", i, ok, want)
		}
	}
	now = now.Add(time.Second)
	ok, suppressed := th.admit()
	if !ok || suppressed != 3 {
		t.Errorf("admit after refill = %v, %d suppressed; want true, 3", ok, suppressed)
	}
}

func TestRateLimit_RefillsOverTime(t *testing.T) {
	now := t0
	h, err := NewHandler(Config{Reloadable: Reloadable{Policy: fuzzPolicy{}}, Resolver: &fuzzResolver{}, RatePerSecond: 2, Burst: 1})
	if err != nil {
		t.Fatal(err)
	}
	h.now = func() time.Time { return now }
	askRcode := func() int {
		rec := dnstest.NewRecorder()
		q := new(dns.Msg)
		q.SetQuestion("denied.example.", dns.TypeA)
		h.ServeDNS(rec, q)
		return rec.Msg().Rcode
	}
	if rc := askRcode(); rc != dns.RcodeNameError {
		t.Fatalf("first query rcode %s, want NXDOMAIN", dns.RcodeToString[rc])
	}
	if rc := askRcode(); rc != dns.RcodeRefused {
		t.Fatalf("second query at once rcode %s, want REFUSED", dns.RcodeToString[rc])
	}
	now = now.Add(500 * time.Millisecond) // one token at 2/s
	if rc := askRcode(); rc != dns.RcodeNameError {
		t.Errorf("query after refill rcode %s, want NXDOMAIN", dns.RcodeToString[rc])
	}
}
