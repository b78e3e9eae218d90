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
	"os"
	"path/filepath"
	"slices"
	"time"
)

// Subjects. rootCN marks a root made by this version (it signs an
// intermediate); legacyCN is the single self-signed CA of older versions.
const (
	rootCN         = "clauderon proxy root CA"
	intermediateCN = "clauderon proxy intermediate CA"
	legacyCN       = "clauderon proxy CA"
)

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
	return newCert("root", func(pub crypto.PublicKey) *x509.Certificate { return rootTemplate(now, pub, domains) }, nil, nil)
}

// newIntermediate makes an intermediate under root (not written).
func newIntermediate(now time.Time, root *x509.Certificate, rootKey crypto.Signer) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	return newCert("intermediate", func(pub crypto.PublicKey) *x509.Certificate { return intermediateTemplate(now, pub, root) }, root, rootKey)
}

// newCert makes a key and the certificate that template describes for its
// public key, signed by parent's key, or self-signed when parent is nil
// (not written). what names the certificate in errors.
func newCert(what string, template func(crypto.PublicKey) *x509.Certificate, parent *x509.Certificate, parentKey crypto.Signer) (*x509.Certificate, *ecdsa.PrivateKey, error) {
	key, err := newKey()
	if err != nil {
		return nil, nil, err
	}
	tmpl := template(key.Public())
	if parent == nil {
		parent, parentKey = tmpl, key
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, parent, key.Public(), parentKey)
	if err != nil {
		return nil, nil, fmt.Errorf("signing CA %s certificate: %w", what, err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, nil, fmt.Errorf("parsing new CA %s certificate: %w", what, err)
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
	return writePair(dir, KeyFile, CertFile, root, rootKey)
}

// writeIntermediate writes the intermediate's key and certificate into dir.
func writeIntermediate(dir string, cert *x509.Certificate, key crypto.Signer) error {
	return writePair(dir, IntermediateKeyFile, IntermediateCertFile, cert, key)
}

// writePair writes key (0600) and then cert (0644) into dir under the
// given file names.
func writePair(dir, keyFile, certFile string, cert *x509.Certificate, key crypto.Signer) error {
	keyPEM, err := encodeKey(key)
	if err != nil {
		return err
	}
	if err := writeFileAtomic(filepath.Join(dir, keyFile), keyPEM, 0o600); err != nil {
		return err
	}
	return writeFileAtomic(filepath.Join(dir, certFile), encodeCert(cert.Raw), 0o644)
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
