package dnsredir_test

import (
	"net/netip"
	"testing"
	"time"

	"github.com/clauderon/clauderond/dnsredir"
	"github.com/clauderon/clauderond/dnsredir/dnstest"
	"github.com/miekg/dns"
)

func benchHandler(b *testing.B) *dnsredir.Handler {
	h, err := dnsredir.NewHandler(dnsredir.Config{
		Reloadable:    dnsredir.Reloadable{Policy: policy(map[string]dnsredir.Decision{"github.com": dnsredir.Allow})},
		Resolver:      &recordingResolver{addrs: map[string][]netip.Addr{"github.com": addrs("140.82.121.4", "140.82.121.3")}},
		RatePerSecond: -1,
		EventLogger:   quietLogger(),
	})
	if err != nil {
		b.Fatal(err)
	}
	return h
}

func BenchmarkHandler(b *testing.B) {
	for _, bc := range []struct{ name, qname string }{{"deny", "evil.example."}, {"allow", "github.com."}} {
		b.Run(bc.name, func(b *testing.B) {
			h := benchHandler(b)
			q := question(bc.qname, dns.TypeA)
			q.SetEdns0(1232, false)
			b.ReportAllocs()
			for b.Loop() {
				h.ServeDNS(dnstest.NewRecorder(), q)
			}
		})
	}
}

// BenchmarkServerUDP measures a real round trip over loopback UDP.
func BenchmarkServerUDP(b *testing.B) {
	h := benchHandler(b)
	s := startServer(b, h, func(s *dnsredir.ServerConfig) { s.Logger = quietLogger() })
	c := &dns.Client{Net: "udp", Timeout: 2 * time.Second}
	conn, err := c.Dial(s.udp)
	if err != nil {
		b.Fatal(err)
	}
	defer conn.Close()
	q := question("github.com.", dns.TypeA)
	for b.Loop() {
		if _, _, err := c.ExchangeWithConn(q, conn); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkServerUDPParallel measures throughput with concurrent clients.
func BenchmarkServerUDPParallel(b *testing.B) {
	h := benchHandler(b)
	s := startServer(b, h, func(s *dnsredir.ServerConfig) { s.Logger = quietLogger() })
	b.RunParallel(func(pb *testing.PB) {
		c := &dns.Client{Net: "udp", Timeout: 2 * time.Second}
		conn, err := c.Dial(s.udp)
		if err != nil {
			b.Error(err)
			return
		}
		defer conn.Close()
		q := question("evil.example.", dns.TypeA)
		for pb.Next() {
			if _, _, err := c.ExchangeWithConn(q, conn); err != nil {
				b.Error(err)
				return
			}
		}
	})
}
