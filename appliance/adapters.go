package appliance

import (
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/netip"
	"os"
	"strings"
	"sync/atomic"

	"github.com/clauderon/clauderond/appliance/config"
	"github.com/clauderon/clauderond/appliance/identity"
	"github.com/clauderon/clauderond/dnsredir"
	"github.com/clauderon/clauderond/injector"
	"github.com/clauderon/clauderond/tlsmitm"
)

// injectorAdapter satisfies tlsmitm.Injector with an *injector.Injector.
// It translates the injector's errors into the terminator's: a request that
// cannot get its credential is refused with a 403 naming the reason instead
// of being sent upstream with nothing in it.
type injectorAdapter struct {
	inj          *injector.Injector
	requireLabel bool
	trustLabels  bool
	records      *containerRecords // the daemon's; nil vouches for nothing
	access       []config.ProfileAccess
	// nodeMode: every client is a pod, which gets its profile through
	// podProfile only; one the table no longer lists (a kept-alive
	// connection of a pod that has gone) gets nothing, never its label.
	nodeMode bool
	pod      func(id string) (identity.Container, bool)
}

var _ tlsmitm.Injector = (*injectorAdapter)(nil)

func (a *injectorAdapter) Apply(req *http.Request, host string, c tlsmitm.Client) (string, bool, error) {
	if !c.Known && c.Name != "" {
		// identity refused a container on our network that has another way
		// out (a second network, or host/container network mode).
		return "", false, fmt.Errorf("%w: container %q is also attached to another network (see `clauderon status`); "+
			"credentials are only given to containers on the clauderon network alone", tlsmitm.ErrForbidden, c.Name)
	}
	if !c.Known {
		// Not a running container on our network: a host process dialling the
		// gateway listener directly, or a container Docker has not told us
		// about. Neither gets a credential.
		return "", false, fmt.Errorf("%w: the connection does not come from a running container on the clauderon network", tlsmitm.ErrForbidden)
	}
	var profile, reason string
	if a.nodeMode {
		profile, reason = a.podProfile(c)
	} else {
		profile, _, reason = profileFor(a.records, a.trustLabels, c.ID, c.Name, c.Profile)
	}
	if reason != "" {
		return "", false, fmt.Errorf("%w: %s", tlsmitm.ErrForbidden, reason)
	}
	if a.requireLabel && profile == "" {
		return "", false, fmt.Errorf("%w: %q has no clauderon.profile label and profiles.require_label is on; "+
			"start it with --label clauderon.profile=<profile>", tlsmitm.ErrForbidden, c.Name)
	}
	applied, err := a.inj.Apply(req, host, profile)
	// The suffixes of per-container placeholders the injector saw ride on
	// the rule string to the audit (honeytoken.go): placeholders, never a
	// credential.
	return tagPlaceholders(applied.Rule, applied.Placeholders), applied.Injected, mapInjectorError(err)
}

// podProfile is node mode's profile decision for the pod behind c.
func (a *injectorAdapter) podProfile(c tlsmitm.Client) (profile, reason string) {
	var w identity.Container
	ok := a.pod != nil
	if ok {
		w, ok = a.pod(c.ID)
	}
	if !ok || w.Namespace == "" {
		return "", fmt.Sprintf("pod %s is no longer on this node's list", c.Name)
	}
	return podProfile(a.access, w)
}

func (a *injectorAdapter) RedactResponse(host string, h http.Header) { a.inj.RedactResponse(host, h) }

// mapInjectorError maps injector sentinels onto tlsmitm's. The injector's
// messages name the rule, credential and source, never a value.
func mapInjectorError(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, injector.ErrHostMismatch):
		return fmt.Errorf("%w: %v", tlsmitm.ErrSNIMismatch, err)
	case errors.Is(err, injector.ErrNoCredential):
		return fmt.Errorf("%w: %v; put it in the daemon's environment or state_dir/secrets, then `clauderon reload`", tlsmitm.ErrForbidden, err)
	case errors.Is(err, injector.ErrMalformedCredential),
		errors.Is(err, injector.ErrClientCredentialRejected),
		errors.Is(err, injector.ErrRequestDenied),
		errors.Is(err, injector.ErrNoRule):
		return fmt.Errorf("%w: %v", tlsmitm.ErrForbidden, err)
	default:
		return err
	}
}

// identityAdapter satisfies tlsmitm.Identity and dnsredir.Identity. In
// node mode (access set) a pod's Profile is the one its binding gives
// ("" for the default or none), not its label, so the audit records what
// was in force.
type identityAdapter struct {
	t      identitySource
	access *[]config.ProfileAccess
}

var _ tlsmitm.Identity = identityAdapter{}

func (a identityAdapter) Lookup(addr netip.Addr) (tlsmitm.Client, bool) {
	c, ok := a.t.Lookup(addr)
	if !ok {
		// A refused container (identity fills it, see Container.Refusal)
		// keeps its name for the 403 and the audit, never Known.
		return tlsmitm.Client{ID: c.ID, Name: c.Name}, false
	}
	profile := c.Profile
	if a.access != nil && c.Namespace != "" {
		profile, _ = podProfile(*a.access, c)
	}
	return tlsmitm.Client{ID: c.ID, Name: c.Name, Profile: profile, Known: true}, true
}

// dnsIdentity names containers for DNS audit records.
type dnsIdentity struct{ t identitySource }

var _ dnsredir.Identity = dnsIdentity{}

func (a dnsIdentity) Lookup(addr netip.Addr) (string, bool) {
	c, ok := a.t.Lookup(addr)
	return c.Name, ok
}

// convertRules turns config rules into injector rules, with the defaults
// first when default_rules is on or no rule is configured.
func convertRules(cfg *config.Config) []injector.Rule {
	var rules []injector.Rule
	for _, r := range cfg.Rules {
		rules = append(rules, injector.Rule{Host: r.Host, Credential: r.Credential, Header: r.Header,
			Format: r.Format, Template: r.Template, Strip: r.Strip, OnClientCredential: r.OnClientCredential, Deny: r.Deny, Allow: r.Allow, Push: r.Push})
	}
	if cfg.DefaultRules || len(rules) == 0 {
		return injector.MergeRules(injector.DefaultRules(), rules)
	}
	return rules
}

// policy is the egress policy derived from config: the rule hosts are
// intercepted, egress.allow passes through, the rest is denied. In audit
// mode the rest is passed through too (reported as would-deny).
type policy struct {
	router    *tlsmitm.StaticRouter // intercept = rule hosts, passthrough = egress.allow
	auditMode bool
	// clusterDomain's names are answered from the cluster DNS (node mode
	// with kubernetes.cluster_dns); "" when none.
	clusterDomain string
}

func newPolicy(rules []injector.Rule, cfg *config.Config) (*policy, error) {
	hosts := make([]string, 0, len(rules))
	for _, r := range rules {
		hosts = append(hosts, r.Host)
	}
	rt, err := tlsmitm.NewStaticRouter(hosts, cfg.Egress.Allow)
	if err != nil {
		return nil, fmt.Errorf("building the TLS router from rules and egress.allow: %w", err)
	}
	pol := &policy{router: rt, auditMode: cfg.Egress.Mode == config.EgressAudit}
	if cfg.NodeMode() && cfg.Kubernetes.ClusterDNS != "" {
		pol.clusterDomain = strings.ToLower(cfg.Kubernetes.ClusterDomain)
	}
	return pol, nil
}

// Route implements tlsmitm.Router. In audit mode a name that would be denied
// is passed through and its rule is marked "would-deny:<policy>".
func (p *policy) Route(sni string) (tlsmitm.Decision, string) {
	d, rule := p.router.Route(sni)
	if d == tlsmitm.Deny && p.auditMode {
		return tlsmitm.Passthrough, wouldDeny + rule
	}
	return d, rule
}

// InterceptHosts lets tlsmitm pre-issue leaves for the exact rule hosts.
func (p *policy) InterceptHosts() []string { return p.router.InterceptHosts() }

// Decide implements dnsredir.Policy with the same lists.
func (p *policy) Decide(name string) (dnsredir.Decision, string) {
	if inDomain(name, p.clusterDomain) {
		return dnsredir.Allow, "cluster-dns"
	}
	switch d, rule := p.Route(name); d {
	case tlsmitm.Intercept:
		return dnsredir.Intercept, rule
	case tlsmitm.Passthrough:
		return dnsredir.Allow, rule
	default:
		return dnsredir.Deny, rule
	}
}

// wouldDeny prefixes the rule of a decision that audit mode let through.
const wouldDeny = "would-deny:"

var (
	_ tlsmitm.Router     = (*policy)(nil)
	_ tlsmitm.HostLister = (*policy)(nil)
	_ dnsredir.Policy    = (*policy)(nil)
)

// buildUpstreams loads each override's CA file into a pool.
func buildUpstreams(cfg *config.Config) ([]tlsmitm.Upstream, error) {
	var out []tlsmitm.Upstream
	for i, u := range cfg.Upstreams {
		up := tlsmitm.Upstream{Host: strings.ToLower(u.Host), Address: u.Address}
		if u.CAFile != "" {
			pem, err := os.ReadFile(u.CAFile)
			if err != nil {
				return nil, fmt.Errorf("upstreams[%d].ca_file: %w", i, err)
			}
			pool := x509.NewCertPool()
			if !pool.AppendCertsFromPEM(pem) {
				return nil, fmt.Errorf("upstreams[%d].ca_file %s: no PEM certificate found", i, u.CAFile)
			}
			up.RootCAs = pool
		}
		out = append(out, up)
	}
	return out, nil
}

// overrideAnswers maps each upstreams[] host to what a container's DNS query
// for it is answered with: the override's address when it is a routable IPv4
// address, else (loopback, a name) the gateway. Either way the container's
// connection to port 443 is redirected to the terminator, which dials the
// override itself; the answer only has to exist.
func overrideAnswers(ups []tlsmitm.Upstream, gw netip.Addr) map[string][]netip.Addr {
	m := map[string][]netip.Addr{}
	for _, u := range ups {
		host, _, err := net.SplitHostPort(u.Address)
		if err != nil {
			host = u.Address
		}
		a, err := netip.ParseAddr(host)
		if err == nil && a.Is4() && !a.IsLoopback() && !a.IsUnspecified() {
			m[u.Host] = []netip.Addr{a}
		} else {
			m[u.Host] = []netip.Addr{gw}
		}
	}
	return m
}

// interceptAnswer answers intercepted names that have an upstream override
// (see overrideAnswers); other names are resolved normally (nil).
func interceptAnswer(ups []tlsmitm.Upstream, gw netip.Addr) func(string) []netip.Addr {
	m := overrideAnswers(ups, gw)
	return func(name string) []netip.Addr { return m[strings.ToLower(name)] }
}

// overrideResolver answers names with an upstream override from the
// configuration (allowed names too, not only intercepted ones) and resolves
// the rest with base. The map is swapped on reload.
type overrideResolver struct {
	base    dnsredir.Resolver
	answers atomic.Pointer[map[string][]netip.Addr]
}

func (r *overrideResolver) set(m map[string][]netip.Addr) { r.answers.Store(&m) }

func (r *overrideResolver) LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error) {
	if m := r.answers.Load(); m != nil {
		if a, ok := (*m)[strings.ToLower(strings.TrimSuffix(host, "."))]; ok {
			return a, nil
		}
	}
	return r.base.LookupNetIP(ctx, network, host)
}
