package dnsredir_test

import (
	"context"
	"errors"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/clauderon/clauderond/dnsredir"
	"github.com/clauderon/clauderond/dnsredir/dnstest"
	"github.com/miekg/dns"
)

var gateway = netip.MustParseAddr("10.213.0.1")

func TestDeny_UnknownNameIsNXDOMAINAndNeverForwarded(t *testing.T) {
	res := &recordingResolver{addrs: map[string][]netip.Addr{"evil.example": addrs("203.0.113.9")}}
	audit := &eventLog{}
	h := newHandler(t, dnsredir.Config{
		Reloadable: dnsredir.Reloadable{Policy: policy(map[string]dnsredir.Decision{"api.anthropic.com": dnsredir.Intercept})},
		Resolver:   res,
		Auditor:    audit,
	})
	tests := []struct {
		name  string
		qname string
		qtype uint16
	}{
		{"a_record", "evil.example.", dns.TypeA},
		{"aaaa", "evil.example.", dns.TypeAAAA},
		{"txt_exfil_label", "c2VjcmV0LXRva2Vu.evil.example.", dns.TypeTXT},
		{"mx", "evil.example.", dns.TypeMX},
		{"https_rr", "evil.example.", dns.TypeHTTPS},
		{"any", "evil.example.", dns.TypeANY},
		{"null", "evil.example.", dns.TypeNULL},
		{"subdomain_of_intercepted_host", "x.api.anthropic.com.", dns.TypeA},
		{"root", ".", dns.TypeNS},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := ask(t, h, dnstest.NewRecorder(), question(tt.qname, tt.qtype))
			if m.Rcode != dns.RcodeNameError {
				t.Errorf("rcode = %s, want NXDOMAIN", dns.RcodeToString[m.Rcode])
			}
			if len(m.Answer)+len(m.Ns) != 0 {
				t.Errorf("denied answer carries records: %v %v", m.Answer, m.Ns)
			}
			ev := audit.Events()[len(audit.Events())-1]
			if ev.Decision != dnsredir.AuditDeny || ev.Policy != dnsredir.Deny || ev.Rcode != dns.RcodeNameError {
				t.Errorf("audit event = %+v, want dns-deny / deny / NXDOMAIN", ev)
			}
		})
	}
	if calls := res.Calls(); len(calls) != 0 {
		t.Errorf("denied names reached the resolver: %q", calls)
	}
	if got := h.Stats().Denied; got != uint64(len(tests)) {
		t.Errorf("Stats().Denied = %d, want %d", got, len(tests))
	}
}

func TestDeny_RcodeRefusedIsConfigurable(t *testing.T) {
	h := newHandler(t, dnsredir.Config{
		Reloadable: dnsredir.Reloadable{Policy: policy(nil)},
		Resolver:   &recordingResolver{},
		DenyRcode:  dns.RcodeRefused,
	})
	m := ask(t, h, dnstest.NewRecorder(), question("evil.example.", dns.TypeA))
	if m.Rcode != dns.RcodeRefused {
		t.Errorf("rcode = %s, want REFUSED", dns.RcodeToString[m.Rcode])
	}
}

func TestConfig_InvalidIsRejected(t *testing.T) {
	tests := []struct {
		name string
		cfg  dnsredir.Config
		want string
	}{
		{"no_policy", dnsredir.Config{}, "Policy is required"},
		{"deny_rcode_servfail", dnsredir.Config{Reloadable: dnsredir.Reloadable{Policy: policy(nil)}, DenyRcode: dns.RcodeServerFailure}, "DenyRcode"},
		{"negative_ttl", dnsredir.Config{Reloadable: dnsredir.Reloadable{Policy: policy(nil)}, TTL: -time.Second}, "TTL"},
		{"sub_second_ttl", dnsredir.Config{Reloadable: dnsredir.Reloadable{Policy: policy(nil)}, TTL: time.Millisecond}, "TTL"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := dnsredir.NewHandler(tt.cfg)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Errorf("NewHandler error = %v, want one containing %q", err, tt.want)
			}
		})
	}
}

func TestIntercept_LoopbackOverrideAnswersGateway(t *testing.T) {
	res := &recordingResolver{addrs: map[string][]netip.Addr{"api.anthropic.com": addrs("160.79.104.10")}}
	audit := &eventLog{}
	var asked []string
	h := newHandler(t, dnsredir.Config{
		Reloadable: dnsredir.Reloadable{
			Policy: policy(map[string]dnsredir.Decision{"api.anthropic.com": dnsredir.Intercept}),
			InterceptAnswer: func(name string) []netip.Addr {
				asked = append(asked, name)
				return []netip.Addr{gateway, netip.MustParseAddr("fd00::1")} // the IPv6 one must be dropped
			},
		},
		Resolver: res,
		Auditor:  audit,
	})
	m := ask(t, h, dnstest.NewRecorder(), question("API.Anthropic.COM.", dns.TypeA))
	if m.Rcode != dns.RcodeSuccess {
		t.Fatalf("rcode = %s, want NOERROR", dns.RcodeToString[m.Rcode])
	}
	if got := aAddrs(t, m); !slices.Equal(got, []netip.Addr{gateway}) {
		t.Errorf("answer = %v, want only the gateway %v", got, gateway)
	}
	a := m.Answer[0].Header()
	if a.Name != "API.Anthropic.COM." || a.Ttl != 30 {
		t.Errorf("answer owner %q ttl %d, want the question's spelling and TTL 30", a.Name, a.Ttl)
	}
	if !slices.Equal(asked, []string{"api.anthropic.com"}) {
		t.Errorf("InterceptAnswer asked for %q, want the normalised name", asked)
	}
	if calls := res.Calls(); len(calls) != 0 {
		t.Errorf("overridden name reached the resolver: %q", calls)
	}
	ev := audit.Events()[0]
	if ev.Decision != dnsredir.AuditAllow || ev.Policy != dnsredir.Intercept || ev.Rule != "rule:api.anthropic.com" || ev.Answers != 1 {
		t.Errorf("audit event = %+v, want dns-allow, intercept, its rule and 1 answer", ev)
	}
	if s := h.Stats(); s.Intercepted != 1 {
		t.Errorf("Stats().Intercepted = %d, want 1", s.Intercepted)
	}
}

func TestIntercept_WithoutOverrideIsResolved(t *testing.T) {
	res := &recordingResolver{addrs: map[string][]netip.Addr{"api.openai.com": addrs("162.159.140.245", "172.66.0.243")}}
	h := newHandler(t, dnsredir.Config{
		Reloadable: dnsredir.Reloadable{Policy: policy(map[string]dnsredir.Decision{"api.openai.com": dnsredir.Intercept}),
			InterceptAnswer: func(string) []netip.Addr { return nil }},
		Resolver: res,
	})
	m := ask(t, h, dnstest.NewRecorder(), question("api.openai.com.", dns.TypeA))
	if got, want := aAddrs(t, m), addrs("162.159.140.245", "172.66.0.243"); !slices.Equal(got, want) {
		t.Errorf("answer = %v, want %v", got, want)
	}
	if calls := res.Calls(); !slices.Equal(calls, []string{"ip4 api.openai.com"}) {
		t.Errorf("resolver calls = %q, want one ip4 lookup of the normalised name", calls)
	}
}

func TestAllow_AAAAIsEmpty(t *testing.T) {
	res := &recordingResolver{addrs: map[string][]netip.Addr{"registry.npmjs.org": addrs("104.16.0.34")}}
	h := newHandler(t, dnsredir.Config{
		Reloadable: dnsredir.Reloadable{Policy: policy(map[string]dnsredir.Decision{"registry.npmjs.org": dnsredir.Allow})},
		Resolver:   res,
	})
	m := ask(t, h, dnstest.NewRecorder(), question("registry.npmjs.org.", dns.TypeAAAA))
	if m.Rcode != dns.RcodeSuccess || len(m.Answer) != 0 {
		t.Errorf("AAAA reply rcode %s answers %v, want NOERROR with no records", dns.RcodeToString[m.Rcode], m.Answer)
	}
	if calls := res.Calls(); len(calls) != 0 {
		t.Errorf("AAAA query reached the resolver: %q", calls)
	}
}

func TestAllow_NonAddressTypesAreNODATAAndNeverForwarded(t *testing.T) {
	res := &recordingResolver{addrs: map[string][]netip.Addr{"github.com": addrs("140.82.121.4")}}
	audit := &eventLog{}
	h := newHandler(t, dnsredir.Config{
		Reloadable: dnsredir.Reloadable{Policy: policy(map[string]dnsredir.Decision{"github.com": dnsredir.Allow})},
		Resolver:   res,
		Auditor:    audit,
	})
	for _, qtype := range []uint16{dns.TypeHTTPS, dns.TypeSVCB, dns.TypeTXT, dns.TypeMX, dns.TypeCNAME, dns.TypeANY, dns.TypeSRV, dns.TypeNS, dns.TypeSOA, dns.TypePTR, dns.TypeCAA} {
		t.Run(dns.TypeToString[qtype], func(t *testing.T) {
			m := ask(t, h, dnstest.NewRecorder(), question("github.com.", qtype))
			if m.Rcode != dns.RcodeSuccess || len(m.Answer)+len(m.Ns) != 0 {
				t.Errorf("rcode %s answer %v ns %v, want NOERROR and no records", dns.RcodeToString[m.Rcode], m.Answer, m.Ns)
			}
		})
	}
	if calls := res.Calls(); len(calls) != 0 {
		t.Errorf("non-A queries reached the resolver: %q", calls)
	}
	for _, ev := range audit.Events() {
		if ev.Decision != dnsredir.AuditAllow || ev.Policy != dnsredir.Allow {
			t.Errorf("audit event = %+v, want dns-allow / allow", ev)
		}
	}
}

func TestAllow_ResolverOutcomes(t *testing.T) {
	tests := []struct {
		name      string
		res       *recordingResolver
		wantRcode int
		want      []netip.Addr
		wantErr   bool
	}{
		{"found", &recordingResolver{addrs: map[string][]netip.Addr{"pypi.org": addrs("151.101.0.223")}}, dns.RcodeSuccess, addrs("151.101.0.223"), false},
		{"not_found_is_nxdomain", &recordingResolver{}, dns.RcodeNameError, nil, true},
		{"failure_is_servfail", &recordingResolver{err: errors.New("upstream timed out")}, dns.RcodeServerFailure, nil, true},
		{"ipv6_and_duplicates_dropped", &recordingResolver{addrs: map[string][]netip.Addr{"pypi.org": addrs("2a04:4e42::223", "151.101.0.223", "::ffff:151.101.0.223")}}, dns.RcodeSuccess, addrs("151.101.0.223"), false},
		{"only_ipv6_is_nodata", &recordingResolver{addrs: map[string][]netip.Addr{"pypi.org": addrs("2a04:4e42::223")}}, dns.RcodeSuccess, nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			audit := &eventLog{}
			h := newHandler(t, dnsredir.Config{Reloadable: dnsredir.Reloadable{Policy: policy(map[string]dnsredir.Decision{"pypi.org": dnsredir.Allow})}, Resolver: tt.res, Auditor: audit})
			m := ask(t, h, dnstest.NewRecorder(), question("pypi.org.", dns.TypeA))
			if m.Rcode != tt.wantRcode {
				t.Errorf("rcode = %s, want %s", dns.RcodeToString[m.Rcode], dns.RcodeToString[tt.wantRcode])
			}
			if got := aAddrs(t, m); !slices.Equal(got, tt.want) {
				t.Errorf("answer = %v, want %v", got, tt.want)
			}
			if ev := audit.Events()[0]; (ev.Err != "") != tt.wantErr || ev.Rcode != tt.wantRcode {
				t.Errorf("audit event = %+v, want rcode %d and error %v", ev, tt.wantRcode, tt.wantErr)
			}
		})
	}
}

func TestAllow_AnswerCountIsBounded(t *testing.T) {
	var many []netip.Addr
	for i := range 200 {
		many = append(many, netip.AddrFrom4([4]byte{198, 51, 100, byte(i)}))
	}
	h := newHandler(t, dnsredir.Config{
		Reloadable: dnsredir.Reloadable{Policy: policy(map[string]dnsredir.Decision{"cdn.example": dnsredir.Allow})},
		Resolver:   &recordingResolver{addrs: map[string][]netip.Addr{"cdn.example": many}},
		MaxAnswers: 20,
	})
	m := ask(t, h, dnstest.NewTCPRecorder(), question("cdn.example.", dns.TypeA))
	if len(m.Answer) != 20 {
		t.Errorf("answer has %d records, want MaxAnswers=20", len(m.Answer))
	}
}

func TestName_NormalisedBeforePolicy(t *testing.T) {
	p := policy(map[string]dnsredir.Decision{"api.github.com": dnsredir.Allow})
	res := &recordingResolver{addrs: map[string][]netip.Addr{"api.github.com": addrs("140.82.112.6")}}
	h := newHandler(t, dnsredir.Config{Reloadable: dnsredir.Reloadable{Policy: p}, Resolver: res})
	for _, qname := range []string{"api.github.com.", "API.GITHUB.COM.", "Api.GitHub.Com."} {
		m := ask(t, h, dnstest.NewRecorder(), question(qname, dns.TypeA))
		if m.Rcode != dns.RcodeSuccess || len(m.Answer) != 1 {
			t.Errorf("%s: rcode %s answers %d, want NOERROR with 1 record", qname, dns.RcodeToString[m.Rcode], len(m.Answer))
		}
		if m.Question[0].Name != qname {
			t.Errorf("reply question %q, want the client's spelling %q", m.Question[0].Name, qname)
		}
	}
	for _, n := range p.names() {
		if n != "api.github.com" {
			t.Errorf("policy saw %q, want the normalised name", n)
		}
	}
}

func TestName_InvalidNamesNeverReachPolicy(t *testing.T) {
	p := policy(nil)
	audit := &eventLog{}
	h := newHandler(t, dnsredir.Config{Reloadable: dnsredir.Reloadable{Policy: p}, Resolver: &recordingResolver{}, Auditor: audit})
	// Over-long labels and names cannot be packed at all, so they never
	// arrive; TestNormalizeName covers them.
	tests := []struct{ name, qname string }{
		{"binary_label", "\\000\\255.example."},
		{"space_in_label", "a\\032b.example."},
		{"escaped_dot_inside_label", "a\\.b.example."},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			m := ask(t, h, dnstest.NewRecorder(), question(tt.qname, dns.TypeA))
			if m.Rcode != dns.RcodeNameError {
				t.Errorf("rcode = %s, want the deny rcode NXDOMAIN", dns.RcodeToString[m.Rcode])
			}
		})
	}
	if len(p.names()) != 0 {
		t.Errorf("policy was asked about invalid names: %q", p.names())
	}
	if got := h.Stats().Malformed; got != uint64(len(tests)) {
		t.Errorf("Stats().Malformed = %d, want %d", got, len(tests))
	}
	for _, ev := range audit.Events() {
		if ev.Decision != dnsredir.AuditDeny || !strings.Contains(ev.Err, "invalid query name") {
			t.Errorf("audit event = %+v, want dns-deny with an invalid-name error", ev)
		}
	}
}

func TestMalformed_QueriesGetTheRightRcode(t *testing.T) {
	withOpt := func(m *dns.Msg, version uint8) *dns.Msg {
		m.SetEdns0(1232, false)
		m.IsEdns0().SetVersion(version)
		return m
	}
	tests := []struct {
		name string
		msg  func() *dns.Msg
		want int
	}{
		{"no_question", func() *dns.Msg { m := new(dns.Msg); m.Id = 7; return m }, dns.RcodeFormatError},
		{"two_questions", func() *dns.Msg {
			m := question("github.com.", dns.TypeA)
			m.Question = append(m.Question, dns.Question{Name: "evil.example.", Qtype: dns.TypeA, Qclass: dns.ClassINET})
			return m
		}, dns.RcodeFormatError},
		{"answer_section_in_query", func() *dns.Msg {
			m := question("github.com.", dns.TypeA)
			m.Answer = []dns.RR{&dns.A{Hdr: dns.RR_Header{Name: "github.com.", Rrtype: dns.TypeA, Class: dns.ClassINET}, A: gateway.AsSlice()}}
			return m
		}, dns.RcodeFormatError},
		{"two_opt_records", func() *dns.Msg {
			m := withOpt(question("github.com.", dns.TypeA), 0)
			m.Extra = append(m.Extra, m.Extra[0])
			return m
		}, dns.RcodeFormatError},
		{"tsig_in_additional", func() *dns.Msg {
			m := question("github.com.", dns.TypeA)
			m.SetTsig("key.", dns.HmacSHA256, 300, time.Now().Unix())
			return m
		}, dns.RcodeFormatError},
		{"opcode_notify", func() *dns.Msg { m := question("github.com.", dns.TypeSOA); m.Opcode = dns.OpcodeNotify; return m }, dns.RcodeNotImplemented},
		{"opcode_update", func() *dns.Msg { m := new(dns.Msg); m.SetUpdate("github.com."); return m }, dns.RcodeNotImplemented},
		{"opcode_status", func() *dns.Msg { m := question("github.com.", dns.TypeA); m.Opcode = dns.OpcodeStatus; return m }, dns.RcodeNotImplemented},
		{"edns_version_1", func() *dns.Msg { return withOpt(question("github.com.", dns.TypeA), 1) }, dns.RcodeBadVers},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			res := &recordingResolver{addrs: map[string][]netip.Addr{"github.com": addrs("140.82.121.4")}}
			h := newHandler(t, dnsredir.Config{Reloadable: dnsredir.Reloadable{Policy: policy(map[string]dnsredir.Decision{"github.com": dnsredir.Allow})}, Resolver: res})
			m := ask(t, h, dnstest.NewRecorder(), tt.msg())
			if m.Rcode != tt.want {
				t.Errorf("rcode = %s, want %s", dns.RcodeToString[m.Rcode], dns.RcodeToString[tt.want])
			}
			if len(m.Answer) != 0 || len(res.Calls()) != 0 {
				t.Errorf("malformed query was answered (%v) or resolved (%q)", m.Answer, res.Calls())
			}
			if h.Stats().Malformed != 1 {
				t.Errorf("Stats().Malformed = %d, want 1", h.Stats().Malformed)
			}
		})
	}
}

func TestDeny_ClassesAndZoneTransfersAreRefused(t *testing.T) {
	h := newHandler(t, dnsredir.Config{Reloadable: dnsredir.Reloadable{Policy: policy(map[string]dnsredir.Decision{"github.com": dnsredir.Allow})}, Resolver: &recordingResolver{}})
	tests := []struct {
		name  string
		qtype uint16
		class uint16
	}{
		{"chaos_version_bind", dns.TypeTXT, dns.ClassCHAOS},
		{"class_any", dns.TypeA, dns.ClassANY},
		{"axfr", dns.TypeAXFR, dns.ClassINET},
		{"ixfr", dns.TypeIXFR, dns.ClassINET},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			q := question("github.com.", tt.qtype)
			q.Question[0].Qclass = tt.class
			if m := ask(t, h, dnstest.NewRecorder(), q); m.Rcode != dns.RcodeRefused {
				t.Errorf("rcode = %s, want REFUSED", dns.RcodeToString[m.Rcode])
			}
		})
	}
}

func TestDrop_ResponsesAreNeverAnswered(t *testing.T) {
	h := newHandler(t, dnsredir.Config{Reloadable: dnsredir.Reloadable{Policy: policy(nil)}, Resolver: &recordingResolver{}})
	rec := dnstest.NewRecorder()
	m := question("evil.example.", dns.TypeA)
	m.Response = true
	h.ServeDNS(rec, m)
	h.ServeDNS(rec, nil)
	if rec.Writes() != 0 {
		t.Errorf("ServeDNS wrote %d replies to a response and a nil message, want 0", rec.Writes())
	}
	if got := h.Stats().Dropped; got != 2 {
		t.Errorf("Stats().Dropped = %d, want 2", got)
	}
}

func TestEDNS_UDPSizeRespectedCappedAndTruncated(t *testing.T) {
	var many []netip.Addr
	for i := range 100 {
		many = append(many, netip.AddrFrom4([4]byte{198, 51, 100, byte(i)}))
	}
	tests := []struct {
		name    string
		tcp     bool
		edns    uint16 // 0: no OPT
		maxSize int
		wantTC  bool
	}{
		{"udp_no_edns_512", false, 0, 512, true},
		{"udp_edns_1232", false, 1232, 1232, true},
		{"udp_edns_4096_capped", false, 4096, dnsredir.MaxUDPSize, true},
		{"udp_edns_below_512_raised", false, 100, 512, true},
		{"tcp_everything", true, 1232, dns.MaxMsgSize, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			h := newHandler(t, dnsredir.Config{
				Reloadable: dnsredir.Reloadable{Policy: policy(map[string]dnsredir.Decision{"cdn.example": dnsredir.Allow})},
				Resolver:   &recordingResolver{addrs: map[string][]netip.Addr{"cdn.example": many}},
				MaxAnswers: 100,
			})
			rec := dnstest.NewRecorderFrom(dnstest.ClientAddr, tt.tcp)
			q := question("cdn.example.", dns.TypeA)
			if tt.edns != 0 {
				q.SetEdns0(tt.edns, false)
			}
			m := ask(t, h, rec, q)
			if size := len(rec.Packed()[0]); size > tt.maxSize {
				t.Errorf("reply is %d bytes, want at most %d", size, tt.maxSize)
			}
			if m.Truncated != tt.wantTC {
				t.Errorf("TC = %v, want %v", m.Truncated, tt.wantTC)
			}
			if !tt.wantTC && len(m.Answer) != 100 {
				t.Errorf("untruncated reply has %d answers, want 100", len(m.Answer))
			}
			opt := m.IsEdns0()
			if (opt != nil) != (tt.edns != 0) {
				t.Errorf("reply OPT = %v, want one exactly when the query had one", opt)
			}
			if opt != nil && (opt.UDPSize() != dnsredir.MaxUDPSize || opt.Do()) {
				t.Errorf("reply OPT advertises %d bytes, DO=%v; want %d, DO unset", opt.UDPSize(), opt.Do(), dnsredir.MaxUDPSize)
			}
		})
	}
}

// panicPolicy panics on every decision.
type panicPolicy struct{}

func (panicPolicy) Decide(string) (dnsredir.Decision, string) { panic("policy bug") }

func TestPanic_RecoveredAsSERVFAILAndCounted(t *testing.T) {
	audit := &eventLog{}
	h := newHandler(t, dnsredir.Config{Reloadable: dnsredir.Reloadable{Policy: panicPolicy{}}, Resolver: &recordingResolver{}, Auditor: audit})
	m := ask(t, h, dnstest.NewRecorder(), question("github.com.", dns.TypeA))
	if m.Rcode != dns.RcodeServerFailure {
		t.Errorf("rcode = %s, want SERVFAIL", dns.RcodeToString[m.Rcode])
	}
	if got := h.Stats().Panics; got != 1 {
		t.Errorf("Stats().Panics = %d, want 1", got)
	}
	if evs := audit.Events(); len(evs) != 1 || evs[0].Decision != dnsredir.AuditDeny || evs[0].Err != "internal error" {
		t.Errorf("audit = %+v, want one dns-deny with an internal error", evs)
	}
}

func TestRateLimit_PerClient(t *testing.T) {
	audit := &eventLog{}
	res := &recordingResolver{addrs: map[string][]netip.Addr{"github.com": addrs("140.82.121.4")}}
	h := newHandler(t, dnsredir.Config{
		Reloadable:    dnsredir.Reloadable{Policy: policy(map[string]dnsredir.Decision{"github.com": dnsredir.Allow})},
		Resolver:      res,
		RatePerSecond: 0.001, // effectively no refill during the test
		Burst:         3,
		Auditor:       audit,
	})
	noisy := dnstest.NewRecorderFrom(netip.MustParseAddrPort("10.213.0.5:40000"), false)
	quiet := dnstest.NewRecorderFrom(netip.MustParseAddrPort("10.213.0.6:40000"), false)
	for i := range 3 {
		if m := ask(t, h, noisy, question("github.com.", dns.TypeA)); m.Rcode != dns.RcodeSuccess {
			t.Fatalf("query %d within the burst: rcode %s, want NOERROR", i, dns.RcodeToString[m.Rcode])
		}
	}
	for range 5 {
		if m := ask(t, h, noisy, question("github.com.", dns.TypeA)); m.Rcode != dns.RcodeRefused || len(m.Answer) != 0 {
			t.Fatalf("query over the limit: rcode %s answers %v, want REFUSED and none", dns.RcodeToString[m.Rcode], m.Answer)
		}
	}
	if m := ask(t, h, quiet, question("github.com.", dns.TypeA)); m.Rcode != dns.RcodeSuccess {
		t.Errorf("another client was limited too: rcode %s", dns.RcodeToString[m.Rcode])
	}
	s := h.Stats()
	if s.RateLimited != 5 || s.Allowed != 4 {
		t.Errorf("Stats() = %+v, want RateLimited 5 and Allowed 4", s)
	}
	if got := len(res.Calls()); got != 4 {
		t.Errorf("resolver called %d times, want 4 (refused queries are not resolved)", got)
	}
	limited := 0
	for _, ev := range audit.Events() {
		if strings.Contains(ev.Err, "rate limited") {
			limited++
			if ev.Decision != dnsredir.AuditDeny || ev.Rcode != dns.RcodeRefused || ev.SrcIP != netip.MustParseAddr("10.213.0.5") {
				t.Errorf("rate-limit audit event = %+v, want dns-deny REFUSED from 10.213.0.5", ev)
			}
		}
	}
	if limited == 0 {
		t.Error("no rate-limited refusal was audited")
	}
}

func TestRateLimit_NegativeRateDisables(t *testing.T) {
	h := newHandler(t, dnsredir.Config{Reloadable: dnsredir.Reloadable{Policy: policy(nil)}, Resolver: &recordingResolver{}, RatePerSecond: -1, Burst: 1})
	for range 50 {
		if m := ask(t, h, dnstest.NewRecorder(), question("evil.example.", dns.TypeA)); m.Rcode == dns.RcodeRefused {
			t.Fatal("query refused with rate limiting disabled")
		}
	}
}

// staticIdentity names every client.
type staticIdentity map[netip.Addr]string

func (s staticIdentity) Lookup(a netip.Addr) (string, bool) { n, ok := s[a]; return n, ok }

func TestAudit_EventCarriesClientAndQuery(t *testing.T) {
	audit := &eventLog{}
	h := newHandler(t, dnsredir.Config{
		Reloadable: dnsredir.Reloadable{Policy: policy(map[string]dnsredir.Decision{"github.com": dnsredir.Allow})},
		Resolver:   &recordingResolver{addrs: map[string][]netip.Addr{"github.com": addrs("140.82.121.4")}},
		Identity:   staticIdentity{dnstest.ClientAddr.Addr(): "agent-1"},
		Auditor:    audit,
	})
	ask(t, h, dnstest.NewTCPRecorder(), question("GitHub.com.", dns.TypeA))
	ask(t, h, dnstest.NewRecorder(), question("evil.example.", dns.TypeTXT))
	evs := audit.Events()
	if len(evs) != 2 {
		t.Fatalf("%d audit events, want 2 (one per query)", len(evs))
	}
	want := []dnsredir.Event{
		{SrcIP: dnstest.ClientAddr.Addr(), Client: "agent-1", Proto: "tcp", Name: "github.com", Qtype: dns.TypeA, Decision: "dns-allow", Policy: dnsredir.Allow, Rule: "rule:github.com", Rcode: dns.RcodeSuccess, Answers: 1},
		{SrcIP: dnstest.ClientAddr.Addr(), Client: "agent-1", Proto: "udp", Name: "evil.example", Qtype: dns.TypeTXT, Decision: "dns-deny", Policy: dnsredir.Deny, Rule: "default-deny", Rcode: dns.RcodeNameError},
	}
	for i := range want {
		got := evs[i]
		if got.Time.IsZero() || got.Duration < 0 {
			t.Errorf("event %d: time %v duration %v", i, got.Time, got.Duration)
		}
		got.Time, got.Duration = time.Time{}, 0
		if got != want[i] {
			t.Errorf("event %d = %+v\nwant %+v", i, got, want[i])
		}
	}
}

func TestUpdate_SwapsPolicy(t *testing.T) {
	h := newHandler(t, dnsredir.Config{Reloadable: dnsredir.Reloadable{Policy: policy(nil)}, Resolver: &recordingResolver{}})
	if m := ask(t, h, dnstest.NewRecorder(), question("api.anthropic.com.", dns.TypeA)); m.Rcode != dns.RcodeNameError {
		t.Fatalf("before update: rcode %s, want NXDOMAIN", dns.RcodeToString[m.Rcode])
	}
	err := h.Update(dnsredir.Reloadable{
		Policy:          policy(map[string]dnsredir.Decision{"api.anthropic.com": dnsredir.Intercept}),
		InterceptAnswer: func(string) []netip.Addr { return []netip.Addr{gateway} },
	})
	if err != nil {
		t.Fatal(err)
	}
	m := ask(t, h, dnstest.NewRecorder(), question("api.anthropic.com.", dns.TypeA))
	if got := aAddrs(t, m); !slices.Equal(got, []netip.Addr{gateway}) {
		t.Errorf("after update: answer %v, want the gateway", got)
	}
	if err := h.Update(dnsredir.Reloadable{}); err == nil {
		t.Error("Update(nil) succeeded")
	}
}

func TestNormalizeName(t *testing.T) {
	tests := []struct {
		in, want string
		wantErr  bool
	}{
		{"Example.COM.", "example.com", false},
		{"example.com", "example.com", false},
		{".", "", false},
		{"_dmarc.Example.com.", "_dmarc.example.com", false},
		{"xn--bcher-kva.example.", "xn--bcher-kva.example", false},
		{strings.Repeat("a", 63) + ".example.", strings.Repeat("a", 63) + ".example", false},
		{strings.Repeat("a", 64) + ".example.", "", true},
		{"a..b.", "", true},
		{"..", "", true},
		{"a\\000b.example.", "", true},
		{"a b.example.", "", true},
		{"a/b.example.", "", true},
		{strings.Repeat("abcdefghi.", 26), "", true}, // 259 bytes
	}
	for _, tt := range tests {
		got, err := dnsredir.NormalizeName(tt.in)
		if (err != nil) != tt.wantErr || got != tt.want {
			t.Errorf("NormalizeName(%q) = %q, %v; want %q, error %v", tt.in, got, err, tt.want, tt.wantErr)
		}
	}
}

// blockingResolver blocks every lookup until its context ends or release is
// closed.
type blockingResolver struct {
	entered chan struct{}
	release chan struct{}
}

func (b *blockingResolver) LookupNetIP(ctx context.Context, _, _ string) ([]netip.Addr, error) {
	b.entered <- struct{}{}
	select {
	case <-ctx.Done():
		return nil, ctx.Err()
	case <-b.release:
		return addrs("192.0.2.1"), nil
	}
}

func TestOverload_LookupsInFlightAreBounded(t *testing.T) {
	res := &blockingResolver{entered: make(chan struct{}, 1), release: make(chan struct{})}
	h := newHandler(t, dnsredir.Config{
		Reloadable:           dnsredir.Reloadable{Policy: policy(map[string]dnsredir.Decision{"pypi.org": dnsredir.Allow})},
		Resolver:             res,
		MaxConcurrentLookups: 1,
	})
	first := dnstest.NewRecorder()
	done := make(chan struct{})
	go func() { defer close(done); h.ServeDNS(first, question("pypi.org.", dns.TypeA)) }()
	<-res.entered
	m := ask(t, h, dnstest.NewRecorder(), question("pypi.org.", dns.TypeA))
	if m.Rcode != dns.RcodeServerFailure {
		t.Errorf("query beyond MaxConcurrentLookups: rcode %s, want SERVFAIL", dns.RcodeToString[m.Rcode])
	}
	close(res.release)
	<-done
	if got := first.Msg(); got == nil || got.Rcode != dns.RcodeSuccess || len(got.Answer) != 1 {
		t.Errorf("first query: %v, want NOERROR with one answer", got)
	}
	if s := h.Stats(); s.Overloaded != 1 {
		t.Errorf("Stats().Overloaded = %d, want 1", s.Overloaded)
	}
}

func TestOverload_SlowLookupTimesOutAsSERVFAIL(t *testing.T) {
	res := &blockingResolver{entered: make(chan struct{}, 1), release: make(chan struct{})}
	h := newHandler(t, dnsredir.Config{
		Reloadable:    dnsredir.Reloadable{Policy: policy(map[string]dnsredir.Decision{"pypi.org": dnsredir.Allow})},
		Resolver:      res,
		LookupTimeout: 100 * time.Millisecond,
	})
	start := time.Now()
	m := ask(t, h, dnstest.NewRecorder(), question("pypi.org.", dns.TypeA))
	if m.Rcode != dns.RcodeServerFailure {
		t.Errorf("rcode %s, want SERVFAIL", dns.RcodeToString[m.Rcode])
	}
	if d := time.Since(start); d > time.Second {
		t.Errorf("lookup took %v, want about the 100ms LookupTimeout", d)
	}
	if s := h.Stats(); s.ResolveErrors != 1 {
		t.Errorf("Stats().ResolveErrors = %d, want 1", s.ResolveErrors)
	}
}

func TestWriteError_CountedAndAudited(t *testing.T) {
	audit := &eventLog{}
	h := newHandler(t, dnsredir.Config{Reloadable: dnsredir.Reloadable{Policy: policy(nil)}, Resolver: &recordingResolver{}, Auditor: audit})
	rec := dnstest.NewRecorder()
	rec.WriteErr = errors.New("connection reset")
	h.ServeDNS(rec, question("evil.example.", dns.TypeA))
	if rec.Writes() != 1 {
		t.Errorf("%d write attempts, want 1", rec.Writes())
	}
	if s := h.Stats(); s.WriteErrors != 1 {
		t.Errorf("Stats().WriteErrors = %d, want 1", s.WriteErrors)
	}
	if evs := audit.Events(); len(evs) != 1 || !strings.Contains(evs[0].Err, "connection reset") {
		t.Errorf("audit = %+v, want one event naming the write error", evs)
	}
}

// TestRateLimit_DefaultLetsABuildThrough: with the default limit, a build
// that opens 500 connections in a burst (an npm install resolving A and AAAA
// for each) is not refused; the limit is for floods, not for builds.
func TestRateLimit_DefaultLetsABuildThrough(t *testing.T) {
	h := newHandler(t, dnsredir.Config{
		Reloadable: dnsredir.Reloadable{Policy: policy(map[string]dnsredir.Decision{"registry.npmjs.org": dnsredir.Allow})},
		Resolver:   &recordingResolver{addrs: map[string][]netip.Addr{"registry.npmjs.org": addrs("104.16.0.35")}},
	})
	build := dnstest.NewRecorderFrom(netip.MustParseAddrPort("10.213.0.5:40000"), false)
	for i := range 500 {
		for _, qt := range []uint16{dns.TypeA, dns.TypeAAAA} {
			if m := ask(t, h, build, question("registry.npmjs.org.", qt)); m.Rcode == dns.RcodeRefused {
				t.Fatalf("connection %d's %s lookup refused under the default rate limit", i, dns.TypeToString[qt])
			}
		}
	}
}

// TestOverload_QueriesInFlightPerClientAreBounded: a client with
// MaxInFlightPerClient queries waiting (UDP and TCP alike) gets REFUSED at
// once for the next, counted as Busy, while another client is served.
func TestOverload_QueriesInFlightPerClientAreBounded(t *testing.T) {
	res := &blockingResolver{entered: make(chan struct{}, 4), release: make(chan struct{})}
	h := newHandler(t, dnsredir.Config{
		Reloadable:           dnsredir.Reloadable{Policy: policy(map[string]dnsredir.Decision{"pypi.org": dnsredir.Allow})},
		Resolver:             res,
		MaxInFlightPerClient: 2,
	})
	var wg sync.WaitGroup
	for _, rec := range []*dnstest.Recorder{dnstest.NewRecorder(), dnstest.NewTCPRecorder()} {
		wg.Add(1)
		go func() { defer wg.Done(); h.ServeDNS(rec, question("pypi.org.", dns.TypeA)) }()
		<-res.entered
	}
	for _, rec := range []*dnstest.Recorder{dnstest.NewRecorder(), dnstest.NewTCPRecorder()} {
		if m := ask(t, h, rec, question("pypi.org.", dns.TypeA)); m.Rcode != dns.RcodeRefused {
			t.Errorf("query beyond MaxInFlightPerClient: rcode %s, want REFUSED", dns.RcodeToString[m.Rcode])
		}
	}
	other := dnstest.NewRecorderFrom(netip.MustParseAddrPort("192.0.2.11:53000"), false)
	wg.Add(1)
	go func() { defer wg.Done(); h.ServeDNS(other, question("pypi.org.", dns.TypeA)) }()
	<-res.entered // another client's lookup still starts
	close(res.release)
	wg.Wait()
	if got := other.Msg(); got == nil || got.Rcode != dns.RcodeSuccess {
		t.Errorf("other client's query: %v, want NOERROR", got)
	}
	if s := h.Stats(); s.Busy != 2 || s.Allowed != 3 {
		t.Errorf("Stats() = %+v, want Busy 2 and Allowed 3", s)
	}
	// Slots are released: the client is served again.
	if m := ask(t, h, dnstest.NewRecorder(), question("pypi.org.", dns.TypeA)); m.Rcode != dns.RcodeSuccess {
		t.Errorf("after the queries finished: rcode %s, want NOERROR", dns.RcodeToString[m.Rcode])
	}
}
