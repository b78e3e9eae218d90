package dnsredir_test

import (
	"context"
	"errors"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/clauderon/clauderond/dnsredir"
	"github.com/clauderon/clauderond/dnsredir/dnstest"
	"github.com/miekg/dns"
)

func newUpstream(t *testing.T, servers ...string) *dnsredir.UpstreamResolver {
	t.Helper()
	// No test here waits for this timeout; it only bounds a failure. It is
	// well above the test servers' delays so CI load cannot turn a slow
	// answer into a timed-out exchange.
	r, err := dnsredir.NewUpstreamResolver(dnsredir.UpstreamConfig{Servers: servers, Timeout: 5 * time.Second, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { r.Close() })
	return r
}

func TestUpstream_Lookups(t *testing.T) {
	checkNoGoroutineLeak(t)
	up := dnstest.NewServer(t)
	up.SetA("github.com", 60, "140.82.121.4", "140.82.121.3")
	up.SetCNAME("www.github.com", "edge.github.com", 300)
	up.SetCNAME("edge.github.com", "github.com", 300)
	up.SetCNAME("dangling.example", "nowhere.example", 300)
	up.SetRcode("broken.example", dns.RcodeServerFailure)
	r := newUpstream(t, up.Addr)
	tests := []struct {
		name, network, host string
		want                []netip.Addr
		notFound, err       bool
	}{
		{"a_records", "ip4", "github.com", addrs("140.82.121.4", "140.82.121.3"), false, false},
		{"network_ip_is_a_only", "ip", "GitHub.com.", addrs("140.82.121.4", "140.82.121.3"), false, false},
		{"cname_chain_followed", "ip4", "www.github.com", addrs("140.82.121.4", "140.82.121.3"), false, false},
		{"nxdomain", "ip4", "nope.example", nil, true, true},
		{"dangling_cname", "ip4", "dangling.example", nil, true, true},
		{"servfail", "ip4", "broken.example", nil, false, true},
		{"ip6_finds_nothing", "ip6", "github.com", nil, true, true},
		{"ipv4_literal", "ip4", "127.0.0.1", addrs("127.0.0.1"), false, false},
		{"ipv6_literal_for_ip", "ip", "::1", addrs("::1"), false, false},
		{"ipv6_literal_for_ip4", "ip4", "::1", nil, true, true},
		{"invalid_name", "ip4", "a b.example", nil, false, true},
		{"bad_network", "tcp", "github.com", nil, false, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := r.LookupNetIP(context.Background(), tt.network, tt.host)
			if (err != nil) != tt.err {
				t.Fatalf("LookupNetIP error = %v, want error: %v", err, tt.err)
			}
			var dnsErr *net.DNSError
			if isNF := errors.As(err, &dnsErr) && dnsErr.IsNotFound; isNF != tt.notFound {
				t.Errorf("error %v: IsNotFound = %v, want %v", err, isNF, tt.notFound)
			}
			if !slices.Equal(got, tt.want) {
				t.Errorf("LookupNetIP = %v, want %v", got, tt.want)
			}
		})
	}
	for _, q := range up.Queries() {
		if q.Qtype != dns.TypeA {
			t.Errorf("upstream asked for %s %s; the resolver asks for A only", q.Name, dns.TypeToString[q.Qtype])
		}
	}
}

func TestUpstream_CacheHonoursTTL(t *testing.T) {
	up := dnstest.NewServer(t)
	up.SetA("short.example", 1, "192.0.2.1")
	up.SetA("zero.example", 0, "192.0.2.2")
	up.SetA("long.example", 3600, "192.0.2.3")
	r := newUpstream(t, up.Addr)
	// The clock moves only when the test says so: a loaded machine cannot
	// make the lookups below outlast the 1 s TTL.
	var clockMu sync.Mutex
	now := time.Now()
	dnsredir.SetClock(r, func() time.Time { clockMu.Lock(); defer clockMu.Unlock(); return now })
	count := func(name string) int {
		n := 0
		for _, q := range up.Queries() {
			if q.Name == name {
				n++
			}
		}
		return n
	}
	ctx := context.Background()
	for range 3 {
		for _, h := range []string{"short.example", "zero.example", "long.example"} {
			if _, err := r.LookupNetIP(ctx, "ip4", h); err != nil {
				t.Fatal(err)
			}
		}
	}
	if c := count("short.example."); c != 1 {
		t.Errorf("TTL 1 name asked %d times within its TTL, want 1", c)
	}
	if c := count("zero.example."); c != 3 {
		t.Errorf("TTL 0 name asked %d times, want 3 (never cached)", c)
	}
	clockMu.Lock()
	now = now.Add(1100 * time.Millisecond)
	clockMu.Unlock()
	r.LookupNetIP(ctx, "ip4", "short.example")
	r.LookupNetIP(ctx, "ip4", "long.example")
	if c := count("short.example."); c != 2 {
		t.Errorf("TTL 1 name asked %d times after expiry, want 2", c)
	}
	if c := count("long.example."); c != 1 {
		t.Errorf("TTL 3600 name asked %d times, want 1", c)
	}
	// A caller mutating its result must not corrupt the cache.
	got, _ := r.LookupNetIP(ctx, "ip4", "long.example")
	got[0] = netip.MustParseAddr("203.0.113.66")
	if again, _ := r.LookupNetIP(ctx, "ip4", "long.example"); again[0] != netip.MustParseAddr("192.0.2.3") {
		t.Errorf("cache corrupted through a returned slice: %v", again)
	}
}

func TestUpstream_TruncatedAnswerRetriedOverTCP(t *testing.T) {
	up := dnstest.NewServer(t)
	up.SetA("big.example", 60, "192.0.2.7")
	up.SetTruncateUDP(true)
	r := newUpstream(t, up.Addr)
	got, err := r.LookupNetIP(context.Background(), "ip4", "big.example")
	if err != nil || !slices.Equal(got, addrs("192.0.2.7")) {
		t.Fatalf("LookupNetIP = %v, %v; want 192.0.2.7", got, err)
	}
	var protos []string
	for _, q := range up.Queries() {
		protos = append(protos, q.Proto)
	}
	if !slices.Equal(protos, []string{"udp", "tcp"}) {
		t.Errorf("upstream saw %v, want udp then tcp", protos)
	}
}

func TestUpstream_FailsOverToNextServer(t *testing.T) {
	bad := dnstest.NewServer(t)
	bad.SetRcode("github.com", dns.RcodeRefused)
	good := dnstest.NewServer(t)
	good.SetA("github.com", 60, "140.82.121.4")
	// A port nothing listens on: the UDP exchange fails with ICMP refused.
	dead, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	deadAddr := dead.LocalAddr().String()
	dead.Close()
	r := newUpstream(t, deadAddr, bad.Addr, good.Addr)
	got, err := r.LookupNetIP(context.Background(), "ip4", "github.com")
	if err != nil || !slices.Equal(got, addrs("140.82.121.4")) {
		t.Fatalf("LookupNetIP = %v, %v; want the good server's answer", got, err)
	}
	// NXDOMAIN is definitive: no further servers are asked.
	bad.SetRcode("gone.example", dns.RcodeNameError)
	before := len(good.Queries())
	if _, err := r.LookupNetIP(context.Background(), "ip4", "gone.example"); err == nil {
		t.Fatal("lookup of an NXDOMAIN name succeeded")
	}
	if len(good.Queries()) != before {
		t.Error("server after an NXDOMAIN answer was asked too")
	}
}

func TestUpstream_ConcurrentLookupsShareOneExchange(t *testing.T) {
	checkNoGoroutineLeak(t)
	up := dnstest.NewServer(t)
	up.SetA("popular.example", 60, "192.0.2.9")
	up.SetDelay(200 * time.Millisecond)
	r := newUpstream(t, up.Addr)
	var wg sync.WaitGroup
	errs := make(chan error, 20)
	for range 20 {
		wg.Go(func() {
			got, err := r.LookupNetIP(context.Background(), "ip4", "popular.example")
			if err == nil && !slices.Equal(got, addrs("192.0.2.9")) {
				err = errors.New("wrong answer")
			}
			errs <- err
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Error(err)
		}
	}
	if n := len(up.Queries()); n != 1 {
		t.Errorf("upstream asked %d times, want 1 shared exchange", n)
	}
}

func TestUpstream_CallerDeadlineIsHonoured(t *testing.T) {
	up := dnstest.NewServer(t)
	up.SetA("slow.example", 60, "192.0.2.9")
	up.SetDelay(time.Second)
	r := newUpstream(t, up.Addr)
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	start := time.Now()
	if _, err := r.LookupNetIP(ctx, "ip4", "slow.example"); !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("LookupNetIP error = %v, want the caller's deadline", err)
	}
	if d := time.Since(start); d > 800*time.Millisecond {
		t.Errorf("LookupNetIP returned after %v, want about 50ms (not the 1s exchange)", d)
	}
	// The exchange carried on: the next caller shares it (or, once it is
	// done, its cached answer) instead of asking again.
	got, err := r.LookupNetIP(context.Background(), "ip4", "slow.example")
	if err != nil || !slices.Equal(got, addrs("192.0.2.9")) || len(up.Queries()) != 1 {
		t.Errorf("next lookup: %v, %v, %d upstream queries; want the first exchange's answer", got, err, len(up.Queries()))
	}
}

func TestUpstream_CloseCancelsAndRefuses(t *testing.T) {
	checkNoGoroutineLeak(t)
	up := dnstest.NewServer(t)
	up.SetA("slow.example", 60, "192.0.2.9")
	up.SetDelay(2 * time.Second)
	r, err := dnsredir.NewUpstreamResolver(dnsredir.UpstreamConfig{Servers: []string{up.Addr}, Timeout: 3 * time.Second})
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { _, err := r.LookupNetIP(context.Background(), "ip4", "slow.example"); done <- err }()
	time.Sleep(100 * time.Millisecond)
	start := time.Now()
	r.Close()
	r.Close() // idempotent
	if d := time.Since(start); d > time.Second {
		t.Errorf("Close took %v, want it to cancel the exchange in flight", d)
	}
	if err := <-done; err == nil {
		t.Error("lookup in flight during Close succeeded")
	}
	if _, err := r.LookupNetIP(context.Background(), "ip4", "other.example"); err == nil {
		t.Error("lookup after Close succeeded")
	}
}

func TestUpstream_ServersFromResolvConf(t *testing.T) {
	dir := t.TempDir()
	tests := []struct {
		name, conf string
		want       []string
		wantErr    bool
	}{
		{"two_servers", "# comment\nnameserver 10.255.255.53\nnameserver 192.0.2.53\nsearch example\n", []string{"10.255.255.53:53", "192.0.2.53:53"}, false},
		{"ipv6_server", "nameserver fd00::53\n", []string{"[fd00::53]:53"}, false},
		{"no_nameserver", "search example\n", nil, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := filepath.Join(dir, tt.name)
			if err := os.WriteFile(path, []byte(tt.conf), 0o644); err != nil {
				t.Fatal(err)
			}
			r, err := dnsredir.NewUpstreamResolver(dnsredir.UpstreamConfig{ResolvConf: path})
			if (err != nil) != tt.wantErr {
				t.Fatalf("NewUpstreamResolver error = %v, want error: %v", err, tt.wantErr)
			}
			if err != nil {
				return
			}
			defer r.Close()
			if got := r.Servers(); !slices.Equal(got, tt.want) {
				t.Errorf("Servers() = %q, want %q", got, tt.want)
			}
		})
	}
	if _, err := dnsredir.NewUpstreamResolver(dnsredir.UpstreamConfig{ResolvConf: filepath.Join(dir, "missing")}); err == nil {
		t.Error("missing resolv.conf accepted")
	}
	if _, err := dnsredir.NewUpstreamResolver(dnsredir.UpstreamConfig{Servers: []string{"dns.example:53"}}); err == nil {
		t.Error("host name as a server accepted")
	}
}
