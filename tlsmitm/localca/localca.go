// Package localca owns clauderond's local certificate authority: it creates
// the CA key pair on first start in the state directory (proxy-ca.pem 0644,
// proxy-ca-key.pem 0600), reuses it after restarts, and issues short-lived
// leaf certificates for intercepted host names as a certmagic.Issuer.
//
// It refuses to do anything else: it never talks to the network (no ACME, no
// OCSP, no CRL), never issues for IP addresses, e-mail addresses or URIs,
// never issues a leaf that outlives the CA, and refuses to load a CA key file
// that group or others can read. It does not decide which names may get a
// certificate; its caller (tlsmitm) does that before asking.
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
	"encoding/hex"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"os"
	"path/filepath"
	"time"
)

// File names inside the state directory (DESIGN.md's layout).
const (
	CertFile = "proxy-ca.pem"
	KeyFile  = "proxy-ca-key.pem"
)

// DefaultCALifetime is how long a freshly created CA is valid.
const DefaultCALifetime = 10 * 365 * 24 * time.Hour

// ErrKeyPermissions is returned when the CA key file is readable by group or
// others. The error text tells the operator the exact chmod to run.
var ErrKeyPermissions = errors.New("CA key file permissions too open")

// CA is a loaded local certificate authority. It is safe for concurrent use.
type CA struct {
	cert        *x509.Certificate
	key         crypto.Signer
	certPEM     []byte
	certPath    string
	keyPath     string
	fingerprint string
}

// LoadOrCreate loads the CA from dir, or creates it there (dir 0700, key
// 0600, cert 0644) when neither file exists. A key without a certificate, a
// certificate without a key, a mismatched pair, an expired CA, or a key file
// readable by group/others is an error: it never silently replaces a CA that
// containers may already trust.
func LoadOrCreate(dir string) (*CA, error) {
	certPath := filepath.Join(dir, CertFile)
	keyPath := filepath.Join(dir, KeyFile)
	_, certErr := os.Stat(certPath)
	_, keyErr := os.Stat(keyPath)
	switch {
	case errors.Is(certErr, fs.ErrNotExist) && errors.Is(keyErr, fs.ErrNotExist):
		if err := create(dir, certPath, keyPath, time.Now()); err != nil {
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
	return load(certPath, keyPath)
}

// Load reads an existing CA and fails if it does not exist.
func Load(dir string) (*CA, error) {
	return load(filepath.Join(dir, CertFile), filepath.Join(dir, KeyFile))
}

func load(certPath, keyPath string) (*CA, error) {
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
	cert, err := parseCertPEM(certPEM)
	if err != nil {
		return nil, fmt.Errorf("parsing CA certificate %s: %w", certPath, err)
	}
	key, err := parseKeyPEM(keyPEM)
	if err != nil {
		return nil, fmt.Errorf("parsing CA key %s: %w", keyPath, err)
	}
	if err := checkPair(cert, key); err != nil {
		return nil, fmt.Errorf("loading local CA: %s and %s: %w", certPath, keyPath, err)
	}
	if time.Now().After(cert.NotAfter) {
		return nil, fmt.Errorf("loading local CA: %s expired at %s; remove both CA files to create a new one", certPath, cert.NotAfter.Format(time.RFC3339))
	}
	sum := sha256.Sum256(cert.Raw)
	return &CA{
		cert: cert, key: key, certPEM: certPEM,
		certPath: certPath, keyPath: keyPath,
		fingerprint: hex.EncodeToString(sum[:]),
	}, nil
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

func create(dir, certPath, keyPath string, now time.Time) error {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("creating state dir: %w", err)
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("generating CA key: %w", err)
	}
	der, err := x509.CreateCertificate(rand.Reader, caTemplate(now, key), caTemplate(now, key), key.Public(), key)
	if err != nil {
		return fmt.Errorf("signing CA certificate: %w", err)
	}
	keyDER, err := x509.MarshalPKCS8PrivateKey(key)
	if err != nil {
		return fmt.Errorf("encoding CA key: %w", err)
	}
	keyPEM := pem.EncodeToMemory(&pem.Block{Type: "PRIVATE KEY", Bytes: keyDER})
	if err := writeFileAtomic(keyPath, keyPEM, 0o600); err != nil {
		return err
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der})
	return writeFileAtomic(certPath, certPEM, 0o644)
}

func caTemplate(now time.Time, key *ecdsa.PrivateKey) *x509.Certificate {
	pubDER, _ := x509.MarshalPKIXPublicKey(key.Public())
	ski := sha256.Sum256(pubDER)
	return &x509.Certificate{
		SerialNumber:          randomSerial(),
		Subject:               pkix.Name{CommonName: "clauderon proxy CA", Organization: []string{"clauderon"}},
		NotBefore:             now.Add(-time.Hour),
		NotAfter:              now.Add(DefaultCALifetime),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLen:            0,
		MaxPathLenZero:        true,
		SubjectKeyId:          ski[:20],
	}
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
	default:
		return nil, fmt.Errorf("unsupported PEM block %q", block.Type)
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

func randomSerial() *big.Int {
	limit := new(big.Int).Lsh(big.NewInt(1), 127)
	n, err := rand.Int(rand.Reader, limit)
	if err != nil {
		panic(fmt.Sprintf("crypto/rand failed: %v", err)) // crypto/rand never fails on Linux
	}
	return n.Add(n, big.NewInt(1))
}

// CertPEM returns the CA certificate in PEM form (what containers trust).
func (c *CA) CertPEM() []byte { return bytes.Clone(c.certPEM) }

// CertPath is the path of proxy-ca.pem.
func (c *CA) CertPath() string { return c.certPath }

// KeyPath is the path of proxy-ca-key.pem. The key itself is never exposed.
func (c *CA) KeyPath() string { return c.keyPath }

// Fingerprint is the lowercase hex SHA-256 of the CA certificate's DER.
func (c *CA) Fingerprint() string { return c.fingerprint }

// Certificate returns the parsed CA certificate.
func (c *CA) Certificate() *x509.Certificate { return c.cert }

// Pool returns a new cert pool holding only this CA (for tests and clients).
func (c *CA) Pool() *x509.CertPool {
	p := x509.NewCertPool()
	p.AddCert(c.cert)
	return p
}

// sign issues a leaf from tmpl for pub.
func (c *CA) sign(tmpl *x509.Certificate, pub crypto.PublicKey) ([]byte, error) {
	return x509.CreateCertificate(rand.Reader, tmpl, c.cert, pub, c.key)
}
