package localca

import (
	"bytes"
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/rsa"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// defaultHosts are the built-in rule hosts (injector.DefaultRules).
var defaultHosts = []string{"api.anthropic.com", "api.openai.com", "api.github.com", "github.com", "registry.npmjs.org"}

func TestPermittedDomains(t *testing.T) {
	got := PermittedDomains(append(slices.Clone(defaultHosts), "*.x.example.co.uk", "API.GitHub.com.", "10.0.0.1", "", "intranet", "github.io"))
	want := []string{"anthropic.com", "example.co.uk", "github.com", "github.io", "intranet", "npmjs.org", "openai.com"}
	if !slices.Equal(got, want) {
		t.Errorf("PermittedDomains = %v, want %v", got, want)
	}
}

func newConstrained(t *testing.T) (*CA, string) {
	t.Helper()
	dir := t.TempDir()
	ca, err := LoadOrCreateWith(dir, Options{Hosts: defaultHosts})
	if err != nil {
		t.Fatal(err)
	}
	return ca, dir
}

func TestCreate_RootAndIntermediateConstrained(t *testing.T) {
	ca, _ := newConstrained(t)
	want := []string{"anthropic.com", "github.com", "npmjs.org", "openai.com"}
	for name, c := range map[string]*x509.Certificate{"root": ca.Certificate(), "intermediate": ca.Intermediate()} {
		if !slices.Equal(c.PermittedDNSDomains, want) || !c.PermittedDNSDomainsCritical {
			t.Errorf("%s: PermittedDNSDomains %v critical %v, want %v critical", name, c.PermittedDNSDomains, c.PermittedDNSDomainsCritical, want)
		}
		if len(c.ExcludedIPRanges) != 2 || c.ExcludedIPRanges[0].String() != "0.0.0.0/0" || c.ExcludedIPRanges[1].String() != "::/0" {
			t.Errorf("%s: ExcludedIPRanges %v, want 0.0.0.0/0 and ::/0", name, c.ExcludedIPRanges)
		}
	}
	if err := ca.Intermediate().CheckSignatureFrom(ca.Certificate()); err != nil {
		t.Errorf("intermediate not signed by root: %v", err)
	}
	if !ca.Constrained() || ca.Notice() != "" {
		t.Errorf("Constrained %v Notice %q", ca.Constrained(), ca.Notice())
	}
}

// mint signs a leaf with the intermediate's key directly, bypassing the
// issuer's checks: what someone holding a leaked intermediate key could do.
func mint(t *testing.T, ca *CA, dns []string, ips []net.IP) (*x509.Certificate, crypto.Signer) {
	t.Helper()
	parent, key, _, err := ca.signer(time.Now())
	if err != nil {
		t.Fatal(err)
	}
	leafKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	tmpl := &x509.Certificate{
		SerialNumber: randomSerial(), Subject: pkix.Name{CommonName: "minted"},
		DNSNames: dns, IPAddresses: ips,
		NotBefore: time.Now().Add(-time.Minute), NotAfter: time.Now().Add(time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, leafKey.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	leaf, _ := x509.ParseCertificate(der)
	return leaf, leafKey
}

func TestConstraints_GoVerifier(t *testing.T) {
	ca, _ := newConstrained(t)
	inters := x509.NewCertPool()
	inters.AddCert(ca.Intermediate())
	verify := func(leaf *x509.Certificate, name string) error {
		_, err := leaf.Verify(x509.VerifyOptions{DNSName: name, Roots: ca.Pool(), Intermediates: inters})
		return err
	}
	ic, err := NewIssuer(ca, 0).Issue(context.Background(), csrFor(t, &x509.CertificateRequest{DNSNames: []string{"api.anthropic.com"}}))
	if err != nil {
		t.Fatal(err)
	}
	if leaf, pool := parseChain(t, ic.Certificate); true {
		if _, err := leaf.Verify(x509.VerifyOptions{DNSName: "api.anthropic.com", Roots: ca.Pool(), Intermediates: pool}); err != nil {
			t.Errorf("issued leaf with its own chain: %v", err)
		}
	}
	if leaf, _ := mint(t, ca, []string{"uploads.github.com"}, nil); verify(leaf, "uploads.github.com") != nil {
		t.Errorf("a new host under a permitted suffix: %v", verify(leaf, "uploads.github.com"))
	}
	for name, tc := range map[string]struct {
		dns  []string
		ips  []net.IP
		host string
	}{
		"outside_name":  {dns: []string{"evil.example"}, host: "evil.example"},
		"lookalike":     {dns: []string{"notanthropic.com"}, host: "notanthropic.com"},
		"ip_v4":         {ips: []net.IP{net.IPv4(127, 0, 0, 1)}, host: "127.0.0.1"},
		"ip_v6":         {ips: []net.IP{net.IPv6loopback}, host: "::1"},
		"mixed_one_bad": {dns: []string{"api.anthropic.com", "evil.example"}, host: "api.anthropic.com"},
	} {
		t.Run(name, func(t *testing.T) {
			leaf, _ := mint(t, ca, tc.dns, tc.ips)
			err := verify(leaf, tc.host)
			var inv x509.CertificateInvalidError
			if !errors.As(err, &inv) || inv.Reason != x509.CANotAuthorizedForThisName {
				t.Errorf("verify = %v, want a name-constraint error (CANotAuthorizedForThisName)", err)
			}
		})
	}
}

func TestLoadWith_HostOutsideRootIsAnError(t *testing.T) {
	_, dir := newConstrained(t)
	// A host under a known suffix needs no new root.
	if _, err := LoadOrCreateWith(dir, Options{Hosts: append(slices.Clone(defaultHosts), "uploads.github.com", "*.anthropic.com")}); err != nil {
		t.Errorf("host under a permitted suffix: %v", err)
	}
	_, err := LoadOrCreateWith(dir, Options{Hosts: append(slices.Clone(defaultHosts), "gitlab.com", "*.example.org")})
	if !errors.Is(err, ErrNotPermitted) {
		t.Fatalf("err = %v, want ErrNotPermitted", err)
	}
	for _, want := range []string{`"gitlab.com"`, `"*.example.org"`, "clauderond ca rotate"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %s", err, want)
		}
	}
	if strings.Contains(err.Error(), `"github.com"`) {
		t.Errorf("error names a permitted host: %v", err)
	}
}

// writeLegacy writes a CA the way older versions did: one self-signed root,
// path length 0, no constraints, no intermediate.
func writeLegacy(t *testing.T, dir string) *x509.Certificate {
	t.Helper()
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber: randomSerial(), Subject: pkix.Name{CommonName: legacyCN, Organization: []string{"clauderon"}},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(10 * 365 * 24 * time.Hour),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true, IsCA: true, MaxPathLen: 0, MaxPathLenZero: true, SubjectKeyId: ski(key.Public()),
	}
	writeRoot(t, dir, tmpl, key, "PRIVATE KEY")
	c, _ := x509.ParseCertificate(tmpl.Raw)
	return c
}

func writeRoot(t *testing.T, dir string, tmpl *x509.Certificate, key crypto.Signer, keyType string) {
	t.Helper()
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		t.Fatal(err)
	}
	tmpl.Raw = der
	var keyDER []byte
	switch keyType {
	case "PRIVATE KEY":
		keyDER, err = x509.MarshalPKCS8PrivateKey(key)
	case "EC PRIVATE KEY":
		keyDER, err = x509.MarshalECPrivateKey(key.(*ecdsa.PrivateKey))
	case "RSA PRIVATE KEY":
		keyDER = x509.MarshalPKCS1PrivateKey(key.(*rsa.PrivateKey))
	}
	if err != nil {
		t.Fatal(err)
	}
	os.MkdirAll(dir, 0o700)
	if err := os.WriteFile(filepath.Join(dir, KeyFile), pem.EncodeToMemory(&pem.Block{Type: keyType, Bytes: keyDER}), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, CertFile), encodeCert(der), 0o644); err != nil {
		t.Fatal(err)
	}
}

func issueAndVerify(t *testing.T, ca *CA, name string) {
	t.Helper()
	ic, err := NewIssuer(ca, 0).Issue(context.Background(), csrFor(t, &x509.CertificateRequest{DNSNames: []string{name}}))
	if err != nil {
		t.Fatal(err)
	}
	leaf, pool := parseChain(t, ic.Certificate)
	if _, err := leaf.Verify(x509.VerifyOptions{DNSName: name, Roots: ca.Pool(), Intermediates: pool}); err != nil {
		t.Errorf("leaf for %s: %v", name, err)
	}
}

func TestLegacyCA_KeepsWorkingUnconstrained(t *testing.T) {
	dir := t.TempDir()
	legacy := writeLegacy(t, dir)
	before, _ := os.ReadFile(filepath.Join(dir, CertFile))
	ca, err := LoadOrCreateWith(dir, Options{Hosts: append(slices.Clone(defaultHosts), "gitlab.com")})
	if err != nil {
		t.Fatalf("an older CA must keep loading: %v", err)
	}
	if ca.Fingerprint() != fingerprint(legacy) || ca.Intermediate() != nil || ca.Constrained() {
		t.Errorf("legacy CA changed: intermediate %v constrained %v", ca.Intermediate(), ca.Constrained())
	}
	if n := ca.Notice(); !strings.Contains(n, "not name-constrained") || !strings.Contains(n, "clauderond ca rotate") {
		t.Errorf("Notice = %q, want it to say unconstrained and suggest clauderond ca rotate", n)
	}
	after, _ := os.ReadFile(filepath.Join(dir, CertFile))
	if !bytes.Equal(before, after) {
		t.Error("proxy-ca.pem was rewritten")
	}
	if _, err := os.Stat(filepath.Join(dir, IntermediateCertFile)); err == nil {
		t.Error("an intermediate was created under a path-length-0 root")
	}
	issueAndVerify(t, ca, "api.anthropic.com")
	issueAndVerify(t, ca, "gitlab.com")
}

func TestOperatorCA_KeyFormats(t *testing.T) {
	rsaKey, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	ecKey, _ := ecdsa.GenerateKey(elliptic.P384(), rand.Reader)
	for name, tc := range map[string]struct {
		key     crypto.Signer
		keyType string
	}{
		"rsa_pkcs1": {rsaKey, "RSA PRIVATE KEY"},
		"rsa_pkcs8": {rsaKey, "PRIVATE KEY"},
		"ec_sec1":   {ecKey, "EC PRIVATE KEY"},
		"ec_pkcs8":  {ecKey, "PRIVATE KEY"},
	} {
		t.Run(name, func(t *testing.T) {
			dir := t.TempDir()
			tmpl := &x509.Certificate{
				SerialNumber: randomSerial(), Subject: pkix.Name{CommonName: "Example Corp Dev CA"},
				NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(365 * 24 * time.Hour),
				KeyUsage: x509.KeyUsageCertSign, BasicConstraintsValid: true, IsCA: true, SubjectKeyId: ski(tc.key.Public()),
			}
			writeRoot(t, dir, tmpl, tc.key, tc.keyType)
			ca, err := LoadOrCreateWith(dir, Options{Hosts: defaultHosts})
			if err != nil {
				t.Fatal(err)
			}
			if ca.Intermediate() != nil {
				t.Error("an intermediate was added under an operator's CA")
			}
			if n := ca.Notice(); !strings.Contains(n, "not name-constrained") || !strings.Contains(n, "Example Corp Dev CA") {
				t.Errorf("Notice = %q", n)
			}
			issueAndVerify(t, ca, "api.github.com")
		})
	}
}

func TestIntermediate_RenewedWhenLow(t *testing.T) {
	ca, dir := newConstrained(t)
	old := ca.Intermediate()
	later := old.NotAfter.Add(-IntermediateRenewBefore + 24*time.Hour)
	again, err := LoadWith(dir, Options{Hosts: defaultHosts, now: func() time.Time { return later.Add(-48 * time.Hour) }})
	if err != nil {
		t.Fatal(err)
	}
	if !again.Intermediate().Equal(old) {
		t.Error("intermediate with more than IntermediateRenewBefore left was renewed")
	}
	again, err = LoadWith(dir, Options{Hosts: defaultHosts, now: func() time.Time { return later }})
	if err != nil {
		t.Fatal(err)
	}
	renewed := again.Intermediate()
	if renewed.Equal(old) || !renewed.NotAfter.After(old.NotAfter) || !slices.Equal(renewed.PermittedDNSDomains, old.PermittedDNSDomains) {
		t.Fatalf("intermediate not renewed: %v → %v", old.NotAfter, renewed.NotAfter)
	}
	onDisk, err := parseCertPEM(must(os.ReadFile(filepath.Join(dir, IntermediateCertFile))))
	if err != nil || !onDisk.Equal(renewed) {
		t.Error("renewed intermediate not written")
	}
	// A long-running daemon renews at issuance.
	iss := NewIssuer(ca, 0)
	iss.now = func() time.Time { return later.Add(time.Hour) }
	if _, err := iss.Issue(context.Background(), csrFor(t, &x509.CertificateRequest{DNSNames: []string{"api.openai.com"}})); err != nil {
		t.Fatal(err)
	}
	if ca.Intermediate().Equal(old) {
		t.Error("issuer kept an intermediate with less than IntermediateRenewBefore left")
	}
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

func countCerts(t *testing.T, path string) int {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return bytes.Count(data, []byte("-----BEGIN CERTIFICATE-----"))
}

func TestRotate_OldRootTrustedUntilGraceEnds(t *testing.T) {
	old, dir := newConstrained(t)
	ic, err := NewIssuer(old, 0).Issue(context.Background(), csrFor(t, &x509.CertificateRequest{DNSNames: []string{"api.anthropic.com"}}))
	if err != nil {
		t.Fatal(err)
	}
	oldLeaf, oldChain := parseChain(t, ic.Certificate)
	oldKeyPEM := must(os.ReadFile(old.KeyPath()))

	res, err := Rotate(dir, Options{Hosts: append(slices.Clone(defaultHosts), "gitlab.com"), Grace: 48 * time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	if res.PreviousFingerprint != old.Fingerprint() || res.Fingerprint == old.Fingerprint() || !slices.Contains(res.PermittedDomains, "gitlab.com") {
		t.Errorf("RotateResult %+v", res)
	}
	if bytes.Equal(must(os.ReadFile(old.KeyPath())), oldKeyPEM) {
		t.Error("old root key still on disk")
	}
	if n := countCerts(t, old.CertPath()); n != 2 {
		t.Errorf("proxy-ca.pem holds %d certificates, want new + old", n)
	}
	rotated, err := LoadOrCreateWith(dir, Options{Hosts: []string{"gitlab.com"}})
	if err != nil {
		t.Fatal(err)
	}
	if rotated.Fingerprint() != res.Fingerprint || len(rotated.Previous()) != 1 || !rotated.Previous()[0].Equal(old.Certificate()) {
		t.Fatalf("after rotate: fingerprint %s previous %d", rotated.Fingerprint(), len(rotated.Previous()))
	}
	// Containers trusting proxy-ca.pem accept leaves of both roots.
	if _, err := oldLeaf.Verify(x509.VerifyOptions{DNSName: "api.anthropic.com", Roots: rotated.Pool(), Intermediates: oldChain}); err != nil {
		t.Errorf("old leaf during grace: %v", err)
	}
	issueAndVerify(t, rotated, "gitlab.com")
	if rotated.Intermediate().CheckSignatureFrom(rotated.Certificate()) != nil {
		t.Error("new intermediate not signed by new root")
	}

	// After the grace period the old root leaves proxy-ca.pem.
	after, err := LoadWith(dir, Options{now: func() time.Time { return time.Now().Add(49 * time.Hour) }})
	if err != nil {
		t.Fatal(err)
	}
	if len(after.Previous()) != 0 || countCerts(t, old.CertPath()) != 1 {
		t.Errorf("old root still trusted after the grace period")
	}
	if _, err := oldLeaf.Verify(x509.VerifyOptions{DNSName: "api.anthropic.com", Roots: after.Pool(), Intermediates: oldChain}); err == nil {
		t.Error("old leaf verifies after the grace period")
	}
}

func TestRotate_LegacyAndRepeated(t *testing.T) {
	dir := t.TempDir()
	legacy := writeLegacy(t, dir)
	r1, err := Rotate(dir, Options{Hosts: defaultHosts})
	if err != nil {
		t.Fatal(err)
	}
	if r1.PreviousFingerprint != fingerprint(legacy) || time.Until(r1.GraceUntil) < DefaultRotationGrace-time.Minute {
		t.Errorf("rotate legacy: %+v", r1)
	}
	if _, err := Rotate(dir, Options{Hosts: defaultHosts, Grace: time.Hour}); err != nil {
		t.Fatal(err)
	}
	ca, err := Load(dir)
	if err != nil {
		t.Fatal(err)
	}
	// New root, then the first rotated root (1h), then the legacy root (its own 30 days).
	if got := len(ca.Previous()); got != 2 || !ca.Previous()[1].Equal(legacy) || !ca.Constrained() || ca.Notice() != "" {
		t.Errorf("previous %d constrained %v notice %q", got, ca.Constrained(), ca.Notice())
	}
}

func TestRotate_EmptyDirCreates(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "s")
	res, err := Rotate(dir, Options{Hosts: defaultHosts})
	if err != nil || res.Fingerprint == "" || res.PreviousFingerprint != "" {
		t.Fatalf("%+v %v", res, err)
	}
	if _, err := Load(dir); err != nil {
		t.Fatal(err)
	}
}
