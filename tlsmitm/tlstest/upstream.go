package tlstest

import (
	"crypto/tls"
	"net/http"
	"net/http/httptest"
	"testing"
)

// Upstream is a loopback TLS server (h2 and HTTP/1.1) with a certificate
// from its own CA for the given names.
type Upstream struct {
	*httptest.Server
	CA *CA
}

// NewUpstream starts handler on 127.0.0.1:0 with a leaf for names, and
// closes it when the test ends.
func NewUpstream(t testing.TB, handler http.Handler, names ...string) *Upstream {
	t.Helper()
	ca := NewCA(t)
	srv := httptest.NewUnstartedServer(handler)
	srv.EnableHTTP2 = true
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{ca.Leaf(t, names...)}}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	return &Upstream{Server: srv, CA: ca}
}

// Addr is the upstream's host:port.
func (u *Upstream) Addr() string { return u.Listener.Addr().String() }

// Client returns an HTTP client that trusts the upstream's CA and speaks h2
// when forceH2 is set (for direct-to-upstream baselines).
func (u *Upstream) Client(forceH2 bool) *http.Client {
	tr := &http.Transport{
		TLSClientConfig:     &tls.Config{RootCAs: u.CA.Pool()},
		ForceAttemptHTTP2:   forceH2,
		MaxIdleConnsPerHost: 64,
	}
	if !forceH2 {
		tr.TLSNextProto = map[string]func(string, *tls.Conn) http.RoundTripper{}
	}
	return &http.Client{Transport: tr}
}
