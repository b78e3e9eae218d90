package appliance

import (
	"fmt"
	"log/slog"
	"net/netip"

	"github.com/clauderon/clauderond/appliance/config"
	"github.com/clauderon/clauderond/dnsredir"
	"github.com/clauderon/clauderond/injector"
	"github.com/clauderon/clauderond/netfilter"
	"github.com/clauderon/clauderond/tlsmitm"
	"github.com/miekg/dns"
)

// parts is everything derived from config that a reload swaps at once.
// Building it has no side effects, so a bad config is refused before
// anything changes.
type parts struct {
	injector  *injectorAdapter
	policy    *policy
	upstreams []tlsmitm.Upstream
	answer    func(string) []netip.Addr
	overrides map[string][]netip.Addr // DNS answers for upstreams[] hosts
}

func buildParts(cfg *config.Config, store *injector.Store, gw netip.Addr, log *slog.Logger) (*parts, error) {
	rules := convertRules(cfg)
	if err := injector.ValidateRules(rules); err != nil {
		return nil, fmt.Errorf("rules: %w", err)
	}
	inj, err := injector.New(rules, store, log)
	if err != nil {
		return nil, fmt.Errorf("building the injector: %w", err)
	}
	pol, err := newPolicy(rules, cfg)
	if err != nil {
		return nil, err
	}
	ups, err := buildUpstreams(cfg)
	if err != nil {
		return nil, err
	}
	return &parts{
		injector: &injectorAdapter{inj: inj, requireLabel: cfg.Profiles.RequireLabel, trustLabels: cfg.Profiles.TrustLabels,
			access: cfg.Profiles.Access, nodeMode: cfg.NodeMode()},
		policy:    pol,
		upstreams: ups,
		answer:    interceptAnswer(ups, gw),
		overrides: overrideAnswers(ups, gw),
	}, nil
}

// netfilterSpec is the desired ruleset for cfg on the adopted bridge.
func netfilterSpec(cfg *config.Config, table string, bridgeName string, subnet netip.Prefix, gw netip.Addr) (netfilter.Spec, error) {
	s := netfilter.Spec{
		Table: table, Bridge: bridgeName, Subnet: subnet, Gateway: gw,
		TLSPort: uint16(cfg.Listen.TLSPort), DNSPort: uint16(cfg.Listen.DNSPort),
		AllowIntraBridge: cfg.Network.AllowIntraBridge,
		AuditMode:        cfg.Egress.Mode == config.EgressAudit,
		ListenerMark:     netfilter.DefaultListenerMark, // the SO_MARK listenerConfig sets
	}
	cluster, err := clusterSpec(cfg)
	if err != nil {
		return netfilter.Spec{}, err
	}
	s.Cluster = cluster
	if cfg.NodeMode() {
		s.AllowIntraBridge = true // pods on a node reach each other: the cluster's network model
	}
	for i, a := range cfg.Egress.AllowCIDRs {
		if !a.CIDR.IsValid() { // Validate refuses it; a Config built in code may lack it
			return netfilter.Spec{}, fmt.Errorf("egress.allow_cidrs[%d].cidr is not set", i)
		}
		ac := netfilter.AllowCIDR{Prefix: a.CIDR.Masked(), Proto: a.Proto}
		if ac.Proto == "" {
			ac.Proto = "tcp"
		}
		for _, port := range a.Ports {
			ac.Ports = append(ac.Ports, uint16(port))
		}
		s.AllowCIDRs = append(s.AllowCIDRs, ac)
	}
	if err := s.Validate(); err != nil {
		return netfilter.Spec{}, fmt.Errorf("building the nftables spec: %w", err)
	}
	return s, nil
}

// tlsReloadable is what the terminator takes at start and again on every
// reload.
func (p *parts) tlsReloadable(id tlsmitm.Identity, aud tlsmitm.Auditor, res tlsmitm.Resolver, subnet netip.Prefix) tlsmitm.Reloadable {
	return tlsmitm.Reloadable{
		Router: p.policy, Injector: p.injector, Identity: id, Auditor: aud,
		Upstreams: p.upstreams, DeniedPrefixes: deniedUpstreamPrefixes(subnet), Resolver: res,
	}
}

// dnsReloadable is what the DNS shim takes at start and again on every
// reload.
func (p *parts) dnsReloadable() dnsredir.Reloadable {
	return dnsredir.Reloadable{Policy: p.policy, InterceptAnswer: p.answer}
}

// dnsConfig is the DNS shim's configuration.
func dnsConfig(cfg *config.Config, p *parts, id dnsredir.Identity, aud dnsredir.Auditor, res dnsredir.Resolver,
	clientLog *slog.Logger) dnsredir.Config {
	rcode := dns.RcodeNameError
	if cfg.DNS.DenyRcode == config.RcodeRefused {
		rcode = dns.RcodeRefused
	}
	return dnsredir.Config{
		Reloadable: p.dnsReloadable(), Resolver: res, DenyRcode: rcode,
		RatePerSecond: cfg.DNS.RatePerSecond, Burst: cfg.DNS.Burst,
		Identity: id, Auditor: aud, EventLogger: clientLog,
	}
}

// privateUpstreamPrefixes are never dialled as an upstream unless an
// `upstreams` override names the exact address: a name in egress.allow (or a
// rule host) whose DNS answer points into the LAN, another Docker network or
// a carrier-grade NAT range would otherwise turn the daemon into a relay
// toward internal services.
var privateUpstreamPrefixes = []netip.Prefix{
	netip.MustParsePrefix("10.0.0.0/8"),
	netip.MustParsePrefix("172.16.0.0/12"),
	netip.MustParsePrefix("192.168.0.0/16"),
	netip.MustParsePrefix("100.64.0.0/10"),
	netip.MustParsePrefix("198.18.0.0/15"),
	netip.MustParsePrefix("192.0.0.0/24"),
	netip.MustParsePrefix("fc00::/7"),
}

// deniedUpstreamPrefixes is the bridge subnet plus the private ranges.
func deniedUpstreamPrefixes(subnet netip.Prefix) []netip.Prefix {
	return append([]netip.Prefix{subnet}, privateUpstreamPrefixes...)
}
