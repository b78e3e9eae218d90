package dnsredir

import "sync/atomic"

// Stats is a snapshot of a Handler's counters, for metrics. Every message
// received is counted in exactly one of Intercepted, Allowed, Denied,
// RateLimited, Busy, Malformed or Dropped (the Server counts the messages it
// screens out before the Handler: unparsable ones as Malformed, responses as
// Dropped). Truncated, ResolveErrors, Overloaded, WriteErrors and Panics
// count events within those queries; TCPConnsRejected counts connections.
type Stats struct {
	Intercepted uint64 // answered for a name a credential rule intercepts
	Allowed     uint64 // answered for a name on the egress allowlist
	Denied      uint64 // refused by policy (NXDOMAIN or REFUSED), or not class IN, or a zone transfer
	RateLimited uint64 // refused with REFUSED because the client exceeded its rate
	Busy        uint64 // refused with REFUSED because the client had MaxInFlightPerClient queries in flight
	Malformed   uint64 // FORMERR, NOTIMP, BADVERS or an invalid query name
	Dropped     uint64 // not answered at all: a response sent as a query, or a nil message

	Truncated     uint64 // UDP answers cut to the client's buffer size, TC set
	ResolveErrors uint64 // lookups that failed (SERVFAIL to the client); not-found is not an error
	Overloaded    uint64 // lookups refused because MaxConcurrentLookups were in flight (SERVFAIL)
	WriteErrors   uint64 // replies the ResponseWriter failed to send
	Panics        uint64 // queries that panicked and were answered SERVFAIL

	TCPConnsRejected uint64 // TCP connections closed at accept: over MaxTCPConns or MaxTCPConnsPerClient
}

// counters is the live, atomically updated form of Stats.
type counters struct {
	intercepted, allowed, denied, rateLimited, busy, malformed, dropped atomic.Uint64
	truncated, resolveErrors, overloaded, writeErrors, panics           atomic.Uint64
	tcpRejected                                                         atomic.Uint64
}

func (c *counters) snapshot() Stats {
	return Stats{
		Intercepted:   c.intercepted.Load(),
		Allowed:       c.allowed.Load(),
		Denied:        c.denied.Load(),
		RateLimited:   c.rateLimited.Load(),
		Busy:          c.busy.Load(),
		Malformed:     c.malformed.Load(),
		Dropped:       c.dropped.Load(),
		Truncated:     c.truncated.Load(),
		ResolveErrors: c.resolveErrors.Load(),
		Overloaded:    c.overloaded.Load(),
		WriteErrors:   c.writeErrors.Load(),
		Panics:        c.panics.Load(),

		TCPConnsRejected: c.tcpRejected.Load(),
	}
}
