package localca

import (
	"bytes"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"time"

	"golang.org/x/net/publicsuffix"
)

// Subjects. rootCN marks a root made by this version (it signs an
// intermediate); legacyCN is the single self-signed CA of older versions.
const (
	rootCN         = "clauderon proxy root CA"
	intermediateCN = "clauderon proxy intermediate CA"
	legacyCN       = "clauderon proxy CA"
)

// excludedIPs exclude every IPv4 and IPv6 address from the hierarchy.
var excludedIPs = []*net.IPNet{
	{IP: net.IPv4zero.To4(), Mask: net.CIDRMask(0, 32)},
	{IP: net.IPv6zero, Mask: net.CIDRMask(0, 128)},
}

// PermittedDomains derives the DNS domains a CA must permit for hosts (exact
// names or "*.suffix" patterns): each host's registrable domain
// (publicsuffix.EffectiveTLDPlusOne: api.anthropic.com → anthropic.com,
// "*.x.example.com" → example.com). A host that has no registrable domain
// (a single label, or a public suffix itself) stands for itself. IP
// addresses and empty entries are skipped. The result is sorted and
// deduplicated.
func PermittedDomains(hosts []string) []string {
	var out []string
	for _, h := range hosts {
		if d := PermittedDomain(h); d != "" {
			out = append(out, d)
		}
	}
	return dedupe(out)
}

// PermittedDomain is PermittedDomains for one host ("" for an IP or "").
func PermittedDomain(host string) string {
	h := strings.TrimPrefix(normalize(host), "*.")
	if h == "" || h == "*" {
		return ""
	}
	if _, err := netip.ParseAddr(h); err == nil {
		return ""
	}
	if d, err := publicsuffix.EffectiveTLDPlusOne(h); err == nil {
		return d
	}
	return h
}

func normalize(s string) string {
	return strings.TrimSuffix(strings.ToLower(strings.TrimSpace(s)), ".")
}

func normalizeAll(ss []string) []string {
	out := make([]string, 0, len(ss))
	for _, s := range ss {
		if n := normalize(s); n != "" {
			out = append(out, n)
		}
	}
	return out
}

func dedupe(ss []string) []string {
	slices.Sort(ss)
	return slices.Compact(ss)
}

// permits reports whether the DNS constraint list allows name, with the
// RFC 5280 semantics Go and OpenSSL apply: "example.com" allows the name and
// its subdomains, ".example.com" only subdomains. An empty list allows all.
func permits(permitted []string, name string) bool {
	if len(permitted) == 0 {
		return true
	}
	for _, p := range permitted {
		p = strings.ToLower(p)
		if strings.HasPrefix(p, ".") {
			if strings.HasSuffix(name, p) {
				return true
			}
		} else if name == p || strings.HasSuffix(name, "."+p) {
			return true
		}
	}
	return false
}

// sampleName is a name that a certificate for host would carry: host
// itself, or a name under a "*.suffix" pattern.
func sampleName(host string) string {
	h := normalize(host)
	if rest, ok := strings.CutPrefix(h, "*."); ok {
		return "wildcard-sample." + rest
	}
	return h
}

// Constrained reports whether every certificate the CA signs leaves with is
// limited to permitted DNS names (root or intermediate carries
// PermittedDNSDomains).
func (c *CA) Constrained() bool {
	if len(c.root.PermittedDNSDomains) > 0 {
		return true
	}
	inter := c.Intermediate()
	return inter != nil && len(inter.PermittedDNSDomains) > 0
}

// PermittedDNSDomains returns the root's permitted DNS domains (nil: any).
func (c *CA) PermittedDNSDomains() []string { return slices.Clone(c.root.PermittedDNSDomains) }

// CheckHosts returns an ErrNotPermitted error naming every host (exact name
// or "*.suffix") that the root's or the intermediate's name constraints do
// not allow, with the fix. An unconstrained CA allows every host.
func (c *CA) CheckHosts(hosts []string) error {
	inter := c.Intermediate()
	var bad []string
	for _, h := range hosts {
		name := sampleName(h)
		if name == "" {
			continue
		}
		if _, err := netip.ParseAddr(name); err == nil {
			continue
		}
		ok := permits(c.root.PermittedDNSDomains, name)
		if inter != nil {
			ok = ok && permits(inter.PermittedDNSDomains, name)
		}
		if !ok {
			bad = append(bad, h)
		}
	}
	if len(bad) == 0 {
		return nil
	}
	return fmt.Errorf("%w: rule host(s) %s outside the domains the local CA root %s permits (%s); containers would refuse their certificates. "+
		"Run `clauderond ca rotate` to create a root that permits the configured rule hosts (the current root stays trusted during a grace period), "+
		"then restart clauderond; or remove the rule(s)",
		ErrNotPermitted, quoteAll(bad), c.certPath, strings.Join(c.root.PermittedDNSDomains, ", "))
}

func quoteAll(ss []string) string {
	q := make([]string, len(ss))
	for i, s := range ss {
		q[i] = fmt.Sprintf("%q", s)
	}
	return strings.Join(q, ", ")
}

// check applies opts to a loaded CA.
func (c *CA) check(opts Options) error {
	hosts := append(slices.Clone(opts.Hosts), normalizeAll(opts.PermittedDomains)...)
	return c.CheckHosts(hosts)
}

// Notice is a warning for the operator about this CA ("" when none): no name
// constraints (a CA from an older version or an operator's own CA), or a
// root close to its end.
func (c *CA) Notice() string {
	var notes []string
	switch {
	case c.Constrained():
	case c.root.Subject.CommonName == legacyCN:
		notes = append(notes, fmt.Sprintf("the local CA %s was created by an older clauderond and is not name-constrained: "+
			"if its key leaked, it could mint a certificate for any name that every container trusts; "+
			"run `clauderond ca rotate` to replace it with a name-constrained root (the old one stays trusted during a grace period)", c.certPath))
	case c.root.Subject.CommonName == rootCN:
		notes = append(notes, fmt.Sprintf("the local CA %s permits every DNS name (it was created without rule hosts); "+
			"run `clauderond ca rotate` to constrain it to the rule hosts' domains", c.certPath))
	default:
		notes = append(notes, fmt.Sprintf("the CA in %s (%q) is not name-constrained; clauderond uses it as it is and does not add constraints to an operator's CA: "+
			"if its key leaked, it could mint a certificate for any name that every container trusts", c.certPath, c.root.Subject.CommonName))
	}
	if left := time.Until(c.root.NotAfter); left < rootExpiryWarning {
		notes = append(notes, fmt.Sprintf("the local CA root %s expires at %s; run `clauderond ca rotate` before then",
			c.certPath, c.root.NotAfter.Format(time.RFC3339)))
	}
	if c.interNote != "" {
		notes = append(notes, c.interNote)
	}
	return strings.Join(notes, "; ")
}

// ---- creation ----

func newKey() (*ecdsa.PrivateKey, error) {
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("generating CA key: %w", err)
	}
	return key, nil
}

func ski(pub crypto.PublicKey) []byte {
	der, _ := x509.MarshalPKIXPublicKey(pub)
	sum := sha256.Sum256(der)
	return sum[:20]
}

func constrain(t *x509.Certificate, domains []string) {
	t.PermittedDNSDomains = slices.Clone(domains)
	t.ExcludedIPRanges = excludedIPs
	t.PermittedDNSDomainsCritical = true
}

// rootTemplate is a self-signed root that may sign one level of
// intermediates.
func rootTemplate(now time.Time, pub crypto.PublicKey, domains []string) *x509.Certificate {
	t := &x509.Certificate{
		SerialNumber:          randomSerial(),
		Subject:               pkix.Name{CommonName: rootCN, Organization: []string{"clauderon"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(DefaultCALifetime),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLen:            1,
		SubjectKeyId:          ski(pub),
	}
	constrain(t, domains)
	return t
}

// intermediateTemplate signs leaves only (path length 0, serverAuth) and
// carries the root's constraints again, for clients (Java) that enforce
// them only below the trust anchor.
func intermediateTemplate(now time.Time, pub crypto.PublicKey, root *x509.Certificate) *x509.Certificate {
	notAfter := now.Add(DefaultIntermediateLifetime)
	if notAfter.After(root.NotAfter) {
		notAfter = root.NotAfter
	}
	t := &x509.Certificate{
		SerialNumber:          randomSerial(),
		Subject:               pkix.Name{CommonName: intermediateCN, Organization: []string{"clauderon"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLen:            0,
		MaxPathLenZero:        true,
		SubjectKeyId:          ski(pub),
		AuthorityKeyId:        root.SubjectKeyId,
	}
	constrain(t, root.PermittedDNSDomains)
	return t
}

func encodeKey(key crypto.Signer) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return nil, fmt.Errorf("encoding CA key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: der}), nil
}

func encodeCert(der []byte) []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
}

// newRoot makes a root key and certificate (not written).
func newRoot(now time.Time, domains []string) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	key, err := newKey()
	if err != nil {
		return nil, nil, err
	}
	tmpl := rootTemplate(now, key.Public(), domains)
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key)
	if err != nil {
		return nil, nil, fmt.Errorf("signing CA root certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, err
	}
	return cert, key, nil
}

// newIntermediate makes an intermediate under root (not written).
func newIntermediate(now time.Time, root *x509.Certificate, rootKey crypto.Signer) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	key, err := newKey()
	if err != nil {
		return nil, nil, err
	}
	der, err := x509.CreateCertificate(rand.Reader, intermediateTemplate(now, key.Public(), root), root, key.Public(), rootKey)
	if err != nil {
		return nil, nil, fmt.Errorf("signing CA intermediate certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, err
	}
	return cert, key, nil
}

// create writes a new root and intermediate into dir.
func create(dir string, domains []string, now time.Time) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("creating state dir: %w", err)
	}
	root, rootKey, err := newRoot(now, domains)
	if err != nil {
		return err
	}
	inter, interKey, err := newIntermediate(now, root, rootKey)
	if err != nil {
		return err
	}
	// Intermediate first: a crash before the root is written leaves no
	// root files, and the next start creates everything again.
	if err := writeIntermediate(dir, inter, interKey); err != nil {
		return err
	}
	rootKeyPEM, err := encodeKey(rootKey)
	if err != nil {
		return err
	}
	if err := writeFileAtomic(filepath.Join(dir, KeyFile), rootKeyPEM, 0o600); err != nil {
		return err
	}
	return writeFileAtomic(filepath.Join(dir, CertFile), encodeCert(root.Raw), 0o644)
}

func writeIntermediate(dir string, cert *x509.Certificate, key crypto.Signer) error {
	keyPEM, err := encodeKey(key)
	if err != nil {
		return err
	}
	if err := writeFileAtomic(filepath.Join(dir, IntermediateKeyFile), keyPEM, 0o600); err != nil {
		return err
	}
	return writeFileAtomic(filepath.Join(dir, IntermediateCertFile), encodeCert(cert.Raw), 0o644)
}

func randomSerial() *big.Int {
	limit := new(big.Int).Lsh(big.NewInt(1), 127)
	n, err := rand.Int(rand.Reader, limit)
	if err != nil {
		panic(fmt.Sprintf("crypto/rand failed: %v", err)) // crypto/rand never fails on Linux
	}
	return n.Add(n, big.NewInt(1))
}

// ---- intermediate ----

// signsIntermediates reports whether root was made by this version (older
// roots have path length 0 and cannot sign an intermediate; an operator's
// root is used as it is).
func signsIntermediates(root *x509.Certificate) bool {
	return root.Subject.CommonName == rootCN && !root.MaxPathLenZero
}

// loadIntermediate loads the intermediate files, or decides that the root
// signs leaves itself, and renews an intermediate that runs low.
func (c *CA) loadIntermediate(now time.Time) error {
	certPath := filepath.Join(c.dir, IntermediateCertFile)
	keyPath := filepath.Join(c.dir, IntermediateKeyFile)
	_, certErr := os.Stat(certPath)
	_, keyErr := os.Stat(keyPath)
	present := certErr == nil && keyErr == nil
	switch {
	case certErr != nil && !errors.Is(certErr, fs.ErrNotExist):
		return fmt.Errorf("checking CA intermediate: %w", certErr)
	case keyErr != nil && !errors.Is(keyErr, fs.ErrNotExist):
		return fmt.Errorf("checking CA intermediate key: %w", keyErr)
	}
	if !present {
		if !signsIntermediates(c.root) {
			return nil // older or operator CA: the root signs leaves
		}
		// Ours, intermediate missing (or half of it): make a new one.
		return c.renewIntermediate(now, true)
	}
	if err := checkKeyMode(keyPath); err != nil {
		return err
	}
	certPEM, err := os.ReadFile(certPath)
	if err != nil {
		return fmt.Errorf("reading CA intermediate: %w", err)
	}
	keyPEM, err := os.ReadFile(keyPath)
	if err != nil {
		return fmt.Errorf("reading CA intermediate key: %w", err)
	}
	cert, err := parseCertPEM(certPEM)
	if err != nil {
		return fmt.Errorf("parsing CA intermediate %s: %w", certPath, err)
	}
	key, err := parseKeyPEM(keyPEM)
	if err != nil {
		return fmt.Errorf("parsing CA intermediate key %s: %w", keyPath, err)
	}
	if err := checkPair(cert, key); err != nil {
		return fmt.Errorf("loading CA intermediate: %s and %s: %w", certPath, keyPath, err)
	}
	if err := cert.CheckSignatureFrom(c.root); err != nil {
		if !signsIntermediates(c.root) {
			c.interNote = fmt.Sprintf("%s was not signed by the root %s and is ignored; the root signs leaves itself", certPath, c.certPath)
			return nil
		}
		return c.renewIntermediate(now, true) // left over from another root
	}
	c.inter, c.interKey, c.interPEM = cert, key, encodeCert(cert.Raw)
	if c.needsRenewal(now) {
		return c.renewIntermediate(now, true)
	}
	return nil
}

// needsRenewal: the intermediate is expired, not yet valid, or has less
// than IntermediateRenewBefore left while a new one would last longer.
func (c *CA) needsRenewal(now time.Time) bool {
	i := c.inter
	if i == nil {
		return false
	}
	if now.Before(i.NotBefore) || !now.Before(i.NotAfter) {
		return true
	}
	return i.NotAfter.Sub(now) < IntermediateRenewBefore && i.NotAfter.Before(c.root.NotAfter)
}

// renewIntermediate makes a new intermediate under the root and, when
// persist is set, writes it. c.mu must be held or c not yet shared.
func (c *CA) renewIntermediate(now time.Time, persist bool) error {
	cert, key, err := newIntermediate(now, c.root, c.rootKey)
	if err != nil {
		return err
	}
	if persist {
		if err := writeIntermediate(c.dir, cert, key); err != nil {
			return err
		}
	}
	c.inter, c.interKey, c.interPEM = cert, key, encodeCert(cert.Raw)
	return nil
}

// signer returns what signs leaves now: the intermediate (renewed first if
// it runs low) and the chain PEM to append to a leaf, or the root and no
// chain. A long-running daemon renews here; the new intermediate is written
// only while proxy-ca.pem still holds this root (after a rotation the
// running daemon keeps its old root in memory until restart and must not
// overwrite the new root's intermediate).
func (c *CA) signer(now time.Time) (*x509.Certificate, crypto.Signer, []byte, error) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.inter == nil {
		return c.root, c.rootKey, nil, nil
	}
	if c.needsRenewal(now) {
		if err := c.renewIntermediate(now, c.rootOnDisk()); err != nil {
			return nil, nil, nil, err
		}
	}
	return c.inter, c.interKey, c.interPEM, nil
}

func (c *CA) rootOnDisk() bool {
	data, err := os.ReadFile(c.certPath)
	if err != nil {
		return false
	}
	cert, err := parseCertPEM(data)
	return err == nil && bytes.Equal(cert.Raw, c.root.Raw)
}

// ---- proxy-ca.pem with previous roots ----

// graceMarker precedes a previous root in proxy-ca.pem.
const graceMarker = "# clauderon previous root CA, trusted until "

var graceRE = regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(graceMarker) + `(\S+)\s*$`)

type trustEntry struct {
	cert  *x509.Certificate
	until time.Time // zero for the current root or an unreadable marker
	pem   []byte    // marker (if any) and block, as written
}

// parseTrustPEM reads proxy-ca.pem: the current root first, then previous
// roots each preceded by a graceMarker line.
func parseTrustPEM(data []byte) ([]trustEntry, error) {
	var out []trustEntry
	rest := data
	begin := []byte("-----BEGIN ")
	for {
		i := bytes.Index(rest, begin)
		if i < 0 {
			break
		}
		pre := rest[:i]
		block, next := pem.Decode(rest[i:])
		if block == nil {
			return nil, errors.New("malformed PEM block")
		}
		if block.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("unexpected PEM block %q", block.Type)
		}
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, err
		}
		e := trustEntry{cert: cert, pem: encodeCert(block.Bytes)}
		if m := graceRE.FindSubmatch(pre); m != nil && len(out) > 0 {
			if t, err := time.Parse(time.RFC3339, string(m[1])); err == nil {
				e.until = t
				e.pem = append([]byte(graceMarker+t.UTC().Format(time.RFC3339)+"\n"), e.pem...)
			}
		}
		out = append(out, e)
		rest = next
	}
	if len(out) == 0 {
		return nil, errors.New("no CERTIFICATE PEM block")
	}
	return out, nil
}

func previousEntry(cert *x509.Certificate, until time.Time) []byte {
	return append([]byte(graceMarker+until.UTC().Format(time.RFC3339)+"\n"), encodeCert(cert.Raw)...)
}

// pruneGrace drops previous roots whose grace period (or validity) ended
// and rewrites proxy-ca.pem when it changed. A previous root without a
// readable marker is kept until it expires.
func (c *CA) pruneGrace(now time.Time) error {
	entries, err := parseTrustPEM(c.trustPEM)
	if err != nil {
		return err
	}
	var buf bytes.Buffer
	buf.Write(entries[0].pem)
	var keep []*x509.Certificate
	for _, e := range entries[1:] {
		if !now.Before(e.cert.NotAfter) || (!e.until.IsZero() && !now.Before(e.until)) {
			continue
		}
		buf.Write(e.pem)
		keep = append(keep, e.cert)
	}
	if len(keep) == len(entries)-1 {
		return nil
	}
	if err := writeFileAtomic(c.certPath, buf.Bytes(), 0o644); err != nil {
		return err
	}
	c.trustPEM, c.previous = buf.Bytes(), keep
	return nil
}
