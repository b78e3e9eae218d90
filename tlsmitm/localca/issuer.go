package localca

import (
	"context"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"time"

	"github.com/caddyserver/certmagic"
)

// DefaultLeafLifetime is the validity of an issued leaf. Short, because
// certmagic renews it in the background (at 1/3 remaining) from local keys
// with no network, and a leaked leaf key is then useful only briefly.
const DefaultLeafLifetime = 7 * 24 * time.Hour

// minLeafLifetime is the shortest leaf worth issuing; a CA that close to its
// NotAfter must be replaced, not used.
const minLeafLifetime = time.Hour

// Issuer issues leaf certificates from a CA. It implements certmagic.Issuer.
// Every error it returns is wrapped in certmagic.ErrNoRetry: retrying a local
// signature cannot help, and certmagic's retry loop would stall a TLS
// handshake for minutes.
type Issuer struct {
	ca       *CA
	lifetime time.Duration
	now      func() time.Time
}

var _ certmagic.Issuer = (*Issuer)(nil)

// NewIssuer returns an issuer for ca; lifetime <= 0 means DefaultLeafLifetime.
func NewIssuer(ca *CA, lifetime time.Duration) *Issuer {
	if lifetime <= 0 {
		lifetime = DefaultLeafLifetime
	}
	return &Issuer{ca: ca, lifetime: lifetime, now: time.Now}
}

// IssuerKey ties stored leaves to this CA's root: a new root (new
// fingerprint) never serves leaves signed under the old one. A renewed
// intermediate keeps the key: stored leaves carry their own chain.
func (i *Issuer) IssuerKey() string {
	return "clauderon-localca-" + i.ca.fingerprint[:16]
}

// Issue signs a leaf for the DNS names in csr. It refuses CSRs that carry IP
// addresses, e-mail addresses or URIs, or no DNS name at all.
func (i *Issuer) Issue(ctx context.Context, csr *x509.CertificateRequest) (*certmagic.IssuedCertificate, error) {
	if err := ctx.Err(); err != nil {
		return nil, certmagic.ErrNoRetry{Err: fmt.Errorf("issuing leaf: %w", err)}
	}
	now := i.now()
	parent, key, chain, err := i.ca.signer(now)
	if err != nil {
		return nil, certmagic.ErrNoRetry{Err: fmt.Errorf("issuing leaf for %v: %w", csr.DNSNames, err)}
	}
	tmpl, err := i.leafTemplate(csr, parent, now)
	if err != nil {
		return nil, certmagic.ErrNoRetry{Err: fmt.Errorf("issuing leaf for %v: %w", csr.DNSNames, err)}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, csr.PublicKey, key)
	if err != nil {
		return nil, certmagic.ErrNoRetry{Err: fmt.Errorf("signing leaf for %v: %w", csr.DNSNames, err)}
	}
	// Leaf then intermediate: certmagic serves the whole PEM as the chain.
	out := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	return &certmagic.IssuedCertificate{
		Certificate: append(out, chain...),
		Metadata:    map[string]string{"ca_fingerprint": i.ca.fingerprint},
	}, nil
}

// leafTemplate validates csr and returns the leaf template, with NotAfter
// clamped to parent's (the intermediate's or the root's) NotAfter.
func (i *Issuer) leafTemplate(csr *x509.CertificateRequest, parent *x509.Certificate, now time.Time) (*x509.Certificate, error) {
	if err := csr.CheckSignature(); err != nil {
		return nil, fmt.Errorf("checking CSR signature: %w", err)
	}
	if len(csr.IPAddresses) > 0 || len(csr.EmailAddresses) > 0 || len(csr.URIs) > 0 {
		return nil, errors.New("CSR names IP addresses, e-mail addresses or URIs; only DNS names are issued")
	}
	if len(csr.DNSNames) == 0 {
		return nil, errors.New("CSR names no DNS name")
	}
	notAfter := now.Add(i.lifetime)
	if caEnd := parent.NotAfter; notAfter.After(caEnd) {
		notAfter = caEnd
	}
	if notAfter.Sub(now) < minLeafLifetime {
		return nil, fmt.Errorf("CA %s (%q) expires at %s, too soon to issue; run `clauderond ca rotate`",
			i.ca.certPath, parent.Subject.CommonName, parent.NotAfter.Format(time.RFC3339))
	}
	return &x509.Certificate{
		SerialNumber:          randomSerial(),
		Subject:               pkix.Name{CommonName: csr.DNSNames[0]},
		DNSNames:              csr.DNSNames,
		NotBefore:             now.Add(-5 * time.Minute),
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		AuthorityKeyId:        parent.SubjectKeyId,
	}, nil
}
