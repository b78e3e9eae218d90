package config

import (
	"fmt"
	"net/netip"
	"slices"
	"strings"
)

// The typed values below decode from text (YAML, CLAUDERON_<KEY>, flags)
// through UnmarshalText, so a malformed value fails the load naming its key,
// and print back as written through MarshalText (Redacted). Checks that
// depend on other keys (the mode, the bridge subnet) stay in Validate.

// EgressMode is egress.mode: what happens to traffic no rule intercepts.
type EgressMode string

// Egress modes.
const (
	EgressEnforce EgressMode = "enforce" // refused and audited
	EgressAudit   EgressMode = "audit"   // passed through and audited
)

// egressModes are the egress modes, the example first.
var egressModes = []EgressMode{EgressEnforce, EgressAudit}

// problem says why m is not an egress mode, nil if it is one.
func (m EgressMode) problem() error { return notOneOf(m, egressModes) }

// UnmarshalText accepts enforce or audit.
func (m *EgressMode) UnmarshalText(b []byte) error { return unmarshalOneOf(m, b, egressModes) }

// Rcode is dns.deny_rcode: the answer to a name the policy denies.
type Rcode string

// Deny answers.
const (
	RcodeNXDomain Rcode = "nxdomain"
	RcodeRefused  Rcode = "refused"
)

// rcodes are the deny answers, the example first.
var rcodes = []Rcode{RcodeNXDomain, RcodeRefused}

// problem says why r is not a deny answer, nil if it is one.
func (r Rcode) problem() error { return notOneOf(r, rcodes) }

// UnmarshalText accepts nxdomain or refused.
func (r *Rcode) UnmarshalText(b []byte) error { return unmarshalOneOf(r, b, rcodes) }

// notOneOf says why v is none of allowed (whose first is the example), nil
// if it is one of them.
func notOneOf[T ~string](v T, allowed []T) error {
	if slices.Contains(allowed, v) {
		return nil
	}
	names := make([]string, len(allowed))
	for i, a := range allowed {
		names[i] = string(a)
	}
	return fmt.Errorf("%q is not one of %s; expected e.g. %s", string(v), strings.Join(names, ", "), names[0])
}

// unmarshalOneOf sets *dst to text when it is one of allowed.
func unmarshalOneOf[T ~string](dst *T, text []byte, allowed []T) error {
	if err := notOneOf(T(text), allowed); err != nil {
		return err
	}
	*dst = T(text)
	return nil
}

// DNSServer is one of dns.servers: "ip" (port 53) or "ip:port". It stays a
// string so the configuration prints back as written; AddrPort is the
// parsed form.
type DNSServer string

// UnmarshalText accepts an IP or IP:port.
func (s *DNSServer) UnmarshalText(b []byte) error {
	if _, err := parseServer(string(b)); err != nil {
		return fmt.Errorf("%q is not an IP or IP:port; expected e.g. 192.0.2.53 or 192.0.2.53:53", b)
	}
	*s = DNSServer(b)
	return nil
}

// AddrPort is the server's address, port 53 when none is written; invalid
// for a malformed value (Validate refuses those).
func (s DNSServer) AddrPort() netip.AddrPort {
	a, _ := parseServer(string(s))
	return a
}

// Subnet is network.subnet: an IPv4 prefix, or "auto" (node mode only: this
// node's pod subnet, found at start).
type Subnet struct {
	Prefix netip.Prefix // invalid when Auto
	Auto   bool
}

// badSubnet is the decode error of a network.subnet that is neither a CIDR
// nor auto; its advice depends on the mode, which Load knows.
type badSubnet struct{ text string }

func (e *badSubnet) Error() string {
	return fmt.Sprintf("%q is not a CIDR; expected e.g. 10.213.0.0/24", e.text)
}

func (e *badSubnet) nodeMode() error {
	return fmt.Errorf("%q is not a CIDR or auto; expected auto (this node's pod subnet) or e.g. 10.244.1.0/24", e.text)
}

// UnmarshalText accepts a CIDR or auto; Validate checks the prefix and that
// auto comes with mode kubernetes.
func (s *Subnet) UnmarshalText(b []byte) error {
	if string(b) == SubnetAuto {
		*s = Subnet{Auto: true}
		return nil
	}
	p, err := netip.ParsePrefix(string(b))
	if err != nil {
		return &badSubnet{text: string(b)}
	}
	*s = Subnet{Prefix: p}
	return nil
}

// MarshalText writes the subnet as UnmarshalText reads it.
func (s Subnet) MarshalText() ([]byte, error) { return []byte(s.String()), nil }

// String is the prefix, "auto", or "" when unset.
func (s Subnet) String() string {
	switch {
	case s.Auto:
		return SubnetAuto
	case s.Prefix.IsValid():
		return s.Prefix.String()
	}
	return ""
}

// Equal reports whether s and o are the same setting (go-cmp uses it).
func (s Subnet) Equal(o Subnet) bool { return s == o }

// CIDR is egress.allow_cidrs[].cidr: an IPv4 network (no host bits).
type CIDR struct{ netip.Prefix }

func cidrProblem(text string) error {
	return fmt.Errorf("%q is not an IPv4 network CIDR; expected e.g. 192.0.2.0/24", text)
}

// UnmarshalText accepts an IPv4 CIDR without host bits.
func (c *CIDR) UnmarshalText(b []byte) error {
	p, err := netip.ParsePrefix(string(b))
	if err != nil || (CIDR{p}).problem() != nil {
		return cidrProblem(string(b))
	}
	c.Prefix = p
	return nil
}

// problem says why c is not an IPv4 network, nil if it is.
func (c CIDR) problem() error {
	if !c.IsValid() || !c.Addr().Is4() || c.Masked() != c.Prefix {
		text, _ := c.MarshalText()
		return cidrProblem(string(text))
	}
	return nil
}

// MarshalText writes the prefix ("" when unset).
func (c CIDR) MarshalText() ([]byte, error) {
	if !c.IsValid() {
		return []byte{}, nil
	}
	return c.Prefix.MarshalText()
}

// Equal reports whether c and o are the same prefix (go-cmp uses it).
func (c CIDR) Equal(o CIDR) bool { return c == o }
