// Package netfilter owns the nftables ruleset that confines the clauderon
// Docker bridge: it turns a Spec (bridge, subnet, gateway, listener ports,
// opt-in exceptions, the bridge's ports) into a Ruleset (pure data that
// renders to nft-style text), applies that Ruleset to the kernel in one
// atomic batch through google/nftables, reads it back to report drift,
// counts what it dropped, and tears it down on request.
//
// The ruleset lives in two tables of our own, both named Spec.Table:
//
//   - table inet: chain guard_pre (prerouting, priority raw, before
//     conntrack) drops, from the bridge, IPv6, source addresses outside the
//     subnet and every source address not in the container_addrs set (the
//     addresses of Spec.Ports): a container the appliance has not reported
//     yet sends nothing (fail closed); nat_pre (dstnat - 10, before Docker's nat) redirects TCP 443
//     to TLSPort and UDP/TCP 53 to DNSPort, whatever the destination;
//     host_in (filter - 10) lets the bridge reach only Gateway:TLSPort and
//     Gateway:DNSPort (plus established/related replies to connections the
//     host opened) and resets/drops everything else, ICMP included;
//     filter_forward (filter - 10) drops container-to-container traffic
//     that is routed or seen through br_netfilter (unless
//     AllowIntraBridge), drops 169.254.0.0/16, accepts AllowCIDRs, then
//     rejects QUIC (UDP 443), DoT (TCP 853), DoQ (UDP 853), all other TCP
//     (reset) and everything else (ICMP admin-prohibited); into the bridge
//     only established/related traffic passes (Docker-published ports on
//     this network are refused on purpose).
//   - table bridge: port_guard (bridge prerouting) drops every non-IPv4,
//     non-ARP frame and every IPv4/ARP frame whose (port . source address)
//     is not in the port_addrs set; port_forward drops frames between two
//     ports (unless AllowIntraBridge). Both key on the "ports" set of port
//     names that the appliance keeps current with SetPorts, because this
//     kernel has no meta ibrname. Bridge port isolation
//     (IFLA_BRPORT_ISOLATED, set through netlink on every port enslaved to
//     the bridge, found by index not name) is a second, name-independent
//     layer for container-to-container isolation.
//
// Decisions: AuditMode turns only the forward rejects into NFLOG (group
// Spec.LogGroup, prefix "clauderon would-deny: ") + counter + accept;
// redirects, host protection, IPv6, anti-spoofing, intra-bridge and
// 169.254.0.0/16 drops stay enforced (metadata credentials are the one
// thing an audit must never leak). AllowCIDRs cannot name TCP 443 or
// UDP/TCP 53 (those always go through the daemon) nor open link-local
// (that drop comes first). ICMP to the host is dropped: containers cannot
// ping the gateway (ICMP errors related to host connections still pass as
// ct related).
//
// Every rule carries an nft-visible comment "clauderon:<what>" and a
// counter; Verify diffs the kernel against the Spec by those comments and
// by each rule's expressions.
//
// The package refuses to: touch any table it does not own (Docker's
// iptables-nft tables and any other table are never read for decisions,
// flushed or deleted; there is no FlushRuleset anywhere); shell out to the
// nft binary; decide policy (which hosts, which CIDRs) — it only enforces
// the Spec it is given; manage the Docker network or follow Docker events
// (the appliance does and calls SetPorts). It never tears the ruleset
// down by itself: on daemon exit the rules stay and traffic fails closed
// (a redirected connection to a dead listener is reset by the kernel).
//
// Be aware:
//   - re-applying the ruleset resets its counters (tables are re-created);
//     SetPorts does not;
//   - bridge-family reject does not exist on this kernel, so bridge-level
//     denials are silent drops; inet-level denials of TCP are resets (fast
//     failure) and of other protocols ICMP admin-prohibited (rate-limited);
//   - a new container's traffic is dropped until its port reaches
//     SetPorts (or Apply): call it on every Docker start/restart event;
//   - the appliance must set Gateway to the bridge's primary IPv4 address:
//     redirect targets the primary address of the incoming interface, and
//     host_in accepts only Gateway:TLSPort/DNSPort (otherwise fail closed);
//   - with br_netfilter active (Docker turns it on), TCP 443 and 53 between
//     containers are redirected to the daemon even with AllowIntraBridge.
package netfilter
