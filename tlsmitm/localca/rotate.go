package localca

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"time"
)

// RotateResult describes what Rotate did.
type RotateResult struct {
	Fingerprint         string    // the new root's SHA-256
	PreviousFingerprint string    // the replaced root's SHA-256
	GraceUntil          time.Time // the replaced root stays in proxy-ca.pem until then
	PermittedDomains    []string  // what the new root permits
}

// Rotate replaces the root in dir with a new name-constrained root and
// intermediate for opts' domains. proxy-ca.pem then holds the new root
// followed by the replaced one (and any earlier root still in its grace
// period), so containers trust both until opts.Grace ends; the replaced
// root's key and its intermediate are overwritten, so nothing can sign with
// them any more. When dir holds no CA, Rotate creates one.
//
// The replaced root may be one this version made, a CA from an older
// version, or an operator's own CA. A running daemon keeps signing with the
// root it loaded (still trusted during the grace period) until it restarts.
func Rotate(dir string, opts Options) (RotateResult, error) {
	now := opts.clock()
	grace := opts.Grace
	if grace <= 0 {
		grace = DefaultRotationGrace
	}
	domains := opts.domains()
	if _, err := os.Stat(filepath.Join(dir, CertFile)); errors.Is(err, fs.ErrNotExist) {
		ca, err := LoadOrCreateWith(dir, opts)
		if err != nil {
			return RotateResult{}, err
		}
		return RotateResult{Fingerprint: ca.Fingerprint(), PermittedDomains: ca.PermittedDNSDomains()}, nil
	}
	old, err := loadRoot(dir, now)
	if err != nil {
		return RotateResult{}, fmt.Errorf("reading the current CA (nothing was changed): %w", err)
	}
	entries, err := parseTrustPEM(old.trustPEM)
	if err != nil {
		return RotateResult{}, err
	}
	root, rootKey, err := newRoot(now, domains)
	if err != nil {
		return RotateResult{}, err
	}
	inter, interKey, err := newIntermediate(now, root, rootKey)
	if err != nil {
		return RotateResult{}, err
	}
	until := now.Add(grace)
	var trust bytes.Buffer
	trust.Write(encodeCert(root.Raw))
	trust.Write(previousEntry(old.root, until))
	for _, e := range entries[1:] {
		if now.Before(e.cert.NotAfter) && (e.until.IsZero() || now.Before(e.until)) {
			trust.Write(e.pem)
		}
	}
	keyPEM, err := encodeKey(rootKey)
	if err != nil {
		return RotateResult{}, err
	}
	// Order: the trust file first (containers of new sessions trust both
	// roots from now on), then the intermediate, then the root key; a
	// crash in between leaves a key that does not match proxy-ca.pem,
	// which the next start refuses with "does not match" rather than
	// guessing.
	if err := writeFileAtomic(filepath.Join(dir, CertFile), trust.Bytes(), 0o644); err != nil {
		return RotateResult{}, err
	}
	if err := writeIntermediate(dir, inter, interKey); err != nil {
		return RotateResult{}, err
	}
	if err := writeFileAtomic(filepath.Join(dir, KeyFile), keyPEM, 0o600); err != nil {
		return RotateResult{}, err
	}
	return RotateResult{
		Fingerprint: fingerprint(root), PreviousFingerprint: old.fingerprint,
		GraceUntil: until, PermittedDomains: domains,
	}, nil
}
