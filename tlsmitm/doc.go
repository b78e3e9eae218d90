// Package tlsmitm is clauderond's TLS terminator for connections redirected
// from the container bridge. For each connection it reads the ClientHello
// without consuming it (bounded in size and time), routes by SNI through a
// Router, and then either
//
//   - intercepts: terminates TLS with a leaf certificate from the local CA
//     (tlsmitm/localca, managed by certmagic with no network access), serves
//     HTTP/1.1 and h2, asks an Injector to rewrite each request, and forwards
//     it over verified TLS to the real address of the SNI host, streaming
//     responses back unbuffered. HTTP/1.x connections are relayed by the
//     terminator itself, one goroutine per connection over a pool of
//     HTTP/1.1 upstream connections (h1relay.go: half the CPU of net/http's
//     server and transport); h2 connections by a frame loop of their own
//     over x/net/http2's Framer (h2serve.go), one goroutine per request,
//     relayed over that same pool (h2relay.go), except gRPC, which keeps
//     httputil.ReverseProxy and a pooled h2 transport (an h2 upstream leg);
//   - passes through: splices the bytes, untouched, to the SNI host's real
//     address on port 443;
//   - denies: sends a TLS alert and closes.
//
// Every decision is reported to an Auditor as one Event per request
// (intercept) or per connection (passthrough, deny); the fields a client
// controls (SNI, Host, Method, and Path as sent on the wire, not decoded)
// are cut to 512 bytes of printable ASCII before the Auditor sees them.
// Errors are sentinel values (errors.go) mapped in one place to an HTTP
// status (421 SNI/Host mismatch, 403 forbidden, 405 for TRACE, TRACK and
// h2 CONNECT, 502 upstream failure with a JSON body and X-Clauderon-Error),
// a TLS alert, or an audit decision. After its own 421, 403 or 405 the
// terminator ends the client connection (HTTP/1.1 Connection: close, h2
// GOAWAY).
//
// Resource bounds: a container runs arbitrary code and may attack the
// daemon, so what one client address (source) can hold is bounded, and
// so is the total, by fair shares (persource.go). Open connections
// (MaxConns 4096, MaxConnsPerSource 256) and intercepted requests in flight
// on HTTP/1.1 and h2 together (MaxRequests 512, MaxRequestsPerSource 48)
// follow one rule: the total stays under the global cap, a source under
// its own, and the last quarter of the global cap is kept for sources
// holding fewer than a sixty-fourth of it. Sources that already hold a lot
// thus take at most three quarters between them, and a new container
// still gets its first 64 connections and 8 requests. A connection beyond
// the shares is closed unread; a request is answered 503 with
// Retry-After (on h2 with no body, which would need flow-control window),
// audited with the limit it hit, and counted (Stats.RefusedRequests). A
// request body that makes no progress for BodyIdleTimeout (30s) fails with
// 408 and its upstream request is cancelled; a response the client accepts
// nothing of for WriteIdleTimeout (60s: a client that stops reading or
// never opens its h2 window) is abandoned. The h2 legs use small buffers:
// 32 streams per client connection, 16 KiB client frames, 128 KiB of
// upload window per stream, 512 KiB of download window per upstream
// stream (the connection window stays large so one client's unread
// streams cannot stall the others sharing an upstream connection). A
// request then holds at most about 1 MiB (an upstream advertising large
// frames costs up to 512 KiB of x/net's upload scratch buffer), so one
// source's worst case is about 48 MiB of requests plus its connections:
// TestAttack_OneSourceCannotExhaustMemory holds that flood and checks the
// heap stays under 64 MiB while another source is served.
//
// What it refuses to do: it never decides which credential to inject or
// whether a client may use one (it asks an Injector), and never lets a
// TRACE, TRACK or CONNECT reach the Injector or an intercepted upstream;
// it never accepts a wildcard route on a public suffix ("*.github.io"); it never decides which
// hosts are intercepted or allowed (it asks a Router); it never forwards to
// the address the container dialled (upstream addresses come from its own
// Resolver or an explicit Upstream override), never dials loopback,
// link-local, unspecified, multicast, denied prefixes or the host's own
// addresses without such an override, never issues a certificate for an IP
// address or a name the Router does not intercept, never talks ACME or OCSP,
// and never writes a header value (where credentials live) to a log, an
// error or an audit Event.
package tlsmitm
