package localca

import (
	"fmt"
	"net"
	"net/netip"
	"slices"
	"strings"
	"time"

	"golang.org/x/net/publicsuffix"
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
