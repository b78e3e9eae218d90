package tlsmitm

import (
	"fmt"
	"net/netip"
	"strings"

	"golang.org/x/net/publicsuffix"
)

// Decision is what happens to a connection (and the audit "decision").
type Decision string

// Decisions.
const (
	Intercept   Decision = "intercept"
	Passthrough Decision = "passthrough"
	Deny        Decision = "deny"
)

// Router decides, from the SNI name alone, what happens to a connection. It
// returns the decision and the rule or policy name that made it (for the
// audit). The name it is given is already lowercased, without a trailing
// dot, and never empty or an IP literal (those are denied before routing).
// Implementations must be safe for concurrent use.
type Router interface {
	Route(sni string) (Decision, string)
}

// HostLister is implemented by Routers that know the exact names they
// intercept. The server issues those names' leaves at start-up and on
// Update, so no client waits for a first issuance.
type HostLister interface {
	InterceptHosts() []string
}

// Policy names used in audit records for decisions not made by a rule.
const (
	PolicyDefaultDeny = "default-deny"
	PolicyNoSNI       = "no-sni"
	PolicyIPLiteral   = "ip-literal-sni"
)

// StaticRouter routes by two fixed lists of patterns. A pattern is an exact
// name ("api.anthropic.com") or "*.suffix" ("*.example.com"), which matches
// any name with at least one more label under suffix but not suffix itself.
// A wildcard whose suffix is a public suffix ("*.github.io") is refused in
// either list: it would intercept, or let through, anyone's site.
// Intercept wins over Passthrough; everything else is denied. The rule name
// reported is the pattern that matched. Build it with NewStaticRouter, which
// validates and normalises the patterns; the zero value denies everything.
type StaticRouter struct {
	intercept   []string
	passthrough []string
}

var (
	_ Router     = (*StaticRouter)(nil)
	_ HostLister = (*StaticRouter)(nil)
)

// NewStaticRouter validates the patterns and returns the router.
func NewStaticRouter(intercept, passthrough []string) (*StaticRouter, error) {
	r := &StaticRouter{}
	var err error
	if r.intercept, err = normalizePatterns(intercept); err != nil {
		return nil, fmt.Errorf("intercept list: %w", err)
	}
	if r.passthrough, err = normalizePatterns(passthrough); err != nil {
		return nil, fmt.Errorf("passthrough list: %w", err)
	}
	return r, nil
}

func normalizePatterns(in []string) ([]string, error) {
	out := make([]string, 0, len(in))
	for _, p := range in {
		n := normalizeName(p)
		name := strings.TrimPrefix(n, "*.")
		if name == "" || strings.Contains(name, "*") || !validHostname(name) {
			return nil, fmt.Errorf("%q is not a host name or *.suffix pattern", p)
		}
		if _, err := netip.ParseAddr(name); err == nil {
			return nil, fmt.Errorf("%q is an IP address; SNI routing needs host names", p)
		}
		if strings.HasPrefix(n, "*.") && isPublicSuffix(name) {
			return nil, fmt.Errorf("%q: %s is a public suffix (anyone can register a name under it); list the hosts instead", p, name)
		}
		out = append(out, n)
	}
	return out, nil
}

// Route implements Router.
func (r *StaticRouter) Route(sni string) (Decision, string) {
	if p, ok := matchAny(r.intercept, sni); ok {
		return Intercept, p
	}
	if p, ok := matchAny(r.passthrough, sni); ok {
		return Passthrough, p
	}
	return Deny, PolicyDefaultDeny
}

// InterceptHosts returns the exact (non-wildcard) intercept names.
func (r *StaticRouter) InterceptHosts() []string {
	var out []string
	for _, p := range r.intercept {
		if !strings.HasPrefix(p, "*.") {
			out = append(out, p)
		}
	}
	return out
}

func matchAny(patterns []string, name string) (string, bool) {
	for _, p := range patterns {
		if matchPattern(p, name) {
			return p, true
		}
	}
	return "", false
}

func matchPattern(pattern, name string) bool {
	if suffix, ok := strings.CutPrefix(pattern, "*"); ok {
		return len(name) > len(suffix) && strings.HasSuffix(name, suffix)
	}
	return pattern == name
}

// normalizeName lowercases name and strips one trailing dot.
func normalizeName(name string) string {
	return strings.TrimSuffix(strings.ToLower(strings.TrimSpace(name)), ".")
}

// isPublicSuffix reports whether name is on the public suffix list (ICANN
// or private section: "co.uk", "github.io", "githubusercontent.com").
func isPublicSuffix(name string) bool {
	ps, _ := publicsuffix.PublicSuffix(name)
	return ps == name
}

// validHostname accepts LDH labels (plus '_', seen in the wild) of 1..63
// bytes, 253 bytes total.
func validHostname(name string) bool {
	if len(name) == 0 || len(name) > 253 {
		return false
	}
	for label := range strings.SplitSeq(name, ".") {
		if len(label) == 0 || len(label) > 63 || label[0] == '-' || label[len(label)-1] == '-' {
			return false
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return false
			}
		}
	}
	return true
}
