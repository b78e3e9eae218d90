// Package netfilter owns the nftables ruleset that confines the clauderon
// Docker bridge: it turns a Spec (bridge, subnet, gateway, listener ports,
// opt-in exceptions, the bridge's ports) into a Ruleset (pure data that
// renders to nft-style text), applies that Ruleset to the kernel in one
// atomic batch through google/nftables, reads it back to report drift,
// counts what it dropped, and tears it down on request.
//
// The ruleset lives in two tables of our own, both named Spec.Table:
//
//   - table inet: redirects TCP 443 and UDP/TCP 53 from the bridge to the
//     daemon's listeners, protects the host from the bridge, rejects every
//     other forwarded packet from the bridge (or, in audit mode, logs and
//     accepts it), drops link-local/metadata destinations, IPv6 and
//     foreign source addresses, and admits only established/related
//     traffic into the bridge;
//   - table bridge: per-port anti-spoofing (ifname . ipv4_addr) and
//     container-to-container isolation, keyed on a set of port names the
//     appliance keeps current with SetPorts (this kernel has no meta
//     ibrname); bridge port isolation (IFLA_BRPORT_ISOLATED) is set through
//     netlink as a second, name-independent layer.
//
// Every rule carries an nft-visible comment "clauderon:<what>" and a
// counter; Verify diffs the kernel against the Spec by those comments.
//
// The package refuses to: touch any table it does not own (Docker's
// iptables-nft tables and any other table are never read for decisions,
// flushed or deleted; there is no FlushRuleset anywhere); shell out to the
// nft binary; decide policy (which hosts, which CIDRs) — it only enforces
// the Spec it is given; manage the Docker network or follow Docker events
// (the appliance does and calls SetPorts). It never tears the ruleset
// down by itself: on daemon exit the rules stay and traffic fails closed.
//
// Be aware: re-applying the ruleset resets its counters (tables are
// re-created); SetPorts does not. Bridge-family reject does not exist on
// this kernel, so bridge-level denials are silent drops; inet-level
// denials of TCP are resets (fast failure) and of other protocols ICMP
// admin-prohibited (rate-limited by the kernel).
package netfilter
