package tlsmitm

import "sync/atomic"

// Stats is a snapshot of the server's counters, for metrics.
type Stats struct {
	Intercepted     int64 // connections terminated
	Requests        int64 // intercepted HTTP requests completed
	Passthrough     int64 // connections spliced
	Denied          int64 // connections refused (policy, no SNI, IP SNI)
	HelloErrors     int64 // connections that never sent a usable ClientHello
	HandshakeErrors int64 // client TLS handshakes that failed
	UpstreamErrors  int64 // requests or splices whose upstream failed
	Panics          int64 // recovered panics (clauderon_panics_total)
	RejectedConns   int64 // connections closed by the connection shares (MaxConns, MaxConnsPerSource, reserve)
	RefusedRequests int64 // requests answered 503 by the request shares (MaxRequests, MaxRequestsPerSource, reserve)
	BodyTimeouts    int64 // requests failed because their body made no progress for BodyIdleTimeout
	ActiveConns     int64 // connections being peeked, handshaked or spliced
	ActiveHTTPConns int64 // terminated connections held by the HTTP server
	ActiveRequests  int64 // intercepted requests in flight
	ParkedConns     int64 // of ActiveHTTPConns, those idle long enough to wait on a small stack
}

type counters struct {
	intercepted, requests, passthrough, denied   atomic.Int64
	helloErrors, handshakeErrors, upstreamErrors atomic.Int64
	panics, active, activeRequests, activeHTTP   atomic.Int64
	rejected, refusedRequests, bodyTimeouts      atomic.Int64
	h2Buffers                                    atomic.Int64 // h2 connection buffers out of their pools
	parked                                       atomic.Int64 // idle connections parked (park.go)
}

// Stats returns the current counters.
func (s *Server) Stats() Stats {
	c := &s.stats
	return Stats{
		Intercepted: c.intercepted.Load(), Requests: c.requests.Load(),
		Passthrough: c.passthrough.Load(), Denied: c.denied.Load(),
		HelloErrors: c.helloErrors.Load(), HandshakeErrors: c.handshakeErrors.Load(),
		UpstreamErrors: c.upstreamErrors.Load(), Panics: c.panics.Load(),
		ActiveConns: c.active.Load(), ActiveRequests: c.activeRequests.Load(),
		ActiveHTTPConns: c.activeHTTP.Load(), RejectedConns: c.rejected.Load(),
		RefusedRequests: c.refusedRequests.Load(), BodyTimeouts: c.bodyTimeouts.Load(),
		ParkedConns: c.parked.Load(),
	}
}
