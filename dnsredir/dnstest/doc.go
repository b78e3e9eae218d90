// Package dnstest holds test doubles for DNS code, for tests only (the root
// deps test keeps production packages from importing it):
//
//   - Server, a loopback UDP+TCP DNS server on an ephemeral port with
//     programmable A, CNAME and rcode answers that records every query it
//     receives, standing in for an upstream resolver;
//   - Recorder, a dns.ResponseWriter with fixed, documented addresses that
//     records (and round-trips through the wire format) what a handler
//     writes.
//
// It never listens on anything but 127.0.0.1 and never contacts a real
// resolver.
package dnstest
