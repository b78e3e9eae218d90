package netfilter

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/google/nftables"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/clauderon/clauderond/netfilter/nftest"
)

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(t.Output(), &slog.HandlerOptions{Level: slog.LevelDebug}))
}

// rig is the real-kernel fixture: topology, servers, a Kernel and the
// base spec for it.
type rig struct {
	tp   *nftest.Topology
	k    *Kernel
	srv  *servers
	spec Spec
	tls  net.Listener
}

const (
	rigTLSPort = 18443
	rigDNSPort = 18053
)

func newRig(t *testing.T, host netns.NsHandle) *rig {
	sfx := nftest.Suffix()
	tp := nftest.NewTopology(t, host, 2, sfx)
	k, err := NewKernel(KernelConfig{NetNS: host, Logger: testLogger(t)})
	if err != nil {
		t.Fatalf("NewKernel: %v", err)
	}
	r := &rig{tp: tp, k: k, srv: newServers(t)}
	r.spec = Spec{Table: "cl_" + sfx, Bridge: tp.Bridge, Subnet: tp.Subnet, Gateway: tp.Gateway,
		TLSPort: rigTLSPort, DNSPort: rigDNSPort}
	for _, c := range tp.Containers {
		r.spec.Ports = append(r.spec.Ports, Port{IfName: c.HostIf, Addr: c.Addr})
	}
	gw := tp.Gateway.String()
	r.tls = r.srv.tcpMarked(host, fmt.Sprintf("%s:%d", gw, rigTLSPort), DefaultListenerMark, func(c net.Conn) string { return "tls " + originalDst(c) })
	r.srv.udpMarked(host, fmt.Sprintf("%s:%d", gw, rigDNSPort), DefaultListenerMark)
	r.srv.tcpMarked(host, fmt.Sprintf("%s:%d", gw, rigDNSPort), DefaultListenerMark, nil)
	r.srv.tcp(host, "0.0.0.0:2375", nil)
	for _, p := range []int{80, 443, 853, 8080, 53} {
		r.srv.tcp(tp.Outside, fmt.Sprintf("%s:%d", tp.OutsideAddr, p), nil)
	}
	for _, p := range []int{443, 853, 53, 5000} {
		r.srv.udp(tp.Outside, fmt.Sprintf("%s:%d", tp.OutsideAddr, p))
	}
	r.srv.tcp(tp.Outside, fmt.Sprintf("[%s]:80", tp.OutsideAddr6), nil)
	r.srv.tcp(tp.Outside, fmt.Sprintf("%s:80", tp.Metadata), nil)
	c2 := tp.Containers[1]
	r.srv.tcp(c2.NS, fmt.Sprintf("%s:9000", c2.Addr), nil)
	r.srv.tcp(c2.NS, fmt.Sprintf("[%s]:9000", c2.Addr6), nil)
	return r
}

func (r *rig) apply(t *testing.T, s Spec) {
	t.Helper()
	if err := r.k.Apply(context.Background(), s); err != nil {
		t.Fatalf("Apply: %v", err)
	}
}

func (r *rig) outside(proto string, port int) string {
	return fmt.Sprintf("%s %s:%d", proto, r.tp.OutsideAddr, port)
}

func (r *rig) counters(t *testing.T) map[string]uint64 {
	t.Helper()
	cs, err := r.k.Counters(context.Background())
	if err != nil {
		t.Fatalf("Counters: %v", err)
	}
	out := map[string]uint64{}
	for _, c := range cs {
		out[c.Rule] = c.Packets
	}
	return out
}

func (r *rig) expectTCP(t *testing.T, from nftest.Container, local, addr, want string) {
	t.Helper()
	start, timeout := time.Now(), 3*time.Second
	if want == "timeout" {
		timeout = blockWait
	}
	got := dialTCPTimeout(from.NS, local, addr, timeout)
	if got != want {
		t.Errorf("dial tcp %s (from %s%s) = %q, want %q", addr, from.Addr, local, got, want)
	}
	// A reset answers the first SYN; a drop would mean retransmitting it
	// after the 1s initial RTO. The bound sits below that, with room for load.
	if want == "refused" && time.Since(start) > 900*time.Millisecond {
		t.Errorf("dial tcp %s refused after %v, want a fast reset", addr, time.Since(start))
	}
}

func (r *rig) expectNothingReached(t *testing.T, keys ...string) {
	t.Helper()
	for _, k := range keys {
		if n := r.srv.rec.count(k); n != 0 {
			t.Errorf("%d connection(s)/packet(s) reached %s, want none", n, k)
		}
	}
}

// TestKernel_Confinement proves the ruleset with real packets in
// throwaway namespaces: a bridge with two containers, a routed outside.
func TestKernel_Confinement(t *testing.T) {
	host, restore := nftest.InNetNS(t)
	defer restore()
	r := newRig(t, host)
	c1, c2 := r.tp.Containers[0], r.tp.Containers[1]
	out := r.tp.OutsideAddr.String()
	r.apply(t, r.spec)

	t.Run("VerifyIntactAfterApply", func(t *testing.T) {
		d, err := r.k.Verify(context.Background(), r.spec)
		if err != nil || !d.Intact() {
			t.Fatalf("Verify = %v, %v; want intact", d, err)
		}
	})
	t.Run("TestBypass_DirectIPOn443IsRedirected", func(t *testing.T) {
		r.expectTCP(t, c1, "", out+":443", "tls "+out+":443")
		r.expectTCP(t, c1, "", "192.0.2.77:443", "tls 192.0.2.77:443")
		r.expectNothingReached(t, r.outside("tcp", 443))
	})
	t.Run("DNSToAnyAddressLandsOnDNSListener", func(t *testing.T) {
		want := fmt.Sprintf("udp %s:%d q", r.tp.Gateway, rigDNSPort)
		for _, dst := range []string{out + ":53", "192.0.2.53:53", r.tp.Gateway.String() + ":53"} {
			if got := exchangeUDPReply(c1.NS, "", dst, "q"); got != want {
				t.Errorf("udp %s = %q, want %q", dst, got, want)
			}
		}
		r.expectTCP(t, c1, "", out+":53", fmt.Sprintf("hello from %s:%d", r.tp.Gateway, rigDNSPort))
		r.expectNothingReached(t, r.outside("udp", 53), r.outside("tcp", 53))
	})
	t.Run("OtherEgressRejectedFast", func(t *testing.T) {
		r.expectTCP(t, c1, "", out+":80", "refused")
		r.expectTCP(t, c1, "", out+":853", "refused")
		for _, p := range []int{443, 853, 5000} {
			if got := exchangeUDP(c1.NS, "", fmt.Sprintf("%s:%d", out, p), "x"); strings.HasPrefix(got, "udp ") {
				t.Errorf("udp to %s:%d answered %q, want blocked", out, p, got)
			}
		}
		r.expectNothingReached(t, r.outside("tcp", 80), r.outside("tcp", 853), r.outside("udp", 443), r.outside("udp", 853), r.outside("udp", 5000))
	})
	t.Run("MetadataDropped", func(t *testing.T) {
		r.expectTCP(t, c1, "", r.tp.Metadata.String()+":80", "timeout")
		r.expectNothingReached(t, fmt.Sprintf("tcp %s:80", r.tp.Metadata))
	})
	t.Run("HostPortsUnreachable", func(t *testing.T) {
		r.expectTCP(t, c1, "", r.tp.Gateway.String()+":2375", "refused")
		r.expectTCP(t, c1, "", r.tp.HostOutside.String()+":2375", "refused")
		r.expectNothingReached(t, "tcp 0.0.0.0:2375")
	})
	t.Run("ContainerToContainerBlocked", func(t *testing.T) {
		r.expectTCP(t, c1, "", c2.Addr.String()+":9000", "timeout")
		r.expectNothingReached(t, fmt.Sprintf("tcp %s:9000", c2.Addr))
	})
	t.Run("IPv6Blocked", func(t *testing.T) {
		for _, a := range []string{fmt.Sprintf("[%s]:2375", r.tp.Gateway6), fmt.Sprintf("[%s]:80", r.tp.OutsideAddr6), fmt.Sprintf("[%s]:9000", c2.Addr6)} {
			if got := dialTCP(c1.NS, "", a); got == "" || strings.HasPrefix(got, "hello") {
				t.Errorf("dial %s = %q, want blocked", a, got)
			}
		}
		r.expectNothingReached(t, fmt.Sprintf("tcp [%s]:80", r.tp.OutsideAddr6), fmt.Sprintf("tcp [%s]:9000", c2.Addr6), "tcp 0.0.0.0:2375")
	})
	t.Run("ForgedSourceDropped", func(t *testing.T) {
		c1.AddAddr(t, "10.77.0.50/24")
		c1.AddAddr(t, "10.99.0.5/32")
		want := fmt.Sprintf("udp %s:%d q", r.tp.Gateway, rigDNSPort)
		if got := exchangeUDPReply(c1.NS, c1.Addr.String(), out+":53", "q"); got != want {
			t.Errorf("from real address: %q, want %q", got, want)
		}
		for _, forged := range []string{"10.77.0.50", "10.99.0.5"} {
			if got := exchangeUDP(c1.NS, forged, out+":53", "q"); got != "timeout" {
				t.Errorf("from forged %s: %q, want timeout (dropped)", forged, got)
			}
		}
	})
	t.Run("CountersCountDrops", func(t *testing.T) {
		cs := r.counters(t)
		for _, rule := range []string{"clauderon:redirect-443", "clauderon:redirect-dns-udp", "clauderon:reject-tcp",
			"clauderon:reject-quic", "clauderon:reject-dot", "clauderon:drop-metadata", "clauderon:reject-host-tcp",
			"clauderon:antispoof-ip", "clauderon:port-drop-non-ipv4"} {
			if cs[rule] == 0 {
				t.Errorf("counter %s = 0, want > 0 (all: %v)", rule, cs)
			}
		}
	})
	t.Run("NFTablesIsolatesEvenWithoutPortIsolation", func(t *testing.T) {
		// Bridge port isolation (netlink) drops first and silently; take it
		// away, as if setting it had failed, and the bridge table must
		// still keep containers apart, counting what it drops.
		h, err := netlink.NewHandleAt(host)
		if err != nil {
			t.Fatal(err)
		}
		defer h.Close()
		for _, c := range r.tp.Containers {
			l, err := h.LinkByName(c.HostIf)
			if err == nil {
				err = h.LinkSetIsolated(l, false)
			}
			if err != nil {
				t.Fatalf("clearing isolation on %s: %v", c.HostIf, err)
			}
		}
		defer r.apply(t, r.spec)
		c1.FlushNeighbors(t)
		r.expectTCP(t, c1, "", c2.Addr.String()+":9000", "timeout")
		r.expectNothingReached(t, fmt.Sprintf("tcp %s:9000", c2.Addr))
		cs := r.counters(t)
		if cs["clauderon:port-isolate-in"]+cs["clauderon:port-isolate-out"] == 0 {
			t.Errorf("no container-to-container drop counted: %v", cs)
		}
	})
	t.Run("NothingNewIntoTheBridge", func(t *testing.T) {
		// Outside dials a container directly (routed through the host) and
		// through a Docker-style published port (DNAT in an ip nat table
		// that is not ours): both are new connections into the bridge.
		if o, err := nftest.Run(host, "nft", "add table ip dockerlike; add chain ip dockerlike pre { type nat hook prerouting priority dstnat; }; "+
			"add rule ip dockerlike pre tcp dport 8081 dnat to "+c2.Addr.String()+":9000"); err != nil {
			t.Fatalf("adding published-port DNAT: %v\n%s", err, o)
		}
		defer nftest.Run(host, "nft", "delete table ip dockerlike")
		outsider := nftest.Container{NS: r.tp.Outside, Addr: r.tp.OutsideAddr}
		r.expectTCP(t, outsider, "", c2.Addr.String()+":9000", "timeout")
		r.expectTCP(t, outsider, "", r.tp.HostOutside.String()+":8081", "timeout")
		r.expectNothingReached(t, fmt.Sprintf("tcp %s:9000", c2.Addr))
		if r.counters(t)["clauderon:drop-into-bridge"] == 0 {
			t.Errorf("drop-into-bridge counter = 0, want > 0")
		}
	})
	t.Run("AllowIntraBridge", func(t *testing.T) {
		s := r.spec
		s.AllowIntraBridge = true
		r.apply(t, s)
		defer r.apply(t, r.spec)
		c1.FlushNeighbors(t)
		r.expectTCP(t, c1, "", c2.Addr.String()+":9000", fmt.Sprintf("hello from %s:9000", c2.Addr))
		r.expectTCP(t, c1, "", out+":80", "refused")
	})
	t.Run("AllowCIDRException", func(t *testing.T) {
		s := r.spec
		s.AllowCIDRs = []AllowCIDR{{Prefix: netip.PrefixFrom(r.tp.OutsideAddr, 32), Proto: "tcp", Ports: []uint16{8080}}}
		r.apply(t, s)
		defer r.apply(t, r.spec)
		// The next hop knows no route to the bridge subnet: only the
		// masquerade makes the exception work.
		defer r.tp.CutRouteBack(t)()
		r.expectTCP(t, c1, "", out+":8080", fmt.Sprintf("hello from %s:8080", out))
		r.expectTCP(t, c1, "", out+":80", "refused")
		r.expectTCP(t, c1, "", out+":443", "tls "+out+":443")
	})
	t.Run("AuditModePassesWouldDeny", func(t *testing.T) {
		s := r.spec
		s.AuditMode = true
		r.apply(t, s)
		defer r.apply(t, r.spec)
		defer r.tp.CutRouteBack(t)()
		r.expectTCP(t, c1, "", out+":80", fmt.Sprintf("hello from %s:80", out))
		r.expectTCP(t, c1, "", r.tp.Metadata.String()+":80", "timeout")
		r.expectTCP(t, c1, "", r.tp.Gateway.String()+":2375", "refused")
		cs := r.counters(t)
		for _, rule := range []string{"clauderon:would-deny-tcp", "clauderon:masquerade-egress"} {
			if cs[rule] == 0 {
				t.Errorf("counter %s = 0, want > 0", rule)
			}
		}
	})
	t.Run("UnknownContainersFailClosedUntilSetPorts", func(t *testing.T) {
		s := r.spec
		s.Ports = nil
		r.apply(t, s)
		defer r.apply(t, r.spec)
		c1.AddAddr(t, "10.77.0.51/24")
		want := fmt.Sprintf("udp %s:%d q", r.tp.Gateway, rigDNSPort)
		// Before the appliance reports the port, the inet guard alone drops
		// everything from it: its real address, forged ones, IPv6.
		for _, src := range []string{c1.Addr.String(), "10.77.0.51", "10.99.0.5"} {
			if got := exchangeUDP(c1.NS, src, out+":53", "q"); got != "timeout" {
				t.Errorf("from %s before SetPorts: %q, want timeout", src, got)
			}
		}
		if got := dialTCP(c1.NS, "", fmt.Sprintf("[%s]:80", r.tp.OutsideAddr6)); got != "timeout" {
			t.Errorf("IPv6 from unknown port = %q, want timeout", got)
		}
		before := r.counters(t)
		for _, rule := range []string{"clauderon:drop-unknown-saddr", "clauderon:drop-foreign-saddr", "clauderon:drop-ipv6"} {
			if before[rule] == 0 {
				t.Errorf("counter %s = 0 before SetPorts, want > 0", rule)
			}
		}
		if err := r.k.SetPorts(context.Background(), r.spec.Ports); err != nil {
			t.Fatalf("SetPorts: %v", err)
		}
		if got := exchangeUDPReply(c1.NS, c1.Addr.String(), out+":53", "q"); got != want {
			t.Errorf("from real address after SetPorts: %q, want %q", got, want)
		}
		if got := exchangeUDP(c1.NS, "10.77.0.51", out+":53", "q"); got != "timeout" {
			t.Errorf("from forged in-subnet address after SetPorts: %q, want timeout", got)
		}
		if after := r.counters(t)["clauderon:drop-unknown-saddr"]; after < before["clauderon:drop-unknown-saddr"] {
			t.Errorf("drop-unknown-saddr counter %d -> %d across SetPorts, want kept", before["clauderon:drop-unknown-saddr"], after)
		}
		if d, err := r.k.Verify(context.Background(), r.spec); err != nil || !d.Intact() {
			t.Errorf("Verify after SetPorts = %v, %v", d, err)
		}
	})
	t.Run("ApplyTwiceIsIdempotent", func(t *testing.T) {
		first := listBoth(t, host, r.spec.Table)
		r.apply(t, r.spec)
		if second := listBoth(t, host, r.spec.Table); second != first {
			t.Errorf("second Apply changed the ruleset:\nfirst:\n%s\nsecond:\n%s", first, second)
		}
	})
	t.Run("VerifyReportsDriftAndApplyHeals", func(t *testing.T) {
		deleteRule(t, host, r.spec.Table, chainForward, "clauderon:reject-tcp")
		d, err := r.k.Verify(context.Background(), r.spec)
		want := ruleKey("inet "+r.spec.Table, chainForward, "clauderon:reject-tcp")
		if err != nil || !slices.Contains(d.Missing, want) {
			t.Fatalf("Verify = %v, %v; want %q missing", d, err, want)
		}
		// A foreign rule without our comment, and one of ours changed in place.
		if o, err := nftest.Run(host, "nft", "add rule inet "+r.spec.Table+" "+chainForward+" iifname lo accept"); err != nil {
			t.Fatalf("adding foreign rule: %v\n%s", err, o)
		}
		replaceVerdictWithAccept(t, host, r.spec.Table, chainHostIn, "clauderon:reject-host-tcp")
		d, err = r.k.Verify(context.Background(), r.spec)
		if err != nil {
			t.Fatal(err)
		}
		modified := ruleKey("inet "+r.spec.Table, chainHostIn, "clauderon:reject-host-tcp")
		if !slices.Contains(d.Missing, modified) || !slices.Contains(d.Unexpected, modified+" (modified)") ||
			!slices.ContainsFunc(d.Unexpected, func(k string) bool { return strings.HasSuffix(k, "(no comment)") }) {
			t.Errorf("Verify = %v; want %q modified and a rule without comment unexpected", d, modified)
		}
		r.apply(t, r.spec)
		// A table made dormant (no longer filtering) and rules moved.
		if o, err := nftest.Run(host, "nft", "add table inet "+r.spec.Table+" { flags dormant; }"); err != nil {
			t.Fatalf("making table dormant: %v\n%s", err, o)
		}
		moveToTop(t, host, r.spec.Table, chainForward, "clauderon:reject-tcp")
		d, err = r.k.Verify(context.Background(), r.spec)
		if err != nil {
			t.Fatal(err)
		}
		for _, want := range []string{"(dormant", "filter_forward (rules out of order)"} {
			if !slices.ContainsFunc(d.Unexpected, func(k string) bool { return strings.Contains(k, want) }) {
				t.Errorf("Verify = %v; want unexpected %q", d, want)
			}
		}
		r.apply(t, r.spec)
		// The arp table deleted behind our back (ARP poisoning possible again).
		if o, err := nftest.Run(host, "nft", "delete table arp "+r.spec.Table); err != nil {
			t.Fatalf("deleting the arp table: %v\n%s", err, o)
		}
		d, err = r.k.Verify(context.Background(), r.spec)
		if err != nil || !slices.Contains(d.Missing, "table arp "+r.spec.Table) ||
			!slices.Contains(d.Missing, ruleKey("arp "+r.spec.Table, chainARPIn, "clauderon:drop-unverified-arp")) {
			t.Errorf("Verify without the arp table = %v, %v; want the table and its rule missing", d, err)
		}
		r.apply(t, r.spec)
		if d, err := r.k.Verify(context.Background(), r.spec); err != nil || !d.Intact() {
			t.Fatalf("Verify after re-Apply = %v, %v", d, err)
		}
		r.expectTCP(t, c1, "", out+":80", "refused")
		r.expectTCP(t, c1, "", r.tp.Gateway.String()+":2375", "refused")
	})
	t.Run("UnmarkedListenerGetsNothing", func(t *testing.T) {
		// The daemon is down and a local user listens on the listener
		// ports (unprivileged ports: anyone may bind them), on the gateway
		// address and on the wildcard: no socket without the daemon's
		// SO_MARK receives a redirected connection or query.
		const tlsPort, dnsPort = 18444, 18054
		s := r.spec
		s.TLSPort, s.DNSPort = tlsPort, dnsPort
		r.apply(t, s)
		defer r.apply(t, r.spec)
		hijackTLS := fmt.Sprintf("%s:%d", r.tp.Gateway, tlsPort)
		hijackDNS := fmt.Sprintf("0.0.0.0:%d", dnsPort)
		r.srv.tcpMarked(host, hijackTLS, 0, nil)
		r.srv.tcpMarked(host, hijackDNS, 0x1234, nil) // a mark, but not ours
		r.srv.udpMarked(host, hijackDNS, 0)
		r.expectTCP(t, c1, "", out+":443", "timeout")
		r.expectTCP(t, c1, "", out+":53", "timeout")
		if got := exchangeUDP(c1.NS, "", out+":53", "q"); got != "timeout" {
			t.Errorf("udp %s:53 = %q, want timeout", out, got)
		}
		r.expectNothingReached(t, "tcp "+hijackTLS, "tcp "+hijackDNS, "udp "+hijackDNS)
		cs := r.counters(t)
		if cs["clauderon:drop-unowned-listener"] == 0 || cs["clauderon:drop-unowned-listener-udp"] == 0 {
			t.Errorf("unowned-listener drops not counted: %v", cs)
		}
		// The same ports with the daemon's mark work.
		const okTLS = 18445
		s.TLSPort = okTLS
		r.apply(t, s)
		r.srv.tcpMarked(host, fmt.Sprintf("%s:%d", r.tp.Gateway, okTLS), DefaultListenerMark, func(c net.Conn) string { return "marked " + originalDst(c) })
		c1.FlushNeighbors(t)
		r.expectTCP(t, c1, "", out+":443", "marked "+out+":443")
	})
	t.Run("ListenersServeTheBridgeOnly", func(t *testing.T) {
		// The gateway address answers on every interface (weak host
		// model): a routed peer and a host process must not reach the
		// listeners, though their sockets carry the daemon's mark.
		outsider := nftest.Container{NS: r.tp.Outside, Addr: r.tp.OutsideAddr}
		tlsAddr := fmt.Sprintf("%s:%d", r.tp.Gateway, rigTLSPort)
		dnsAddr := fmt.Sprintf("%s:%d", r.tp.Gateway, rigDNSPort)
		before := r.srv.rec.count("tcp "+tlsAddr) + r.srv.rec.count("tcp "+dnsAddr) + r.srv.rec.count("udp "+dnsAddr)
		r.expectTCP(t, outsider, "", tlsAddr, "refused")
		r.expectTCP(t, outsider, "", dnsAddr, "refused")
		if got := exchangeUDP(r.tp.Outside, "", dnsAddr, "q"); got != "timeout" {
			t.Errorf("udp %s from outside = %q, want timeout", dnsAddr, got)
		}
		hostProc := nftest.Container{NS: host, Addr: r.tp.Gateway}
		r.expectTCP(t, hostProc, "", tlsAddr, "refused")
		if got := exchangeUDP(host, "", dnsAddr, "q"); got != "timeout" {
			t.Errorf("udp %s from a host process = %q, want timeout", dnsAddr, got)
		}
		after := r.srv.rec.count("tcp "+tlsAddr) + r.srv.rec.count("tcp "+dnsAddr) + r.srv.rec.count("udp "+dnsAddr)
		if after != before {
			t.Errorf("%d connection(s)/packet(s) from off the bridge reached the listeners, want none", after-before)
		}
		cs := r.counters(t)
		if cs["clauderon:listener-off-bridge-tcp"] == 0 || cs["clauderon:listener-off-bridge-udp"] == 0 {
			t.Errorf("off-bridge listener refusals not counted: %v", cs)
		}
		// From the bridge they still work.
		r.expectTCP(t, c1, "", out+":443", "tls "+out+":443")
	})
	t.Run("ListenersAnswerOnlyRedirectedTraffic", func(t *testing.T) {
		// A container dialling the listener ports itself (not port 443 or
		// 53 of some address, which the redirect rewrites) sees what any
		// other host port shows it: a reset, or silence for UDP.
		tlsAddr := fmt.Sprintf("%s:%d", r.tp.Gateway, rigTLSPort)
		dnsAddr := fmt.Sprintf("%s:%d", r.tp.Gateway, rigDNSPort)
		before := r.srv.rec.count("tcp "+tlsAddr) + r.srv.rec.count("tcp "+dnsAddr) + r.srv.rec.count("udp "+dnsAddr)
		r.expectTCP(t, c1, "", tlsAddr, "refused")
		r.expectTCP(t, c1, "", dnsAddr, "refused")
		if got := exchangeUDP(c1.NS, "", dnsAddr, "q"); got != "timeout" {
			t.Errorf("udp %s dialled directly from a container = %q, want timeout", dnsAddr, got)
		}
		after := r.srv.rec.count("tcp "+tlsAddr) + r.srv.rec.count("tcp "+dnsAddr) + r.srv.rec.count("udp "+dnsAddr)
		if after != before {
			t.Errorf("%d direct connection(s)/packet(s) from a container reached the listeners, want none", after-before)
		}
		// Redirected, they still work.
		r.expectTCP(t, c1, "", out+":443", "tls "+out+":443")
		if got := exchangeUDPReply(c1.NS, "", out+":53", "q"); strings.HasPrefix(got, "timeout") {
			t.Errorf("redirected DNS from a container = %q, want an answer", got)
		}
	})
	t.Run("UnregisteredPortCannotSpoofARegisteredAddress", func(t *testing.T) {
		// c1's port is not (yet) registered; c1 forges c2's address, which
		// the inet guard knows: the bridge never vouched for the pair, so
		// nothing gets through, and its ARP does not reach the host's
		// neighbour table.
		s := r.spec
		s.Ports = []Port{{IfName: c2.HostIf, Addr: c2.Addr}}
		r.apply(t, s)
		defer r.apply(t, r.spec)
		c1.AddAddr(t, c2.Addr.String()+"/32")
		defer c1.DelAddr(t, c2.Addr.String()+"/32")
		defer c1.FlushNeighbors(t)
		dnsKey := fmt.Sprintf("udp %s:%d", r.tp.Gateway, rigDNSPort)
		tlsKey := fmt.Sprintf("tcp %s:%d", r.tp.Gateway, rigTLSPort)
		// ARP first: asking for the gateway from the forged address would
		// teach the host that c2's address lives behind c1's port.
		r.tp.ForgetHostNeighbor(t, c2.Addr)
		c1.FlushNeighbors(t)
		_ = exchangeUDP(c1.NS, c2.Addr.String(), out+":53", "q")
		if mac := r.tp.HostNeighbor(t, c2.Addr); mac != nil && mac.String() == c1.MAC(t).String() {
			t.Errorf("host neighbour entry for %s points at the forging container (%s)", c2.Addr, mac)
		}
		// Then IP, with the gateway's MAC known without ARP.
		defer r.tp.PinGateway(t, c1)()
		beforeDNS, beforeTLS := r.srv.rec.count(dnsKey), r.srv.rec.count(tlsKey)
		for range 3 {
			_ = exchangeUDP(c1.NS, c2.Addr.String(), out+":53", "q")
		}
		_ = dialTCP(c1.NS, c2.Addr.String(), out+":443")
		if got := r.srv.rec.count(dnsKey) - beforeDNS; got != 0 {
			t.Errorf("%d forged DNS queries from an unregistered port reached the listener, want none", got)
		}
		if got := r.srv.rec.count(tlsKey) - beforeTLS; got != 0 {
			t.Errorf("%d forged connections from an unregistered port reached the listener, want none", got)
		}
		cs := r.counters(t)
		for _, rule := range []string{"clauderon:drop-unverified-port", "clauderon:drop-unverified-arp"} {
			if cs[rule] == 0 {
				t.Errorf("counter %s = 0, want > 0 (all: %v)", rule, cs)
			}
		}
		// The registered port still works, with its own address.
		want := fmt.Sprintf("udp %s:%d q", r.tp.Gateway, rigDNSPort)
		if got := exchangeUDPReply(c2.NS, c2.Addr.String(), out+":53", "q"); got != want {
			t.Errorf("from registered %s: %q, want %q", c2.Addr, got, want)
		}
	})
	t.Run("HostOpensNothingIntoTheBridge", func(t *testing.T) {
		// A host process (Docker's userland proxy for a published port,
		// anything local) dialling a container directly or through an
		// output DNAT gets nothing.
		if o, err := nftest.Run(host, "nft", "add table ip proxylike; add chain ip proxylike out { type nat hook output priority -100; }; "+
			"add rule ip proxylike out ip daddr "+r.tp.HostOutside.String()+" tcp dport 8082 dnat to "+c2.Addr.String()+":9000"); err != nil {
			t.Fatalf("adding output DNAT: %v\n%s", err, o)
		}
		defer nftest.Run(host, "nft", "delete table ip proxylike")
		before := r.srv.rec.count(fmt.Sprintf("tcp %s:9000", c2.Addr))
		for _, dst := range []string{c2.Addr.String() + ":9000", r.tp.HostOutside.String() + ":8082"} {
			if got := dialTCP(host, "", dst); strings.HasPrefix(got, "hello") {
				t.Errorf("host dial %s = %q, want blocked", dst, got)
			}
		}
		if got := r.srv.rec.count(fmt.Sprintf("tcp %s:9000", c2.Addr)) - before; got != 0 {
			t.Errorf("%d host connection(s) reached the container, want none", got)
		}
		if r.counters(t)["clauderon:drop-host-to-bridge"] == 0 {
			t.Errorf("drop-host-to-bridge counter = 0, want > 0")
		}
		// Replies from the host to the containers still flow.
		c1.FlushNeighbors(t)
		r.expectTCP(t, c1, "", out+":443", "tls "+out+":443")
	})
	t.Run("FailClosedWithoutDaemon", func(t *testing.T) {
		_ = r.tls.Close()
		r.expectTCP(t, c1, "", out+":443", "refused")
		r.expectNothingReached(t, r.outside("tcp", 443))
	})
	t.Run("TeardownLeavesOtherTables", func(t *testing.T) {
		if o, err := nftest.Run(host, "nft", "add table inet other; add chain inet other keep"); err != nil {
			t.Fatalf("creating table inet other: %v\n%s", err, o)
		}
		if err := r.k.Teardown(context.Background()); err != nil {
			t.Fatalf("Teardown: %v", err)
		}
		tables, _ := nftest.Run(host, "nft", "list", "tables")
		if !strings.Contains(tables, "table inet other") || strings.Contains(tables, r.spec.Table) {
			t.Errorf("after Teardown tables = %q, want inet other kept and %s gone", tables, r.spec.Table)
		}
		if err := r.k.Teardown(context.Background()); !errors.Is(err, ErrNotApplied) {
			t.Errorf("second Teardown = %v, want ErrNotApplied", err)
		}
		if _, err := r.k.Verify(context.Background(), r.spec); !errors.Is(err, ErrNotApplied) {
			t.Errorf("Verify after Teardown = %v, want ErrNotApplied", err)
		}
	})
}

func listBoth(t *testing.T, ns netns.NsHandle, table string) string {
	return nftest.NFTList(t, ns, "inet", table) + nftest.NFTList(t, ns, "bridge", table) + nftest.NFTList(t, ns, "arp", table)
}

// deleteRule removes the rule with the given comment behind the
// Manager's back, as an operator with `nft delete rule` would.
func deleteRule(t *testing.T, ns netns.NsHandle, table, chain, comment string) {
	t.Helper()
	c, err := nftables.New(nftables.WithNetNSFd(int(ns)))
	if err != nil {
		t.Fatal(err)
	}
	nt := &nftables.Table{Family: nftables.TableFamilyINet, Name: table}
	rules, err := tableRules(c, nt)
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rules {
		if r.chain.Name == chain && r.comment == comment {
			if err := c.DelRule(r.rule); err != nil {
				t.Fatal(err)
			}
			if err := c.Flush(); err != nil {
				t.Fatal(err)
			}
			return
		}
	}
	t.Fatalf("rule %s not found in chain %s", comment, chain)
}

// replaceVerdictWithAccept rewrites the rule with the given comment in
// place, keeping the comment, so that only its content differs.
func replaceVerdictWithAccept(t *testing.T, ns netns.NsHandle, table, chain, comment string) {
	t.Helper()
	c, err := nftables.New(nftables.WithNetNSFd(int(ns)))
	if err != nil {
		t.Fatal(err)
	}
	rules, err := tableRules(c, &nftables.Table{Family: nftables.TableFamilyINet, Name: table})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rules {
		if r.chain.Name != chain || r.comment != comment {
			continue
		}
		nr := *r.rule
		nr.Exprs = Rule{Matches: []Match{IfName{Name: "lo"}}, Counter: true, Verdict: Accept{}}.compile(&exprCtx{})
		c.ReplaceRule(&nr)
		if err := c.Flush(); err != nil {
			t.Fatalf("replacing rule: %v", err)
		}
		return
	}
	t.Fatalf("rule %s not found", comment)
}

func TestKernel_SequencingAndProbe(t *testing.T) {
	host, restore := nftest.InNetNS(t)
	defer restore()
	ctx := context.Background()
	caps := Probe(ctx, KernelConfig{NetNS: host})
	if err := caps.Err(); err != nil || !caps.NFTables || !caps.InetNAT || !caps.Bridge || !caps.ARP {
		t.Fatalf("Probe = %+v, %v; want inet nat and bridge support", caps, err)
	}
	t.Logf("probe: %+v", caps)
	if tables, _ := nftest.Run(host, "nft", "list", "tables"); strings.TrimSpace(tables) != "" {
		t.Errorf("Probe left tables behind: %q", tables)
	}
	k, err := NewKernel(KernelConfig{NetNS: host})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := k.Verify(ctx, baseSpec()); !errors.Is(err, ErrNotApplied) {
		t.Errorf("Verify before Apply = %v, want ErrNotApplied", err)
	}
	if err := k.SetPorts(ctx, testPorts); !errors.Is(err, ErrNotApplied) {
		t.Errorf("SetPorts before Apply = %v, want ErrNotApplied", err)
	}
	if _, err := k.Counters(ctx); !errors.Is(err, ErrNotApplied) {
		t.Errorf("Counters before Apply = %v, want ErrNotApplied", err)
	}
	if err := k.Teardown(ctx); !errors.Is(err, ErrNotApplied) {
		t.Errorf("Teardown before Apply = %v, want ErrNotApplied", err)
	}
	bad := baseSpec()
	bad.TLSPort = 0
	if err := k.Apply(ctx, bad); err == nil {
		t.Errorf("Apply(invalid spec) = nil")
	}
	// A spec without ports needs no bridge; a restarted daemon (new Kernel)
	// can tear down what an earlier one applied.
	if err := k.Apply(ctx, baseSpec()); err != nil {
		t.Fatalf("Apply without bridge or ports: %v", err)
	}
	k2, _ := NewKernel(KernelConfig{NetNS: host})
	if err := k2.Teardown(ctx); err != nil {
		t.Fatalf("Teardown from a fresh Kernel: %v", err)
	}
	if err := k.Teardown(ctx); !errors.Is(err, ErrNotApplied) {
		t.Errorf("Teardown after another Kernel's Teardown = %v, want ErrNotApplied", err)
	}
}

// BenchmarkKernel_Apply measures one atomic re-apply (add, delete, add
// table + everything) and one SetPorts, in a throwaway namespace.
func BenchmarkKernel_Apply(b *testing.B) {
	host, restore := nftest.InNetNS(b)
	defer restore()
	k, err := NewKernel(KernelConfig{NetNS: host})
	if err != nil {
		b.Fatal(err)
	}
	s, _ := flagSpec(false, true, false, false)
	ctx := context.Background()
	b.Run("Apply", func(b *testing.B) {
		for b.Loop() {
			if err := k.Apply(ctx, s); err != nil {
				b.Fatal(err)
			}
		}
	})
	b.Run("SetPorts", func(b *testing.B) {
		for b.Loop() {
			if err := k.SetPorts(ctx, nil); err != nil {
				b.Fatal(err)
			}
		}
	})
}

// moveToTop deletes the rule with the given comment and inserts it again
// at the top of its chain: same content, other order.
func moveToTop(t *testing.T, ns netns.NsHandle, table, chain, comment string) {
	t.Helper()
	c, err := nftables.New(nftables.WithNetNSFd(int(ns)))
	if err != nil {
		t.Fatal(err)
	}
	rules, err := tableRules(c, &nftables.Table{Family: nftables.TableFamilyINet, Name: table})
	if err != nil {
		t.Fatal(err)
	}
	for _, r := range rules {
		if r.chain.Name != chain || r.comment != comment {
			continue
		}
		if err := c.DelRule(r.rule); err != nil {
			t.Fatal(err)
		}
		c.InsertRule(&nftables.Rule{Table: r.rule.Table, Chain: r.rule.Chain, Exprs: r.rule.Exprs, UserData: r.rule.UserData})
		if err := c.Flush(); err != nil {
			t.Fatalf("moving rule: %v", err)
		}
		return
	}
	t.Fatalf("rule %s not found", comment)
}
