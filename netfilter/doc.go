// Package netfilter owns the nftables ruleset that confines the clauderon
// Docker bridge: it turns a Spec (bridge, subnet, gateway, listener ports,
// opt-in exceptions, the bridge's ports) into a Ruleset (pure data that
// renders to nft-style text), applies that Ruleset to the kernel in one
// atomic batch through google/nftables, reads it back to report drift,
// counts what it dropped, and tears it down on request.
//
// The ruleset lives in three tables of our own, all named Spec.Table:
//
//   - table inet: chain guard_pre (prerouting, priority raw, before
//     conntrack) drops, from the bridge, IPv6, source addresses outside the
//     subnet, every source address not in the container_addrs set (the
//     addresses of Spec.Ports) and every packet the bridge table did not
//     mark with PortVerifiedMark (its port . source address pair is not
//     registered: this covers a port not yet in Ports forging a registered
//     container's address), then clears that mark bit (other bits kept);
//     nat_pre (dstnat - 10, before Docker's nat) redirects TCP 443 to
//     TLSPort and UDP/TCP 53 to DNSPort, whatever the destination; host_in
//     (filter - 10) refuses Gateway:TLSPort/DNSPort to anything not from
//     the bridge (LAN peers, other bridges, host processes: TCP reset, UDP
//     drop), drops traffic for those ports whose destination socket lacks
//     the daemon's SO_MARK Spec.ListenerMark (a local user listening there
//     while the daemon is down gets nothing; with no socket at all the
//     kernel refuses fast), lets the bridge reach only those listeners
//     (plus established/related replies) and resets/drops everything
//     else, ICMP included; filter_forward (filter - 10) drops
//     container-to-container traffic that is routed or seen through
//     br_netfilter (unless AllowIntraBridge), drops 169.254.0.0/16,
//     accepts AllowCIDRs, then rejects QUIC (UDP 443), DoT (TCP 853), DoQ
//     (UDP 853), all other TCP (reset) and everything else (ICMP
//     admin-prohibited); into the bridge only established/related traffic
//     passes (Docker-published ports on this network are refused on
//     purpose); host_out (output, filter - 10) drops new connections from
//     the host into the bridge or the subnet (Docker's userland proxy,
//     output DNAT, any local process); nat_post (srcnat) masquerades the
//     subnet's traffic leaving through another interface (what
//     filter_forward let out: AllowCIDRs, audit mode), because Docker
//     masquerading is off on our network.
//   - table bridge: port_guard (bridge prerouting) drops, on registered
//     ports, every non-IPv4, non-ARP frame and every IPv4/ARP frame whose
//     (port . source address) is not in the port_addrs set, and on every
//     port sets PortVerifiedMark on IPv4/ARP frames whose pair is in it;
//     port_forward drops frames between two ports (unless
//     AllowIntraBridge). Both key on the "ports" set of port names that
//     the appliance keeps current with SetPorts, because this kernel has
//     no meta ibrname. Bridge port isolation (IFLA_BRPORT_ISOLATED, set
//     through netlink on every port enslaved to the bridge, found by index
//     not name) is a second, name-independent layer for
//     container-to-container isolation.
//   - table arp: arp_in (arp input) drops ARP from the bridge without
//     PortVerifiedMark, so no port (registered or not) can claim another
//     container's address in the host's neighbour table.
//
// Kubernetes node mode (Spec.Cluster; the zero value adds nothing): TCP 443
// to the cluster's pod and Service CIDRs is not redirected (nat_pre
// accepts it first, so kube-proxy's DNAT applies; DNS is still
// redirected, whatever server a pod names); filter_forward accepts the
// bridge's traffic to the pod CIDRs (judged after DNAT: a Service whose
// endpoint lies outside them meets the rejects) and, into the bridge,
// traffic from them; the API server endpoints are accepted in host_in
// (on this host) and filter_forward (routed); host_out is empty (the
// kubelet probes pods from the host); nat_post leaves pod-to-pod
// addresses alone. Other nodes' pods, whose traffic arrives on another
// interface with a pod-CIDR source, may reach this host only at the API
// server endpoints (host_in: the pod CIDR holds every node's bridge and
// tunnel addresses) and be forwarded only to the pod CIDRs; and no new
// connection from outside the pod CIDRs is forwarded to them between two
// other interfaces (a NodePort DNAT here would otherwise hand a pod
// elsewhere an inbound channel). The golden files
// testdata/{build,kernel}/cluster.nft show the whole ruleset.
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
// (a redirected connection to a dead listener is reset by the kernel; one
// to a socket without the daemon's SO_MARK is dropped).
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
//     containers are redirected to the daemon even with AllowIntraBridge;
//   - the daemon must set SO_MARK Spec.ListenerMark on its listener sockets
//     (CAP_NET_ADMIN), or redirected traffic is dropped;
//   - google/nftables v0.3.0 does not decode the socket expression when
//     reading rules back, so Verify compares the listener rules' mark
//     value but cannot see the socket lookup itself (the kernel goldens
//     check the nft text);
//   - PortVerifiedMark (0x2000) lives on a packet only between the bridge
//     table and guard_pre (or arp_in); a bridge-family rule of someone
//     else setting that bit would defeat the unregistered-port check.
package netfilter
