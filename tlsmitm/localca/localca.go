// Package localca owns clauderond's local certificate authority: a
// name-constrained root (proxy-ca.pem, what containers trust) and an
// intermediate that signs the short-lived leaf certificates for intercepted
// host names, as a certmagic.Issuer. It creates both on first start in the
// state directory, reuses them after restarts, renews the intermediate when
// it runs low, and replaces the root on request (Rotate) while the previous
// root stays trusted for a grace period.
//
// Layout (state directory):
//
//	proxy-ca.pem                   root certificate (0644), then the previous roots still in their grace period
//	proxy-ca-key.pem               root key (0600)
//	proxy-ca-intermediate.pem      intermediate certificate (0644)
//	proxy-ca-intermediate-key.pem  intermediate key (0600)
//
// Both the root and the intermediate carry a critical NameConstraints
// extension permitting only the registrable domains of the intercepted hosts
// and excluding every IP address, so a leaked key cannot mint a certificate
// that containers accept for any other name. A CA made by an older version
// (one self-signed root, no intermediate) or an operator's own CA keeps
// working as it is: leaves are signed by that root directly, and Notice says
// it is not name-constrained.
//
// It refuses to do anything else: it never talks to the network (no ACME, no
// OCSP, no CRL), never issues for IP addresses, e-mail addresses or URIs,
// never issues a leaf that outlives its signer, and refuses to load a key
// file that group or others can read. It does not decide which names may
// get a certificate; its caller (tlsmitm) does that before asking.
package localca

import (
	"bytes"
	"crypto"
	"crypto/sha256"
	"crypto/x509"
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// File names inside the state directory (DESIGN.md's layout).
const (
	CertFile             = "proxy-ca.pem"
	KeyFile              = "proxy-ca-key.pem"
	IntermediateCertFile = "proxy-ca-intermediate.pem"
	IntermediateKeyFile  = "proxy-ca-intermediate-key.pem"
)

// Lifetimes.
const (
	// DefaultCALifetime is how long a freshly created root is valid.
	DefaultCALifetime = 2 * 365 * 24 * time.Hour
	// DefaultIntermediateLifetime is how long an intermediate is valid
	// (never beyond its root).
	DefaultIntermediateLifetime = 90 * 24 * time.Hour
	// IntermediateRenewBefore: an intermediate with less left than this is
	// replaced at load time and, in a long-running daemon, at the next
	// issuance.
	IntermediateRenewBefore = 30 * 24 * time.Hour
	// DefaultRotationGrace is how long Rotate keeps the previous root in
	// proxy-ca.pem.
	DefaultRotationGrace = 30 * 24 * time.Hour
	// rootExpiryWarning: Notice tells to rotate a root this close to its end.
	rootExpiryWarning = 60 * 24 * time.Hour
)

// ErrKeyPermissions is returned when a CA key file is readable by group or
// others. The error text tells the operator the exact chmod to run.
var ErrKeyPermissions = errors.New("CA key file permissions too open")

// ErrNotPermitted is returned when a host the caller needs lies outside the
// names the CA's constraints permit. The error names the host and the fix.
var ErrNotPermitted = errors.New("host not permitted by the local CA's name constraints")

// Options shape a CA to the hosts it must serve.
type Options struct {
	// PermittedDomains are DNS domains (each with all its subdomains) that a
	// new root and intermediate permit, and that an existing constrained CA
	// must cover.
	PermittedDomains []string
	// Hosts are intercepted host names or "*.suffix" patterns. Their
	// registrable domains (PermittedDomains) are added to PermittedDomains,
	// and an existing constrained CA that does not cover one of them is an
	// ErrNotPermitted error naming it.
	Hosts []string
	// Grace is how long Rotate keeps the previous root trusted;
	// <= 0 means DefaultRotationGrace. Ignored elsewhere.
	Grace time.Duration

	now func() time.Time // tests
}

func (o Options) clock() time.Time {
	if o.now != nil {
		return o.now()
	}
	return time.Now()
}

// domains is PermittedDomains plus the registrable domains of Hosts.
func (o Options) domains() []string {
	return dedupe(append(normalizeAll(o.PermittedDomains), PermittedDomains(o.Hosts)...))
}

// CA is a loaded local certificate authority. It is safe for concurrent use.
type CA struct {
	root        *x509.Certificate
	rootKey     crypto.Signer
	trustPEM    []byte              // proxy-ca.pem as on disk: root, then previous roots
	previous    []*x509.Certificate // previous roots still trusted
	dir         string
	certPath    string
	keyPath     string
	fingerprint string

	mu        sync.Mutex
	inter     *x509.Certificate // nil: leaves are signed by the root (older or operator CA)
	interKey  crypto.Signer
	interPEM  []byte
	interNote string // why there is no intermediate, for Notice
}

// LoadOrCreate loads the CA from dir, or creates it there when neither root
// file exists. It is LoadOrCreateWith(dir, Options{}): a CA created this way
// excludes IP addresses but permits every DNS name.
func LoadOrCreate(dir string) (*CA, error) { return LoadOrCreateWith(dir, Options{}) }

// LoadOrCreateWith loads the CA from dir, or creates it there (dir 0700,
// keys 0600, certificates 0644) when neither root file exists, constrained
// to opts' domains. A key without a certificate, a certificate without a
// key, a mismatched pair, an expired root, or a key file readable by
// group/others is an error: it never silently replaces a CA that containers
// may already trust. On load it drops previous roots whose grace period has
// ended, renews an intermediate with less than IntermediateRenewBefore left,
// and checks that the constraints cover opts (ErrNotPermitted otherwise).
func LoadOrCreateWith(dir string, opts Options) (*CA, error) {
	certPath := filepath.Join(dir, CertFile)
	keyPath := filepath.Join(dir, KeyFile)
	_, certErr := os.Stat(certPath)
	_, keyErr := os.Stat(keyPath)
	switch {
	case errors.Is(certErr, fs.ErrNotExist) && errors.Is(keyErr, fs.ErrNotExist):
		if err := create(dir, opts.domains(), opts.clock()); err != nil {
			return nil, fmt.Errorf("creating local CA in %s: %w", dir, err)
		}
	case certErr != nil && !errors.Is(certErr, fs.ErrNotExist):
		return nil, fmt.Errorf("checking CA certificate: %w", certErr)
	case keyErr != nil && !errors.Is(keyErr, fs.ErrNotExist):
		return nil, fmt.Errorf("checking CA key: %w", keyErr)
	case certErr != nil:
		return nil, fmt.Errorf("loading local CA: %s exists but %s is missing; restore it or remove both files to create a new CA", keyPath, certPath)
	case keyErr != nil:
		return nil, fmt.Errorf("loading local CA: %s exists but %s is missing; restore it or remove both files to create a new CA", certPath, keyPath)
	}
	return LoadWith(dir, opts)
}

// Load reads an existing CA and fails if it does not exist.
func Load(dir string) (*CA, error) { return LoadWith(dir, Options{}) }

// LoadWith reads an existing CA (see LoadOrCreateWith) and fails if it does
// not exist.
func LoadWith(dir string, opts Options) (*CA, error) {
	now := opts.clock()
	ca, err := loadRoot(dir, now)
	if err != nil {
		return nil, err
	}
	if err := ca.pruneGrace(now); err != nil {
		return nil, err
	}
	if err := ca.loadIntermediate(now); err != nil {
		return nil, err
	}
	if err := ca.check(opts); err != nil {
		return nil, err
	}
	return ca, nil
}

func loadRoot(dir string, now time.Time) (*CA, error) {
	certPath := filepath.Join(dir, CertFile)
	keyPath := filepath.Join(dir, KeyFile)
	if err := checkKeyMode(keyPath); err != nil {
		return nil, err
	}
	certPEM, err := os.ReadFile(certPath)
	if err != nil {
		return nil, fmt.Errorf("reading CA certificate: %w", err)
	}
	keyPEM, err := os.ReadFile(keyPath)
	if err != nil {
		return nil, fmt.Errorf("reading CA key: %w", err)
	}
	roots, err := parseTrustPEM(certPEM)
	if err != nil {
		return nil, fmt.Errorf("parsing CA certificate %s: %w", certPath, err)
	}
	key, err := parseKeyPEM(keyPEM)
	if err != nil {
		return nil, fmt.Errorf("parsing CA key %s: %w", keyPath, err)
	}
	root := roots[0].cert
	if err := checkPair(root, key); err != nil {
		return nil, fmt.Errorf("loading local CA: %s and %s: %w", certPath, keyPath, err)
	}
	if now.After(root.NotAfter) {
		return nil, fmt.Errorf("loading local CA: %s expired at %s; run `clauderond ca rotate` (or remove both CA files) to create a new one",
			certPath, root.NotAfter.Format(time.RFC3339))
	}
	ca := &CA{
		root: root, rootKey: key, trustPEM: certPEM,
		dir: dir, certPath: certPath, keyPath: keyPath,
		fingerprint: fingerprint(root),
	}
	for _, r := range roots[1:] {
		ca.previous = append(ca.previous, r.cert)
	}
	return ca, nil
}

func fingerprint(c *x509.Certificate) string {
	sum := sha256.Sum256(c.Raw)
	return hex.EncodeToString(sum[:])
}

func checkKeyMode(keyPath string) error {
	fi, err := os.Stat(keyPath)
	if err != nil {
		return fmt.Errorf("checking CA key: %w", err)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return fmt.Errorf("loading local CA: %s has mode %04o, readable by group or others: %w; run `chmod 600 %s`",
			keyPath, perm, ErrKeyPermissions, keyPath)
	}
	return nil
}

func checkPair(cert *x509.Certificate, key crypto.Signer) error {
	pub, ok := key.Public().(interface{ Equal(crypto.PublicKey) bool })
	if !ok || !pub.Equal(cert.PublicKey) {
		return errors.New("key does not match certificate")
	}
	if !cert.IsCA || !cert.BasicConstraintsValid {
		return errors.New("certificate is not a CA")
	}
	return nil
}

// writeFileAtomic writes data to a temp file with mode, fsyncs it and renames
// it into place, so a crash never leaves a half-written CA file.
func writeFileAtomic(path string, data []byte, mode os.FileMode) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	tmp := f.Name()
	defer os.Remove(tmp) // no-op after a successful rename
	if err := f.Chmod(mode); err != nil {
		f.Close()
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if _, err := f.Write(data); err != nil {
		f.Close()
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := os.Rename(tmp, path); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}

func parseCertPEM(data []byte) (*x509.Certificate, error) {
	block, _ := pem.Decode(data)
	if block == nil || block.Type != "CERTIFICATE" {
		return nil, errors.New("no CERTIFICATE PEM block")
	}
	return x509.ParseCertificate(block.Bytes)
}

// parseKeyPEM reads a PKCS#8 ("PRIVATE KEY"), SEC1 ("EC PRIVATE KEY") or
// PKCS#1 ("RSA PRIVATE KEY") private key.
func parseKeyPEM(data []byte) (crypto.Signer, error) {
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, errors.New("no PEM block")
	}
	var key any
	var err error
	switch block.Type {
	case "PRIVATE KEY":
		key, err = x509.ParsePKCS8PrivateKey(block.Bytes)
	case "EC PRIVATE KEY":
		key, err = x509.ParseECPrivateKey(block.Bytes)
	case "RSA PRIVATE KEY":
		key, err = x509.ParsePKCS1PrivateKey(block.Bytes)
	default:
		return nil, fmt.Errorf("unsupported PEM block %q (want PRIVATE KEY, EC PRIVATE KEY or RSA PRIVATE KEY)", block.Type)
	}
	if err != nil {
		return nil, err
	}
	signer, ok := key.(crypto.Signer)
	if !ok {
		return nil, fmt.Errorf("key type %T cannot sign", key)
	}
	return signer, nil
}

// CertPEM returns proxy-ca.pem: the root, then any previous root still in
// its grace period (what containers trust).
func (c *CA) CertPEM() []byte { return bytes.Clone(c.trustPEM) }

// CertPath is the path of proxy-ca.pem.
func (c *CA) CertPath() string { return c.certPath }

// KeyPath is the path of proxy-ca-key.pem. The key itself is never exposed.
func (c *CA) KeyPath() string { return c.keyPath }

// Fingerprint is the lowercase hex SHA-256 of the root certificate's DER.
func (c *CA) Fingerprint() string { return c.fingerprint }

// Certificate returns the parsed root certificate.
func (c *CA) Certificate() *x509.Certificate { return c.root }

// Previous returns the previous roots still trusted (grace period).
func (c *CA) Previous() []*x509.Certificate { return append([]*x509.Certificate(nil), c.previous...) }

// Intermediate returns the intermediate that signs leaves, or nil when the
// root signs them itself (a CA from an older version or an operator's CA).
func (c *CA) Intermediate() *x509.Certificate {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.inter
}

// Pool returns a new cert pool holding the roots of proxy-ca.pem (for tests
// and clients).
func (c *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(c.root)
	for _, r := range c.previous {
		p.AddCert(r)
	}
	return p
}
