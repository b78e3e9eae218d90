package netfilter

import (
	"fmt"
	"net/netip"
	"slices"
)

// Chain and set names. None is an nft keyword ("fwd" is one).
const (
	chainGuard    = "guard_pre"
	chainNAT      = "nat_pre"
	chainHostIn   = "host_in"
	chainForward  = "filter_forward"
	chainPortIn   = "port_guard"
	chainPortFwd  = "port_forward"
	chainNATPost  = "nat_post"
	chainHostOut  = "host_out"
	chainARPIn    = "arp_in"
	setPorts      = "ports"
	setPortAddrs  = "port_addrs"
	setAddrs      = "container_addrs"
	commentPrefix = "clauderon:"
)

// Chain priorities. The nat chain runs before Docker's (dstnat); the
// guard runs before conntrack so dropped packets create no state.
const (
	prioGuard   = -300 // raw
	prioNAT     = -110 // dstnat - 10
	prioFilter  = -10  // filter - 10
	prioBridge  = -200 // bridge filter
	prioSrcNAT  = 100  // srcnat
	prioARP     = 0    // arp filter
	auditPrefix = "clauderon would-deny: "
)

// Build computes the ruleset for s. It is pure: no kernel access.
func Build(s Spec) (Ruleset, error) {
	if err := s.Validate(); err != nil {
		return Ruleset{}, fmt.Errorf("building nftables ruleset: %w", err)
	}
	s = s.withDefaults()
	b := builder{s: s}
	inet := Table{Family: FamilyInet, Name: s.Table, Sets: []Set{b.addrSet()}, Chains: []Chain{
		{Name: chainGuard, Type: "filter", Hook: "prerouting", Priority: prioGuard, Rules: b.guardRules()},
		{Name: chainNAT, Type: "nat", Hook: "prerouting", Priority: prioNAT, Rules: b.natRules()},
		{Name: chainHostIn, Type: "filter", Hook: "input", Priority: prioFilter, Rules: b.hostRules()},
		{Name: chainForward, Type: "filter", Hook: "forward", Priority: prioFilter, Rules: b.forwardRules()},
		{Name: chainHostOut, Type: "filter", Hook: "output", Priority: prioFilter, Rules: b.hostOutRules()},
		{Name: chainNATPost, Type: "nat", Hook: "postrouting", Priority: prioSrcNAT, Rules: b.natPostRules()},
	}}
	return Ruleset{Tables: []Table{inet, b.bridgeTable(), b.arpTable()}}, nil
}

type builder struct{ s Spec }

// rule is a counted rule whose comment gets the clauderon: prefix.
func rule(name string, v Verdict, ms ...Match) Rule {
	return Rule{Comment: commentPrefix + name, Matches: ms, Counter: true, Verdict: v}
}

func (b builder) fromBridge() IfName { return IfName{Name: b.s.Bridge} }
func (b builder) toBridge() IfName   { return IfName{Out: true, Name: b.s.Bridge} }

func (b builder) guardRules() []Rule {
	br, v4 := b.fromBridge(), NFProto{}
	return []Rule{
		rule("drop-ipv6", Drop{}, br, NFProto{IPv6: true}),
		rule("drop-foreign-saddr", Drop{}, br, v4, Addr{Prefix: b.s.Subnet, Neg: true}),
		rule("drop-unknown-saddr", Drop{}, br, v4, AddrNotInSet{Set: setAddrs}),
		// The bridge table marked the packet if it entered through a
		// registered port with that port's address: a port not (yet) in
		// Ports, forging a registered container's address, is dropped here.
		rule("drop-unverified-port", Drop{}, br, MarkBits{Bits: PortVerifiedMark, Unset: true}),
		// Our bit has done its job: give the mark back as it was, so that
		// nothing downstream (policy routing, other firewalls) sees it.
		rule("clear-port-mark", SetMarkBits{Bits: PortVerifiedMark, Clear: true}, br),
	}
}

func (b builder) natRules() []Rule {
	br, v4 := b.fromBridge(), NFProto{}
	var rules []Rule
	// 443 to the cluster's pods and Services is the cluster's own (the
	// gateway, in the pod CIDR, is the host: still redirected); DNS always
	// comes to the shim, whatever server a pod names.
	gw := Addr{Dst: true, Prefix: netip.PrefixFrom(b.s.Gateway, 32), Neg: true}
	for i, p := range slices.Concat(b.s.Cluster.PodCIDRs, b.s.Cluster.ServiceCIDRs) {
		rules = append(rules, rule(fmt.Sprintf("cluster-no-redirect-%d", i), Accept{}, br, v4,
			Addr{Dst: true, Prefix: p}, gw, DPort{Proto: "tcp", Ports: []uint16{443}}))
	}
	return append(rules,
		rule("redirect-443", Redirect{Port: b.s.TLSPort}, br, v4, DPort{Proto: "tcp", Ports: []uint16{443}}),
		rule("redirect-dns-udp", Redirect{Port: b.s.DNSPort}, br, v4, DPort{Proto: "udp", Ports: []uint16{53}}),
		rule("redirect-dns-tcp", Redirect{Port: b.s.DNSPort}, br, v4, DPort{Proto: "tcp", Ports: []uint16{53}}),
	)
}

// apiServerRules accept the bridge's connections to the API server
// endpoints (in host_in when the API server is on this host, in
// filter_forward when it is routed).
// from nil: whatever the input interface (this node's pods and other
// nodes' alike).
func (b builder) apiServerRules(where string, from Match) []Rule {
	var rules []Rule
	for i, a := range b.s.Cluster.APIServer {
		ms := []Match{NFProto{}, Addr{Dst: true, Prefix: netip.PrefixFrom(a.Addr(), 32)}, DPort{Proto: "tcp", Ports: []uint16{a.Port()}}}
		if from != nil {
			ms = append([]Match{from}, ms...)
		}
		rules = append(rules, rule(fmt.Sprintf("%s-apiserver-%d", where, i), Accept{}, ms...))
	}
	return rules
}

func (b builder) hostRules() []Rule {
	br, v4 := b.fromBridge(), NFProto{}
	notBr := IfName{Name: b.s.Bridge, Neg: true}
	gw := Addr{Dst: true, Prefix: netip.PrefixFrom(b.s.Gateway, 32)}
	unowned := SocketMark{Mark: b.s.ListenerMark, Neg: true}
	listenTCP := DPort{Proto: "tcp", Ports: []uint16{b.s.TLSPort, b.s.DNSPort}}
	listenUDP := DPort{Proto: "udp", Ports: []uint16{b.s.DNSPort}}
	return slices.Concat([]Rule{
		// The listeners serve the bridge only: not the LAN, other bridges
		// or host processes (weak host model: the gateway address answers
		// on every interface).
		rule("listener-off-bridge-tcp", RejectTCPReset{}, notBr, v4, gw, listenTCP),
		rule("listener-off-bridge-udp", Drop{}, notBr, v4, gw, listenUDP),
		rule("host-established", Accept{}, br, CtEstablished{}),
		// A socket on the listener ports without the daemon's SO_MARK
		// (settable only with CAP_NET_ADMIN) is a local user's, bound
		// while the daemon is down: it gets nothing. (Dropped: a reset
		// from here would leave with the redirected address, unanswered.)
		rule("drop-unowned-listener", Drop{}, br, v4, gw, listenTCP, unowned),
		rule("drop-unowned-listener-udp", Drop{}, br, v4, gw, listenUDP, unowned),
		// The daemon's marked sockets, or none: then the kernel itself
		// refuses fast (TCP reset, ICMP port unreachable). Only what the
		// redirect rewrote: a container dialling gateway:TLS/DNS port
		// itself meets the rules below, as for any other host port.
		rule("accept-tls", Accept{}, br, v4, gw, DPort{Proto: "tcp", Ports: []uint16{b.s.TLSPort}}, CtDNAT{}),
		rule("accept-dns-udp", Accept{}, br, v4, gw, DPort{Proto: "udp", Ports: []uint16{b.s.DNSPort}}, CtDNAT{}),
		rule("accept-dns-tcp", Accept{}, br, v4, gw, DPort{Proto: "tcp", Ports: []uint16{b.s.DNSPort}}, CtDNAT{}),
	}, b.apiServerRules("host", nil), b.foreignPodRules("host", []Match{IfName{Name: "lo", Neg: true}}), []Rule{
		rule("reject-host-tcp", RejectTCPReset{}, br, L4Proto{Proto: "tcp"}),
		rule("drop-host", Drop{}, br),
	})
}

// foreignPodRules confine the pods of other nodes where this node's rules
// see them (their own node judged them already, but the pod CIDR holds the
// other nodes' bridge and tunnel addresses, through which they reach this
// host): new connections from the pod CIDRs arriving on another interface
// (extra: not lo, or only toward what is not a pod) may reach this host
// only at the API server endpoints (host_in), and may be forwarded only to
// the pod CIDRs (filter_forward), never on out of the cluster.
func (b builder) foreignPodRules(where string, extra []Match) []Rule {
	notBr := IfName{Name: b.s.Bridge, Neg: true}
	var rules []Rule
	for i, p := range b.s.Cluster.PodCIDRs {
		ms := append([]Match{notBr, NFProto{}, Addr{Prefix: p}}, extra...)
		rules = append(rules, rule(fmt.Sprintf("%s-foreign-pods-%d", where, i), Drop{}, append(ms, CtNew{})...))
	}
	return rules
}

// hostOutRules stop the host opening connections into the bridge (Docker's
// userland proxy for published ports, any local process): containers are
// reached only through docker exec/attach. Replies and ICMP errors are not
// new connections.
func (b builder) hostOutRules() []Rule {
	if b.s.Cluster.HostToPods {
		return nil
	}
	return []Rule{
		rule("drop-host-to-bridge", Drop{}, b.toBridge(), CtNew{}),
		// An output DNAT (a published port dialled from the host) reroutes
		// after this hook's output interface was fixed: match the new
		// destination too. The gateway is the host itself.
		rule("drop-host-to-subnet", Drop{}, NFProto{}, Addr{Dst: true, Prefix: b.s.Subnet},
			Addr{Dst: true, Prefix: netip.PrefixFrom(b.s.Gateway, 32), Neg: true}, CtNew{}),
	}
}

// natPostRules masquerade the bridge's traffic that the forward chain let
// leave through another interface (allow_cidrs, audit mode): Docker
// masquerading is off on our network and the next hop has no route back
// to the subnet.
func (b builder) natPostRules() []Rule {
	// Not the gateway: that is the host's own address (a host process
	// talking to it over lo), and postrouting knows no input interface.
	// Pod to pod keeps its addresses (the cluster's network model).
	var rules []Rule
	for i, p := range b.s.Cluster.PodCIDRs {
		rules = append(rules, rule(fmt.Sprintf("cluster-no-masquerade-%d", i), Accept{}, NFProto{}, Addr{Prefix: b.s.Subnet},
			Addr{Dst: true, Prefix: p}))
	}
	return append(rules, rule("masquerade-egress", Masquerade{}, NFProto{}, Addr{Prefix: b.s.Subnet},
		Addr{Prefix: netip.PrefixFrom(b.s.Gateway, 32), Neg: true}, IfName{Out: true, Name: b.s.Bridge, Neg: true}))
}

func (b builder) forwardRules() []Rule {
	br, v4 := b.fromBridge(), NFProto{}
	rules := b.clusterTransitRules()
	if b.s.AllowIntraBridge {
		rules = append(rules, rule("intra-bridge-allow", Accept{}, br, b.toBridge()))
	} else {
		rules = append(rules, rule("intra-bridge-drop", Drop{}, br, b.toBridge()))
	}
	rules = append(rules, rule("drop-metadata", Drop{}, br, v4, Addr{Dst: true, Prefix: metadataPrefix}))
	for i, p := range b.s.Cluster.PodCIDRs {
		rules = append(rules, rule(fmt.Sprintf("cluster-pods-%d", i), Accept{}, br, v4, Addr{Dst: true, Prefix: p}))
	}
	rules = append(rules, b.apiServerRules("forward", br)...)
	for i, a := range b.s.AllowCIDRs {
		ms := []Match{br, v4, Addr{Dst: true, Prefix: a.Prefix}}
		switch {
		case len(a.Ports) > 0:
			ms = append(ms, DPort{Proto: a.Proto, Ports: a.Ports})
		case a.Proto != "":
			ms = append(ms, L4Proto{Proto: a.Proto})
		}
		rules = append(rules, rule(fmt.Sprintf("allow-cidr-%d", i), Accept{}, ms...))
	}
	rules = append(rules, b.denyRules()...)
	for i, p := range b.s.Cluster.PodCIDRs {
		rules = append(rules, rule(fmt.Sprintf("cluster-pods-in-%d", i), Accept{}, b.toBridge(), v4, Addr{Prefix: p}))
	}
	return append(rules,
		rule("into-bridge-established", Accept{}, b.toBridge(), CtEstablished{}),
		rule("drop-into-bridge", Drop{}, b.toBridge()),
	)
}

// clusterTransitRules judge what this node forwards between other
// interfaces for the cluster (node mode): other nodes' pods reaching
// through this node (the API server endpoints, or another pod) and
// nothing else; and no new connection from outside the pod CIDRs to a pod
// (a NodePort or LoadBalancer DNAT here, masqueraded into the pod
// network, would hand a confined pod an inbound channel).
func (b builder) clusterTransitRules() []Rule {
	if len(b.s.Cluster.PodCIDRs) == 0 {
		return nil
	}
	notBr, notToBr := IfName{Name: b.s.Bridge, Neg: true}, IfName{Out: true, Name: b.s.Bridge, Neg: true}
	var notPods, toPods []Match
	for _, p := range b.s.Cluster.PodCIDRs {
		notPods = append(notPods, Addr{Dst: true, Prefix: p, Neg: true})
	}
	rules := b.apiServerRules("transit", notBr)
	rules = append(rules, b.foreignPodRules("transit", notPods)...)
	for _, p := range b.s.Cluster.PodCIDRs {
		toPods = append(toPods, Addr{Prefix: p, Neg: true})
	}
	for i, p := range b.s.Cluster.PodCIDRs {
		ms := append([]Match{notBr, notToBr, NFProto{}, Addr{Dst: true, Prefix: p}}, toPods...)
		rules = append(rules, rule(fmt.Sprintf("transit-outside-to-pods-%d", i), Drop{}, append(ms, CtNew{})...))
	}
	return rules
}

// denyRules are the egress refusals; in audit mode each one logs, counts
// and accepts instead, under a "would-deny-" comment.
func (b builder) denyRules() []Rule {
	br := b.fromBridge()
	type deny struct {
		name string
		v    Verdict
		ms   []Match
	}
	denies := []deny{
		{"quic", RejectAdminProhibited{}, []Match{br, DPort{Proto: "udp", Ports: []uint16{443}}}},
		{"dot", RejectTCPReset{}, []Match{br, DPort{Proto: "tcp", Ports: []uint16{853}}}},
		{"doq", RejectAdminProhibited{}, []Match{br, DPort{Proto: "udp", Ports: []uint16{853}}}},
		{"tcp", RejectTCPReset{}, []Match{br, L4Proto{Proto: "tcp"}}},
		{"other", RejectAdminProhibited{}, []Match{br}},
	}
	rules := make([]Rule, 0, len(denies))
	for _, d := range denies {
		if !b.s.AuditMode {
			rules = append(rules, rule("reject-"+d.name, d.v, d.ms...))
			continue
		}
		r := rule("would-deny-"+d.name, Accept{}, d.ms...)
		r.Log = &Log{Prefix: auditPrefix, Group: b.s.LogGroup}
		rules = append(rules, r)
	}
	return rules
}

func (b builder) bridgeTable() Table {
	fromPort := IfNameInSet{Set: setPorts}
	t := Table{Family: FamilyBridge, Name: b.s.Table,
		Sets: b.bridgeSets(),
		Chains: []Chain{{Name: chainPortIn, Type: "filter", Hook: "prerouting", Priority: prioBridge, Rules: []Rule{
			rule("port-drop-non-ipv4", Drop{}, fromPort, EtherType{Types: []uint16{EtherIPv4, EtherARP}, Neg: true}),
			rule("antispoof-ip", Drop{}, fromPort, EtherType{Types: []uint16{EtherIPv4}}, PortAddrNotIn{Set: setPortAddrs}),
			rule("antispoof-arp", Drop{}, fromPort, EtherType{Types: []uint16{EtherARP}}, PortAddrNotIn{ARP: true, Set: setPortAddrs}),
			// Whatever the port, a frame whose (port . source address) pair
			// is registered gets PortVerifiedMark; the inet guard and the
			// arp table drop the bridge's traffic without it, so a port the
			// sets do not know yet is covered too.
			rule("mark-verified-ip", SetMarkBits{Bits: PortVerifiedMark}, EtherType{Types: []uint16{EtherIPv4}}, SrcAddrIn{Set: setPortAddrs}),
			rule("mark-verified-arp", SetMarkBits{Bits: PortVerifiedMark}, EtherType{Types: []uint16{EtherARP}}, SrcAddrIn{ARP: true, Set: setPortAddrs}),
		}}},
	}
	if !b.s.AllowIntraBridge {
		t.Chains = append(t.Chains, Chain{Name: chainPortFwd, Type: "filter", Hook: "forward", Priority: prioBridge, Rules: []Rule{
			rule("port-isolate-in", Drop{}, fromPort),
			rule("port-isolate-out", Drop{}, IfNameInSet{Out: true, Set: setPorts}),
		}})
	}
	return t
}

// arpTable keeps unregistered ports (and forged sender addresses) out of
// the host's neighbour table: ARP from the bridge without the bridge
// table's PortVerifiedMark is dropped before the host learns from it.
func (b builder) arpTable() Table {
	return Table{Family: FamilyARP, Name: b.s.Table, Chains: []Chain{
		{Name: chainARPIn, Type: "filter", Hook: "input", Priority: prioARP, Rules: []Rule{
			rule("drop-unverified-arp", Drop{}, b.fromBridge(), MarkBits{Bits: PortVerifiedMark, Unset: true}),
		}},
	}}
}

// uniqueNames returns one element per interface name of sorted ports.
func uniqueNames(ports []Port) []Port {
	var out []Port
	for _, p := range ports {
		if len(out) == 0 || out[len(out)-1].IfName != p.IfName {
			out = append(out, Port{IfName: p.IfName})
		}
	}
	return out
}

// portSet is a named set with the family of its table.
type portSet struct {
	Set
	family Family
}

// portSets are the sets SetPorts rewrites: the inet table's known
// container addresses and the bridge table's port names and bindings.
func portSets(table string, ports []Port) []portSet {
	b := builder{s: Spec{Table: table, Ports: ports}}
	out := []portSet{{b.addrSet(), FamilyInet}}
	for _, s := range b.bridgeSets() {
		out = append(out, portSet{s, FamilyBridge})
	}
	return out
}

func (b builder) addrSet() Set {
	var addrs []Port
	for _, p := range b.s.Ports {
		if !slices.ContainsFunc(addrs, func(q Port) bool { return q.Addr == p.Addr }) {
			addrs = append(addrs, Port{Addr: p.Addr})
		}
	}
	slices.SortFunc(addrs, func(a, b Port) int { return a.Addr.Compare(b.Addr) })
	return Set{Name: setAddrs, Kind: SetAddrs, Elements: addrs}
}

func (b builder) bridgeSets() []Set {
	return []Set{
		{Name: setPorts, Kind: SetIfNames, Elements: uniqueNames(b.s.Ports)},
		{Name: setPortAddrs, Kind: SetIfNameAddrs, Elements: b.s.Ports},
	}
}
