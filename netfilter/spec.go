package netfilter

import (
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"unicode"
)

// DefaultTable is the name of our nftables tables when Spec.Table is empty.
const DefaultTable = "clauderon"

// DefaultListenerMark is the SO_MARK the daemon puts on its listener
// sockets when Spec.ListenerMark is zero ("cldr"). The input chain hands
// redirected traffic only to sockets with this mark.
const DefaultListenerMark uint32 = 0x636c6472

// PortVerifiedMark is the packet mark bit the bridge table sets on frames
// whose (port . source address) pair is registered; the inet and arp
// tables drop the bridge's traffic without it, then clear it. Other mark
// bits are kept (kube-proxy uses 0x4000/0x8000, Docker none).
const PortVerifiedMark uint32 = 0x00002000

// ifNameSize is IFNAMSIZ: interface names are at most 15 bytes plus NUL.
const ifNameSize = 16

// Spec is the desired confinement of one bridge. The appliance fills it
// from config and from the Docker network it owns.
type Spec struct {
	// Table names both of our tables (inet and bridge). Empty means
	// DefaultTable. Tests use their own names.
	Table string
	// Bridge is the Linux bridge device of the Docker network ("clauderon0").
	Bridge string
	// Subnet is the bridge's IPv4 subnet; Gateway its address on the host
	// (the bridge device's primary address, where the listeners bind).
	Subnet  netip.Prefix
	Gateway netip.Addr
	// TLSPort and DNSPort are the daemon's listener ports on Gateway.
	TLSPort uint16
	DNSPort uint16
	// AllowIntraBridge lets containers on the bridge reach each other.
	AllowIntraBridge bool
	// AllowCIDRs are opt-in egress exceptions, accepted before the rejects.
	AllowCIDRs []AllowCIDR
	// AuditMode turns the forward rejects into log (NFLOG group LogGroup,
	// prefix "clauderon would-deny: ") + counter + accept. Redirects, host
	// protection, anti-spoofing, IPv6 and metadata drops stay enforced.
	AuditMode bool
	// LogGroup is the NFLOG group of the audit-mode log rules. Without a
	// listener on the group the kernel discards the log messages.
	LogGroup uint16
	// ListenerMark is the SO_MARK of the daemon's listener sockets (zero:
	// DefaultListenerMark). Traffic redirected to the listener ports is
	// accepted only for a socket with this mark.
	ListenerMark uint32
	// Ports are the bridge's current ports (host-side veth names) and the
	// IPv4 address Docker assigned to each container behind them.
	Ports []Port
	// Cluster holds a Kubernetes node's exceptions (node mode); the zero
	// value, Docker mode, adds no rule.
	Cluster Cluster
}

// Cluster is what a Kubernetes node must keep working for its pods on the
// bridge, and nothing more.
type Cluster struct {
	// PodCIDRs are the cluster's pod networks: traffic between pods (on
	// this node or routed to another) is the cluster's own, so it is
	// neither redirected nor refused, in both directions.
	PodCIDRs []netip.Prefix
	// ServiceCIDRs are the ClusterIP ranges: TCP 443 to them is not
	// redirected, so kube-proxy's DNAT applies; what the DNAT leads to is
	// then judged like any destination (a Service whose endpoint is
	// outside PodCIDRs and APIServer is refused).
	ServiceCIDRs []netip.Prefix
	// APIServer are the API server endpoints pods may reach (what the
	// kubernetes Service DNATs to), on this host or routed. Empty: none.
	APIServer []netip.AddrPort
	// HostToPods lets the host open connections into the bridge: the
	// kubelet's probes come from the host.
	HostToPods bool
}

// AllowCIDR is one egress exception: traffic from the bridge to Prefix
// (IPv4 only) with Proto ("tcp", "udp" or "" for any protocol) and, for tcp
// or udp, one of Ports (empty means every port) is accepted.
type AllowCIDR struct {
	Prefix netip.Prefix
	Proto  string
	Ports  []uint16
}

// Port is one bridge port: the host-side interface name and the container
// address that may appear as source address on it.
type Port struct {
	IfName string
	Addr   netip.Addr
}

func (p Port) String() string { return fmt.Sprintf("%s . %s", p.IfName, p.Addr) }

// metadataPrefix is link-local IPv4 (cloud metadata services live here).
var metadataPrefix = netip.MustParsePrefix("169.254.0.0/16")

// withDefaults returns a copy of s with the table name defaulted and the
// ports sorted and de-duplicated, so equal specs build equal rulesets.
func (s Spec) withDefaults() Spec {
	if s.Table == "" {
		s.Table = DefaultTable
	}
	if s.ListenerMark == 0 {
		s.ListenerMark = DefaultListenerMark
	}
	s.Ports = normalizePorts(s.Ports)
	s.AllowCIDRs = slices.Clone(s.AllowCIDRs)
	s.Cluster.PodCIDRs = slices.Clone(s.Cluster.PodCIDRs)
	s.Cluster.ServiceCIDRs = slices.Clone(s.Cluster.ServiceCIDRs)
	s.Cluster.APIServer = slices.Clone(s.Cluster.APIServer)
	return s
}

func normalizePorts(ports []Port) []Port {
	out := slices.Clone(ports)
	slices.SortFunc(out, func(a, b Port) int {
		if c := strings.Compare(a.IfName, b.IfName); c != 0 {
			return c
		}
		return a.Addr.Compare(b.Addr)
	})
	return slices.Compact(out)
}

// Validate reports every problem with s at once, naming the field.
func (s Spec) Validate() error {
	s = s.withDefaults()
	var errs []error
	if err := validName("table", s.Table, 64); err != nil {
		errs = append(errs, err)
	}
	if err := validIfName("bridge", s.Bridge); err != nil {
		errs = append(errs, err)
	}
	errs = append(errs, s.validateAddrs()...)
	if s.TLSPort == 0 {
		errs = append(errs, errors.New("tls port: must be set"))
	}
	if s.DNSPort == 0 {
		errs = append(errs, errors.New("dns port: must be set"))
	}
	if s.TLSPort != 0 && s.TLSPort == s.DNSPort {
		errs = append(errs, fmt.Errorf("dns port: %d is also the tls port; both listen on TCP", s.DNSPort))
	}
	for i, a := range s.AllowCIDRs {
		if err := a.validate(); err != nil {
			errs = append(errs, fmt.Errorf("allow cidr %d: %w", i, err))
		}
	}
	if err := s.validatePorts(s.Ports); err != nil {
		errs = append(errs, err)
	}
	errs = append(errs, s.Cluster.validate()...)
	return errors.Join(errs...)
}

func (c Cluster) validate() []error {
	var errs []error
	for kind, ps := range map[string][]netip.Prefix{"pod cidr": c.PodCIDRs, "service cidr": c.ServiceCIDRs} {
		for _, p := range ps {
			if err := (AllowCIDR{Prefix: p}).validate(); err != nil {
				errs = append(errs, fmt.Errorf("cluster %s: %w", kind, err))
			} else if p.Bits() < 8 {
				errs = append(errs, fmt.Errorf("cluster %s: %s is wider than /8", kind, p))
			}
		}
	}
	for _, a := range c.APIServer {
		if !a.IsValid() || !a.Addr().Is4() || a.Port() == 0 || a.Addr().IsLinkLocalUnicast() {
			errs = append(errs, fmt.Errorf("cluster api server: %q is not an IPv4 address and port", a))
		}
	}
	return errs
}

func (s Spec) validateAddrs() []error {
	var errs []error
	if !s.Subnet.IsValid() || !s.Subnet.Addr().Is4() {
		errs = append(errs, fmt.Errorf("subnet: %q is not an IPv4 CIDR; expected e.g. 10.213.0.0/24", s.Subnet))
	} else if s.Subnet != s.Subnet.Masked() {
		errs = append(errs, fmt.Errorf("subnet: %s has host bits set; expected %s", s.Subnet, s.Subnet.Masked()))
	}
	if !s.Gateway.IsValid() || !s.Gateway.Is4() {
		errs = append(errs, fmt.Errorf("gateway: %q is not an IPv4 address", s.Gateway))
	} else if s.Subnet.IsValid() && !s.Subnet.Contains(s.Gateway) {
		errs = append(errs, fmt.Errorf("gateway: %s is outside subnet %s", s.Gateway, s.Subnet))
	}
	return errs
}

// validatePorts checks ports against s's subnet and gateway.
func (s Spec) validatePorts(ports []Port) error {
	var errs []error
	for _, p := range ports {
		if err := validIfName("port "+p.IfName, p.IfName); err != nil {
			errs = append(errs, err)
			continue
		}
		if !p.Addr.Is4() || (s.Subnet.IsValid() && !s.Subnet.Contains(p.Addr)) || p.Addr == s.Gateway {
			errs = append(errs, fmt.Errorf("port %s: address %s is not a container address in subnet %s", p.IfName, p.Addr, s.Subnet))
		}
	}
	return errors.Join(errs...)
}

func (a AllowCIDR) validate() error {
	if !a.Prefix.IsValid() || !a.Prefix.Addr().Is4() {
		return fmt.Errorf("prefix %q is not an IPv4 CIDR (IPv6 from the bridge is always dropped)", a.Prefix)
	}
	if a.Prefix != a.Prefix.Masked() {
		return fmt.Errorf("prefix %s has host bits set; expected %s", a.Prefix, a.Prefix.Masked())
	}
	switch a.Proto {
	case "tcp", "udp":
	case "":
		if len(a.Ports) > 0 {
			return errors.New(`ports need proto "tcp" or "udp"`)
		}
	default:
		return fmt.Errorf("proto %q: expected \"tcp\", \"udp\" or empty for any", a.Proto)
	}
	for _, p := range a.Ports {
		if p == 0 {
			return errors.New("port 0 is not a port")
		}
		if (a.Proto == "tcp" && (p == 443 || p == 53)) || (a.Proto == "udp" && p == 53) {
			return fmt.Errorf("%s port %d is always redirected to the daemon; allow the host in egress.allow instead", a.Proto, p)
		}
	}
	return nil
}

func validName(field, name string, max int) error {
	if name == "" || len(name) > max {
		return fmt.Errorf("%s: %q must be 1 to %d characters", field, name, max)
	}
	for _, r := range name {
		if !(r == '_' || r == '-' || (r >= 'a' && r <= 'z') || (r >= 'A' && r <= 'Z') || (r >= '0' && r <= '9')) {
			return fmt.Errorf("%s: %q may contain only letters, digits, '-' and '_'", field, name)
		}
	}
	return nil
}

func validIfName(field, name string) error {
	if name == "" || len(name) >= ifNameSize {
		return fmt.Errorf("%s: interface name %q must be 1 to %d bytes", field, name, ifNameSize-1)
	}
	// The kernel's dev_valid_name rules, plus '"' (it would break nft text).
	if name == "." || name == ".." || strings.ContainsFunc(name, func(r rune) bool {
		return r == '/' || r == ':' || r == '"' || r == 0 || unicode.IsSpace(r)
	}) {
		return fmt.Errorf("%s: interface name %q is not a valid Linux interface name", field, name)
	}
	return nil
}
