package dnsredir

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"runtime/debug"
	"sync/atomic"
	"time"

	"github.com/miekg/dns"
)

// query is the state of one ServeDNS call.
type query struct {
	w       dns.ResponseWriter
	req     *dns.Msg
	start   time.Time
	tcp     bool
	written bool
	ev      Event
}

var (
	errOverloaded   = errors.New("too many lookups in flight")
	errRateLimited  = errors.New("rate limited")
	errBusy         = errors.New("too many queries in flight from this client")
	errZoneTransfer = errors.New("zone transfers are not served")
	errNotClassIN   = errors.New("only class IN is served")
)

// ServeDNS answers one query; it writes exactly one reply, except for a nil
// message or a DNS response sent as a query, which are dropped.
func (h *Handler) ServeDNS(w dns.ResponseWriter, r *dns.Msg) {
	q := &query{w: w, req: r, start: h.now()}
	q.ev = Event{Time: q.start, SrcIP: remoteIP(w), Proto: "udp"}
	if isTCP(w) {
		q.tcp, q.ev.Proto = true, "tcp"
	}
	defer h.recoverQuery(q)
	h.serve(q)
}

// serve runs the checks in order: drop, rate limit, well-formedness, name,
// policy, answer.
func (h *Handler) serve(q *query) {
	r := q.req
	if r == nil || r.Response {
		h.stats.dropped.Add(1)
		return
	}
	if h.limiter != nil && !h.limiter.allow(q.ev.SrcIP, q.start) {
		h.refuseOverLimit(q, &h.stats.rateLimited, errRateLimited)
		return
	}
	if !h.flight.enter(q.ev.SrcIP) {
		h.refuseOverLimit(q, &h.stats.busy, fmt.Errorf("%w (limit %d)", errBusy, h.cfg.MaxInFlightPerClient))
		return
	}
	defer h.flight.leave(q.ev.SrcIP)
	h.identify(q)
	if rcode, err := checkQuery(r); err != nil {
		h.stats.malformed.Add(1)
		h.finish(q, h.reply(r, rcode), err)
		return
	}
	question := r.Question[0]
	q.ev.Qtype = question.Qtype
	name, err := NormalizeName(question.Name)
	if err != nil {
		q.ev.Name = truncateName(question.Name)
		h.stats.malformed.Add(1)
		h.finish(q, h.reply(r, h.cfg.DenyRcode), err)
		return
	}
	q.ev.Name = name
	if err := checkQuestion(question); err != nil {
		h.stats.denied.Add(1)
		h.finish(q, h.reply(r, dns.RcodeRefused), err)
		return
	}
	h.decide(q, name)
}

// identify names the client for the audit.
func (h *Handler) identify(q *query) {
	if h.cfg.Identity != nil {
		q.ev.Client, _ = h.cfg.Identity.Lookup(q.ev.SrcIP)
	}
}

// decide asks the Policy and answers accordingly.
func (h *Handler) decide(q *query, name string) {
	ps := h.policy.Load()
	decision, rule := Deny, ""
	if name != "" { // the root is never a host
		decision, rule = ps.Policy.Decide(name)
	}
	q.ev.Policy, q.ev.Rule = decision, rule
	switch decision {
	case Intercept, Allow:
		if decision == Intercept {
			h.stats.intercepted.Add(1)
		} else {
			h.stats.allowed.Add(1)
		}
		m, err := h.answer(q, ps, name, decision)
		h.finish(q, m, err)
	default:
		q.ev.Policy = Deny
		h.stats.denied.Add(1)
		h.finish(q, h.reply(q.req, h.cfg.DenyRcode), nil)
	}
}

// answer builds the reply for an answered name: A records for an A query,
// NODATA for every other type.
func (h *Handler) answer(q *query, ps *Reloadable, name string, decision Decision) (*dns.Msg, error) {
	if q.req.Question[0].Qtype != dns.TypeA {
		return h.reply(q.req, dns.RcodeSuccess), nil
	}
	addrs, err := h.addresses(ps, name, decision)
	switch {
	case isNotFound(err):
		return h.reply(q.req, dns.RcodeNameError), err
	case err != nil:
		return h.reply(q.req, dns.RcodeServerFailure), err
	}
	m := h.reply(q.req, dns.RcodeSuccess)
	m.Answer = h.aRecords(q.req.Question[0].Name, addrs)
	return m, nil
}

// addresses returns the IPv4 addresses for name: InterceptAnswer's for an
// intercepted name when it has any, else the Resolver's.
func (h *Handler) addresses(ps *Reloadable, name string, decision Decision) ([]netip.Addr, error) {
	if decision == Intercept && ps.InterceptAnswer != nil {
		if addrs := ps.InterceptAnswer(name); len(addrs) > 0 {
			return addrs, nil
		}
	}
	select {
	case h.lookups <- struct{}{}:
		defer func() { <-h.lookups }()
	default:
		h.stats.overloaded.Add(1)
		return nil, errOverloaded
	}
	ctx, cancel := context.WithTimeout(context.Background(), h.cfg.LookupTimeout)
	defer cancel()
	addrs, err := h.cfg.Resolver.LookupNetIP(ctx, "ip4", name)
	if err != nil && !isNotFound(err) {
		h.stats.resolveErrors.Add(1)
		return nil, fmt.Errorf("resolving %s: %w", name, err)
	}
	return addrs, err
}

// aRecords turns addresses into at most MaxAnswers distinct A records owned by
// the query name exactly as the client spelled it (CNAME chains are flattened
// away; case is preserved for 0x20 randomisation).
func (h *Handler) aRecords(owner string, addrs []netip.Addr) []dns.RR {
	ttl := uint32(h.cfg.TTL / time.Second)
	seen := make(map[netip.Addr]bool, len(addrs))
	var rrs []dns.RR
	for _, a := range addrs {
		a = a.Unmap()
		if !a.Is4() || seen[a] || len(rrs) >= h.cfg.MaxAnswers {
			continue
		}
		seen[a] = true
		b := a.As4()
		rrs = append(rrs, &dns.A{
			Hdr: dns.RR_Header{Name: owner, Rrtype: dns.TypeA, Class: dns.ClassINET, Ttl: ttl},
			A:   net.IP(b[:]),
		})
	}
	return rrs
}

// reply starts a response to r with rcode.
func (h *Handler) reply(r *dns.Msg, rcode int) *dns.Msg {
	m := new(dns.Msg)
	m.SetRcode(r, rcode)
	m.RecursionAvailable = true
	m.Compress = true
	return m
}

// refuseOverLimit answers REFUSED for the rate limit or the in-flight cap
// (why), counts it and audits a sample of such refusals.
func (h *Handler) refuseOverLimit(q *query, counter *atomic.Uint64, why error) {
	counter.Add(1)
	q.ev.Decision = AuditDeny
	m := h.reply(q.req, dns.RcodeRefused)
	h.write(q, m)
	ok, suppressed := h.rlAudit.admit()
	if !ok {
		return
	}
	h.identify(q)
	if len(q.req.Question) > 0 {
		q.ev.Name, q.ev.Qtype = truncateName(q.req.Question[0].Name), q.req.Question[0].Qtype
	}
	q.ev.Err = why.Error()
	if suppressed > 0 {
		q.ev.Err = fmt.Sprintf("%s (%d more refusals not audited)", why, suppressed)
	}
	h.audit(q, m)
}

// finish writes m, then audits and logs the query once.
func (h *Handler) finish(q *query, m *dns.Msg, err error) {
	q.ev.Decision = AuditDeny
	if q.ev.Policy == Intercept || q.ev.Policy == Allow {
		q.ev.Decision = AuditAllow // the rcode says whether the lookup found anything
	}
	if err != nil {
		q.ev.Err = err.Error()
	}
	h.write(q, m)
	h.audit(q, m)
	h.logQuery(q)
}

// write applies the EDNS0 and size rules to m and sends it.
func (h *Handler) write(q *query, m *dns.Msg) {
	size := dns.MinMsgSize
	if opt := q.req.IsEdns0(); opt != nil {
		size = min(max(int(opt.UDPSize()), dns.MinMsgSize), MaxUDPSize)
		m.SetEdns0(MaxUDPSize, false)
	}
	if q.tcp {
		size = dns.MaxMsgSize
	}
	m.Truncate(size)
	if m.Truncated {
		h.stats.truncated.Add(1)
	}
	m.Compress = true
	q.written = true
	if err := q.w.WriteMsg(m); err != nil {
		h.stats.writeErrors.Add(1)
		if q.ev.Err == "" {
			q.ev.Err = "writing reply: " + err.Error()
		}
	}
}

func (h *Handler) audit(q *query, m *dns.Msg) {
	q.ev.Rcode = m.Rcode
	q.ev.Answers = len(m.Answer)
	q.ev.Duration = h.now().Sub(q.start)
	if h.cfg.Auditor != nil {
		h.cfg.Auditor.RecordDNS(q.ev)
	}
}

func (h *Handler) logQuery(q *query) {
	level := slog.LevelDebug
	if q.ev.Rcode == dns.RcodeServerFailure { // lookups that failed, overload
		level = slog.LevelWarn
	}
	h.events.LogAttrs(context.Background(), level, "dns query",
		slog.String("src_ip", q.ev.SrcIP.String()),
		slog.String("client", q.ev.Client),
		slog.String("proto", q.ev.Proto),
		slog.String("name", q.ev.Name),
		slog.String("qtype", dns.TypeToString[q.ev.Qtype]),
		slog.String("decision", q.ev.Decision),
		slog.String("rule", q.ev.Rule),
		slog.String("rcode", dns.RcodeToString[q.ev.Rcode]),
		slog.Int("answers", q.ev.Answers),
		slog.String("err", q.ev.Err),
	)
}

// recoverQuery turns a panic in one query into SERVFAIL for that query.
func (h *Handler) recoverQuery(q *query) {
	p := recover()
	if p == nil {
		return
	}
	h.stats.panics.Add(1)
	h.events.LogAttrs(context.Background(), slog.LevelError, "dns query panicked",
		slog.String("src_ip", q.ev.SrcIP.String()),
		slog.Any("panic", p),
		slog.String("stack", string(debug.Stack())))
	if q.written || q.req == nil {
		return
	}
	defer func() { _ = recover() }() // a writer that panics again gets no second chance
	q.ev.Decision, q.ev.Err = AuditDeny, "internal error"
	m := h.reply(q.req, dns.RcodeServerFailure)
	h.write(q, m)
	h.audit(q, m)
}

// checkQuery applies the message-level rules: QUERY opcode, one question,
// nothing in answer or authority, at most one OPT (of version 0) and nothing
// else in additional.
func checkQuery(r *dns.Msg) (rcode int, err error) {
	switch {
	case r.Opcode != dns.OpcodeQuery:
		return dns.RcodeNotImplemented, fmt.Errorf("opcode %s not implemented", dns.OpcodeToString[r.Opcode])
	case len(r.Question) != 1:
		return dns.RcodeFormatError, fmt.Errorf("%d questions, want 1", len(r.Question))
	case len(r.Answer) > 0 || len(r.Ns) > 0:
		return dns.RcodeFormatError, errors.New("query carries answer or authority records")
	}
	opts := 0
	for _, rr := range r.Extra {
		if _, ok := rr.(*dns.OPT); !ok {
			return dns.RcodeFormatError, fmt.Errorf("unexpected %s record in additional section", dns.TypeToString[rr.Header().Rrtype])
		}
		opts++
	}
	if opts > 1 {
		return dns.RcodeFormatError, errors.New("more than one OPT record")
	}
	if opt := r.IsEdns0(); opt != nil && opt.Version() != 0 {
		return dns.RcodeBadVers, fmt.Errorf("EDNS version %d not supported", opt.Version())
	}
	return dns.RcodeSuccess, nil
}

// checkQuestion refuses classes other than IN and zone transfers.
func checkQuestion(q dns.Question) error {
	if q.Qclass != dns.ClassINET {
		return errNotClassIN
	}
	switch q.Qtype {
	case dns.TypeAXFR, dns.TypeIXFR:
		return errZoneTransfer
	}
	return nil
}

func isNotFound(err error) bool {
	var dnsErr *net.DNSError
	return errors.As(err, &dnsErr) && dnsErr.IsNotFound
}

// truncateName bounds an invalid name's escaped form for the audit.
func truncateName(s string) string {
	const limit = 300
	if len(s) > limit {
		return s[:limit] + "…"
	}
	return s
}

// remoteIP returns the client's address, unmapped, or the zero Addr.
func remoteIP(w dns.ResponseWriter) netip.Addr {
	switch a := w.RemoteAddr().(type) {
	case *net.UDPAddr:
		return a.AddrPort().Addr().Unmap()
	case *net.TCPAddr:
		return a.AddrPort().Addr().Unmap()
	case nil:
		return netip.Addr{}
	default:
		ap, _ := netip.ParseAddrPort(a.String())
		return ap.Addr().Unmap()
	}
}

func isTCP(w dns.ResponseWriter) bool {
	a := w.RemoteAddr()
	return a != nil && a.Network() == "tcp"
}
