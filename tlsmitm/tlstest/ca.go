package tlstest

import (
	"crypto/tls"
	"crypto/x509"
	"testing"

	"github.com/clauderon/clauderond/scripts/fakeapi"
)

// CA is a throwaway certificate authority for test upstreams: the one the
// e2e suite's fake upstreams use (scripts/fakeapi, standard library only),
// failing the test instead of returning errors.
type CA struct {
	ca *fakeapi.CA
}

// NewCA creates a CA valid for a day.
func NewCA(t testing.TB) *CA {
	t.Helper()
	ca, err := fakeapi.NewCA("tlstest CA")
	if err != nil {
		t.Fatal(err)
	}
	return &CA{ca: ca}
}

// Pool returns a pool trusting only this CA.
func (ca *CA) Pool() *x509.CertPool { return ca.ca.Pool() }

// PEM returns the CA certificate in PEM form.
func (ca *CA) PEM() []byte { return ca.ca.PEM() }

// Leaf issues a server certificate for names (DNS names or IP literals).
func (ca *CA) Leaf(t testing.TB, names ...string) tls.Certificate {
	t.Helper()
	leaf, err := ca.ca.Leaf(names...)
	if err != nil {
		t.Fatal(err)
	}
	return leaf
}
