package localca

import (
	"bytes"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"regexp"
	"time"
)

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
