package dnstest

import (
	"context"
	"net"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/miekg/dns"
)

// Query is one question a Server received.
type Query struct {
	Name  string // as received, including case and the trailing dot
	Qtype uint16
	Proto string // "udp" or "tcp"
}

// Server is a loopback DNS server (UDP and TCP on the same ephemeral port of
// 127.0.0.1) with programmable answers. Unknown names get NXDOMAIN. It is
// shut down when the test ends.
type Server struct {
	// Addr is "127.0.0.1:port", the same port for UDP and TCP.
	Addr string

	mu          sync.Mutex
	a           map[string][]dns.RR
	cname       map[string]*dns.CNAME
	rcode       map[string]int
	truncateUDP bool
	delay       time.Duration
	queries     []Query
}

// NewServer starts a Server and registers its shutdown with t.Cleanup.
func NewServer(t testing.TB) *Server {
	t.Helper()
	s := &Server{a: map[string][]dns.RR{}, cname: map[string]*dns.CNAME{}, rcode: map[string]int{}}
	pc, ln := listenPair(t)
	s.Addr = pc.LocalAddr().String()
	udp := s.start(t, &dns.Server{PacketConn: pc})
	tcp := s.start(t, &dns.Server{Listener: ln})
	t.Cleanup(func() {
		for _, st := range []*started{udp, tcp} {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			if err := st.srv.ShutdownContext(ctx); err != nil {
				t.Errorf("dnstest: shutting down: %v", err)
			}
			cancel()
			<-st.done
		}
	})
	return s
}

// listenPair binds UDP and TCP on the same free loopback port.
func listenPair(t testing.TB) (net.PacketConn, net.Listener) {
	t.Helper()
	var lastErr error
	for range 20 {
		pc, err := net.ListenPacket("udp4", "127.0.0.1:0")
		if err != nil {
			t.Fatalf("dnstest: listening on udp: %v", err)
		}
		ln, err := net.Listen("tcp4", pc.LocalAddr().String())
		if err == nil {
			return pc, ln
		}
		lastErr = err
		pc.Close()
	}
	t.Fatalf("dnstest: no free port for both udp and tcp: %v", lastErr)
	return nil, nil
}

type started struct {
	srv  *dns.Server
	done chan struct{}
}

func (s *Server) start(t testing.TB, srv *dns.Server) *started {
	t.Helper()
	st := &started{srv: srv, done: make(chan struct{})}
	ready := make(chan struct{})
	srv.Handler = dns.HandlerFunc(s.serve)
	srv.NotifyStartedFunc = func() { close(ready) }
	errc := make(chan error, 1)
	go serveTestUpstream(srv, st.done, errc)
	select {
	case <-ready:
	case err := <-errc:
		t.Fatalf("dnstest: starting server: %v", err)
	}
	return st
}

func serveTestUpstream(srv *dns.Server, done chan struct{}, errc chan<- error) {
	defer close(done)
	errc <- srv.ActivateAndServe()
}

func key(name string) string { return strings.ToLower(dns.Fqdn(name)) }

// SetA answers name with A records for addrs (replacing earlier ones).
func (s *Server) SetA(name string, ttl uint32, addrs ...string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	var rrs []dns.RR
	for _, a := range addrs {
		ip := netip.MustParseAddr(a)
		rrs = append(rrs, &dns.A{
			Hdr: dns.RR_Header{Name: dns.Fqdn(name), Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: ttl},
			A:   net.IP(ip.AsSlice()),
		})
	}
	s.a[key(name)] = rrs
}

// SetCNAME makes name an alias of target.
func (s *Server) SetCNAME(name, target string, ttl uint32) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.cname[key(name)] = &dns.CNAME{
		Hdr:    dns.RR_Header{Name: dns.Fqdn(name), Rrtype: dns.TypeCNAME, Class: dns.ClassINET, Ttl: ttl},
		Target: dns.Fqdn(target),
	}
}

// SetRcode answers every query for name with rcode and no records.
func (s *Server) SetRcode(name string, rcode int) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.rcode[key(name)] = rcode
}

// SetTruncateUDP makes every UDP answer empty with TC set, so clients must
// retry over TCP.
func (s *Server) SetTruncateUDP(on bool) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.truncateUDP = on
}

// SetDelay delays every answer by d.
func (s *Server) SetDelay(d time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.delay = d
}

// Queries returns every question received, in order.
func (s *Server) Queries() []Query {
	s.mu.Lock()
	defer s.mu.Unlock()
	return append([]Query(nil), s.queries...)
}

func (s *Server) serve(w dns.ResponseWriter, r *dns.Msg) {
	proto := "udp"
	if w.RemoteAddr().Network() == "tcp" {
		proto = "tcp"
	}
	m, delay := s.answer(r, proto)
	if delay > 0 {
		time.Sleep(delay)
	}
	_ = w.WriteMsg(m)
}

// answer builds the reply under the lock: rcode overrides, truncation, then
// the CNAME chain and A records.
func (s *Server) answer(r *dns.Msg, proto string) (*dns.Msg, time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	m := new(dns.Msg)
	m.SetReply(r)
	m.RecursionAvailable = true
	if len(r.Question) != 1 {
		m.Rcode = dns.RcodeFormatError
		return m, s.delay
	}
	q := r.Question[0]
	s.queries = append(s.queries, Query{Name: q.Name, Qtype: q.Qtype, Proto: proto})
	if rc, ok := s.rcode[key(q.Name)]; ok {
		m.Rcode = rc
		return m, s.delay
	}
	if s.truncateUDP && proto == "udp" {
		m.Truncated = true
		return m, s.delay
	}
	name := key(q.Name)
	for range 10 {
		c, ok := s.cname[name]
		if !ok {
			break
		}
		m.Answer = append(m.Answer, c)
		name = key(c.Target)
	}
	a, ok := s.a[name]
	switch {
	case ok && q.Qtype == dns.TypeA:
		m.Answer = append(m.Answer, a...)
	case !ok && len(m.Answer) == 0:
		m.Rcode = dns.RcodeNameError
	}
	return m, s.delay
}
