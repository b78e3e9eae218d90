// Package dnsredir is the DNS shim that the containers' port-53 traffic (UDP
// and TCP) is redirected to by nftables.
//
// It owns:
//   - Handler, a github.com/miekg/dns Handler that asks a Policy about every
//     query name and answers it itself: names a credential rule intercepts and
//     names on the egress allowlist get A records (from InterceptAnswer or the
//     daemon's own Resolver), everything else gets NXDOMAIN (or REFUSED);
//   - Server, which serves that Handler on a net.PacketConn and a
//     net.Listener handed in by the caller, with bounded TCP connections;
//   - UpstreamResolver, an A-record-only stub resolver with a bounded TTL
//     cache, used by the Handler for allowed names and by the appliance to
//     resolve upstream hosts;
//   - per-client rate limiting (how many queries a client starts) and a
//     per-client cap on queries in flight, UDP and TCP together (how many it
//     holds while lookups are slow; MaxInFlightPerClient, REFUSED beyond
//     it), on top of the global MaxConcurrentLookups and the TCP connection
//     caps; per-query recover, audit events and counters.
//
// What it refuses to do:
//   - It never forwards a client's query. A denied name never reaches any
//     resolver, so DNS cannot carry data out of the bridge; allowed names are
//     resolved by the daemon as A lookups of the normalised name only.
//   - It never answers AAAA, HTTPS/SVCB, TXT, MX or any other type with data:
//     for allowed names these get NOERROR with an empty answer (NODATA).
//     IPv6 is dropped on the bridge, and HTTPS records can carry ECH keys and
//     alt-svc hints that would route clients around the TLS terminator.
//   - It does no DNSSEC, zone transfers, dynamic updates, NOTIFY or TSIG.
//   - It does not decide policy, open sockets or read configuration: the
//     Policy, the Resolver, the listeners and the Auditor are handed in by
//     the appliance.
//
// Wire-level choices, so an operator knows what a client sees:
//   - a query with zero or several questions, or with answer/authority
//     records, gets FORMERR (coredns silently drops no-question queries; a
//     reply is friendlier to stub resolvers and is never larger than the
//     query);
//   - an opcode other than QUERY gets NOTIMP; a class other than IN gets
//     REFUSED; EDNS versions above 0 get BADVERS;
//   - a DNS response (QR bit set) arriving as a query is dropped without a
//     reply, as is a message too short to carry a header;
//   - UDP answers are bounded by the client's EDNS0 buffer size, capped at
//     1232 bytes (512 without EDNS0); a larger answer is truncated with TC set
//     so the client retries over TCP, where up to MaxAnswers records fit.
package dnsredir
