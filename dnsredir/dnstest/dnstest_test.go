package dnstest_test

import (
	"errors"
	"net/netip"
	"testing"
	"time"

	"github.com/clauderon/clauderond/dnsredir/dnstest"
	"github.com/miekg/dns"
)

func TestRecorder_FixedAddressesAndCounts(t *testing.T) {
	udp, tcp := dnstest.NewRecorder(), dnstest.NewTCPRecorder()
	if got := udp.RemoteAddr().String(); got != "192.0.2.10:53000" || udp.RemoteAddr().Network() != "udp" {
		t.Errorf("UDP RemoteAddr = %s/%s, want 192.0.2.10:53000/udp", got, udp.RemoteAddr().Network())
	}
	if got := tcp.LocalAddr().String(); got != "192.0.2.1:53" || tcp.RemoteAddr().Network() != "tcp" {
		t.Errorf("TCP LocalAddr = %s/%s, want 192.0.2.1:53/tcp", got, tcp.RemoteAddr().Network())
	}
	m := new(dns.Msg)
	m.SetQuestion("Example.COM.", dns.TypeA)
	if err := udp.WriteMsg(m); err != nil {
		t.Fatal(err)
	}
	if udp.Writes() != 1 || udp.Msg().Question[0].Name != "Example.COM." || len(udp.Packed()) != 1 {
		t.Errorf("after one WriteMsg: %d writes, msg %v", udp.Writes(), udp.Msg())
	}
	udp.WriteErr = errors.New("boom")
	if err := udp.WriteMsg(m); err == nil || udp.Writes() != 2 || len(udp.Msgs()) != 1 {
		t.Errorf("failing WriteMsg: err %v, %d writes, %d msgs; want error, 2, 1", err, udp.Writes(), len(udp.Msgs()))
	}
}

func TestServer_AnswersAsProgrammed(t *testing.T) {
	s := dnstest.NewServer(t)
	s.SetA("a.example", 60, "192.0.2.1")
	s.SetCNAME("alias.example", "a.example", 30)
	s.SetRcode("fail.example", dns.RcodeServerFailure)
	tests := []struct {
		proto, name string
		rcode       int
		answers     int
	}{
		{"udp", "a.example.", dns.RcodeSuccess, 1},
		{"tcp", "A.EXAMPLE.", dns.RcodeSuccess, 1},
		{"udp", "alias.example.", dns.RcodeSuccess, 2},
		{"udp", "fail.example.", dns.RcodeServerFailure, 0},
		{"tcp", "missing.example.", dns.RcodeNameError, 0},
	}
	for _, tt := range tests {
		q := new(dns.Msg)
		q.SetQuestion(tt.name, dns.TypeA)
		c := &dns.Client{Net: tt.proto, Timeout: 2 * time.Second}
		m, _, err := c.Exchange(q, s.Addr)
		if err != nil {
			t.Fatalf("%s %s: %v", tt.proto, tt.name, err)
		}
		if m.Rcode != tt.rcode || len(m.Answer) != tt.answers {
			t.Errorf("%s %s: rcode %s, %d answers; want %s, %d", tt.proto, tt.name, dns.RcodeToString[m.Rcode], len(m.Answer), dns.RcodeToString[tt.rcode], tt.answers)
		}
	}
	if got := len(s.Queries()); got != len(tests) {
		t.Errorf("Queries() has %d entries, want %d", got, len(tests))
	}
	if ap := netip.MustParseAddrPort(s.Addr); !ap.Addr().IsLoopback() {
		t.Errorf("server listens on %s, want loopback", s.Addr)
	}
}
