package localca

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/caddyserver/certmagic"
)

func TestLoadOrCreate_CreatesWithModesThenReuses(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "state")
	ca, err := LoadOrCreate(dir)
	if err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]os.FileMode{dir: 0o700, ca.CertPath(): 0o644, ca.KeyPath(): 0o600} {
		fi, err := os.Stat(path)
		if err != nil {
			t.Fatal(err)
		}
		if got := fi.Mode().Perm(); got != want {
			t.Errorf("%s mode %04o, want %04o", path, got, want)
		}
	}
	again, err := LoadOrCreate(dir)
	if err != nil {
		t.Fatal(err)
	}
	if again.Fingerprint() != ca.Fingerprint() {
		t.Error("second LoadOrCreate made a new CA; want the stored one reused")
	}
	c := again.Certificate()
	if !c.IsCA || c.MaxPathLen != 1 || time.Until(c.NotAfter) < DefaultCALifetime-2*time.Hour || time.Until(c.NotAfter) > DefaultCALifetime {
		t.Errorf("CA root: IsCA %v MaxPathLen %d NotAfter %v", c.IsCA, c.MaxPathLen, c.NotAfter)
	}
	in := again.Intermediate()
	if in == nil || !in.IsCA || !in.MaxPathLenZero || time.Until(in.NotAfter) > DefaultIntermediateLifetime || time.Until(in.NotAfter) < DefaultIntermediateLifetime-2*time.Hour {
		t.Errorf("CA intermediate: %+v", in)
	}
	for path, want := range map[string]os.FileMode{filepath.Join(dir, IntermediateCertFile): 0o644, filepath.Join(dir, IntermediateKeyFile): 0o600} {
		if fi, err := os.Stat(path); err != nil || fi.Mode().Perm() != want {
			t.Errorf("%s: %v, want mode %04o", path, err, want)
		}
	}
	if !strings.Contains(string(ca.CertPEM()), "BEGIN CERTIFICATE") {
		t.Error("CertPEM is not PEM")
	}
}

func TestLoad_RefusesKeyReadableByOthers(t *testing.T) {
	dir := t.TempDir()
	ca, err := LoadOrCreate(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, mode := range []os.FileMode{0o640, 0o604, 0o644} {
		if err := os.Chmod(ca.KeyPath(), mode); err != nil {
			t.Fatal(err)
		}
		_, err := LoadOrCreate(dir)
		if !errors.Is(err, ErrKeyPermissions) || !strings.Contains(err.Error(), "chmod 600 "+ca.KeyPath()) {
			t.Errorf("mode %04o: err = %v, want ErrKeyPermissions telling to chmod 600 %s", mode, err, ca.KeyPath())
		}
	}
}

func TestLoadOrCreate_RefusesHalfACA(t *testing.T) {
	dir := t.TempDir()
	ca, err := LoadOrCreate(dir)
	if err != nil {
		t.Fatal(err)
	}
	os.Remove(ca.CertPath())
	if _, err := LoadOrCreate(dir); err == nil || !strings.Contains(err.Error(), "missing") {
		t.Errorf("key without cert: err = %v, want a refusal (never silently replace a trusted CA)", err)
	}
	if _, err := os.Stat(ca.CertPath()); err == nil {
		t.Error("a new certificate was written next to the old key")
	}
}

func TestLoad_RefusesMismatchedPair(t *testing.T) {
	a, b := t.TempDir(), t.TempDir()
	if _, err := LoadOrCreate(a); err != nil {
		t.Fatal(err)
	}
	cb, err := LoadOrCreate(b)
	if err != nil {
		t.Fatal(err)
	}
	pemB, _ := os.ReadFile(cb.CertPath())
	os.WriteFile(filepath.Join(a, CertFile), pemB, 0o644)
	if _, err := Load(a); err == nil || !strings.Contains(err.Error(), "does not match") {
		t.Errorf("mismatched pair: err = %v", err)
	}
}

func csrFor(t *testing.T, tmpl *x509.CertificateRequest) *x509.CertificateRequest {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	der, err := x509.CreateCertificateRequest(rand.Reader, tmpl, key)
	if err != nil {
		t.Fatal(err)
	}
	csr, err := x509.ParseCertificateRequest(der)
	if err != nil {
		t.Fatal(err)
	}
	return csr
}

func parseLeaf(t *testing.T, ic *certmagic.IssuedCertificate) *x509.Certificate {
	t.Helper()
	leaf, _ := parseChain(t, ic.Certificate)
	return leaf
}

// parseChain splits an issued PEM into the leaf and a pool of the
// certificates after it (the intermediate).
func parseChain(t *testing.T, data []byte) (*x509.Certificate, *x509.CertPool) {
	t.Helper()
	var certs []*x509.Certificate
	for {
		var block *pem.Block
		block, data = pem.Decode(data)
		if block == nil {
			break
		}
		c, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			t.Fatal(err)
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		t.Fatal("no certificate in issued PEM")
	}
	pool := x509.NewCertPool()
	for _, c := range certs[1:] {
		pool.AddCert(c)
	}
	return certs[0], pool
}

func TestIssuer_IssuesVerifiableShortLivedLeaf(t *testing.T) {
	ca, err := LoadOrCreate(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	iss := NewIssuer(ca, 0)
	ic, err := iss.Issue(context.Background(), csrFor(t, &x509.CertificateRequest{DNSNames: []string{"api.anthropic.com"}}))
	if err != nil {
		t.Fatal(err)
	}
	leaf, inters := parseChain(t, ic.Certificate)
	if _, err := leaf.Verify(x509.VerifyOptions{DNSName: "api.anthropic.com", Roots: ca.Pool(), Intermediates: inters}); err != nil {
		t.Errorf("leaf does not verify against the CA: %v", err)
	}
	if life := leaf.NotAfter.Sub(leaf.NotBefore); life > DefaultLeafLifetime+10*time.Minute {
		t.Errorf("leaf lifetime %v, want about %v", life, DefaultLeafLifetime)
	}
	if !strings.Contains(iss.IssuerKey(), ca.Fingerprint()[:16]) {
		t.Errorf("IssuerKey %q not tied to CA fingerprint", iss.IssuerKey())
	}
}

func TestIssuer_LeafClampedToCANotAfter(t *testing.T) {
	ca, err := LoadOrCreate(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	iss := NewIssuer(ca, 30*24*time.Hour)
	iss.now = func() time.Time { return ca.Certificate().NotAfter.Add(-48 * time.Hour) }
	ic, err := iss.Issue(context.Background(), csrFor(t, &x509.CertificateRequest{DNSNames: []string{"x.test"}}))
	if err != nil {
		t.Fatal(err)
	}
	if got, want := parseLeaf(t, ic).NotAfter, ca.Certificate().NotAfter; !got.Equal(want) {
		t.Errorf("leaf NotAfter %v, want clamped to CA NotAfter %v", got, want)
	}
	iss.now = func() time.Time { return ca.Certificate().NotAfter.Add(-time.Minute) }
	_, err = iss.Issue(context.Background(), csrFor(t, &x509.CertificateRequest{DNSNames: []string{"x.test"}}))
	var noRetry certmagic.ErrNoRetry
	if !errors.As(err, &noRetry) {
		t.Errorf("issuing with the CA about to expire: err = %v, want ErrNoRetry", err)
	}
}

func TestIssuer_RefusesNonDNSNamesWithoutRetry(t *testing.T) {
	ca, err := LoadOrCreate(t.TempDir())
	if err != nil {
		t.Fatal(err)
	}
	iss := NewIssuer(ca, 0)
	tests := map[string]*x509.CertificateRequest{
		"ip_address": {DNSNames: []string{"a.test"}, IPAddresses: []net.IP{net.IPv4(10, 0, 0, 1)}},
		"email":      {DNSNames: []string{"a.test"}, EmailAddresses: []string{"a@b.test"}},
		"no_names":   {Subject: pkix.Name{CommonName: "a.test"}},
	}
	for name, tmpl := range tests {
		t.Run(name, func(t *testing.T) {
			_, err := iss.Issue(context.Background(), csrFor(t, tmpl))
			var noRetry certmagic.ErrNoRetry
			if !errors.As(err, &noRetry) {
				t.Errorf("err = %v, want a certmagic.ErrNoRetry refusal", err)
			}
		})
	}
}
