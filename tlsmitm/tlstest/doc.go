// Package tlstest holds test-only helpers for tlsmitm: a generator of real
// ClientHello bytes (made by crypto/tls itself, optionally re-framed across
// several TLS records, truncated or corrupted), a throwaway CA (the e2e fake
// upstreams' one, from scripts/fakeapi), and a loopback TLS upstream.
// Production code must never import it (the root deps test enforces this);
// it refuses to listen on anything but loopback.
package tlstest
