package injector

import (
	"crypto/sha256"
	"crypto/subtle"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
)

// Redacted is what a Secret prints as, in every form.
const Redacted = "[REDACTED]"

// Secret holds one credential value. Every way of printing, marshalling or
// logging it yields Redacted; the value itself is reachable only through
// Reveal.
//
// The value is captured by a closure rather than stored in a field: fmt
// falls back to reflection when a Secret sits in an unexported struct field
// (it cannot call methods there), and reflection shows a func only as an
// address, under every verb. A Secret is therefore not comparable; use
// Equal. The zero Secret is empty.
type Secret struct {
	v func() string
}

// NewSecret wraps v. An empty v yields the zero (empty) Secret.
func NewSecret(v string) Secret {
	if v == "" {
		return Secret{}
	}
	return Secret{v: func() string { return v }}
}

// Reveal returns the raw credential. It is deliberately the only way out and
// is called in exactly one place: where Apply writes the request header.
func (s Secret) Reveal() string { return s.value() }

// IsZero reports whether the Secret is empty.
func (s Secret) IsZero() bool { return s.v == nil }

// Equal reports, in constant time, whether s and o hold the same value.
func (s Secret) Equal(o Secret) bool {
	return subtle.ConstantTimeCompare([]byte(s.value()), []byte(o.value())) == 1
}

// Fingerprint is the first 8 hex digits of the value's SHA-256, safe for
// status output: enough to tell two credentials apart, useless to an
// attacker holding only the fingerprint of a high-entropy token. Empty for
// the zero Secret.
func (s Secret) Fingerprint() string {
	if s.IsZero() {
		return ""
	}
	sum := sha256.Sum256([]byte(s.v()))
	return hex.EncodeToString(sum[:4])
}

// value is the internal accessor for redaction and validation, which must
// see the bytes but never hand them out.
func (s Secret) value() string {
	if s.v == nil {
		return ""
	}
	return s.v()
}

// String implements fmt.Stringer.
func (Secret) String() string { return Redacted }

// GoString implements fmt.GoStringer (%#v).
func (Secret) GoString() string { return Redacted }

// Format implements fmt.Formatter so that every verb (%v %+v %#v %s %q %x
// %X %d …), width and flag prints Redacted.
func (Secret) Format(f fmt.State, _ rune) { _, _ = io.WriteString(f, Redacted) }

// MarshalJSON implements json.Marshaler.
func (Secret) MarshalJSON() ([]byte, error) { return []byte(`"` + Redacted + `"`), nil }

// MarshalText implements encoding.TextMarshaler (used by JSON map keys, slog
// and many encoders).
func (Secret) MarshalText() ([]byte, error) { return []byte(Redacted), nil }

// LogValue implements slog.LogValuer.
func (Secret) LogValue() slog.Value { return slog.StringValue(Redacted) }

var (
	_ fmt.Stringer   = Secret{}
	_ fmt.GoStringer = Secret{}
	_ fmt.Formatter  = Secret{}
	_ slog.LogValuer = Secret{}
)
