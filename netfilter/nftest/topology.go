package nftest

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// NewNS creates an unnamed network namespace with lo up, without moving
// the calling goroutine. The handle is closed in t.Cleanup; the namespace
// disappears once nothing (socket, link, handle) refers to it any more.
func NewNS(t testing.TB) netns.NsHandle {
	t.Helper()
	ns, err := InNS(netns.None(), func() (netns.NsHandle, error) { return netns.New() })
	if err != nil {
		t.Fatalf("creating network namespace: %v", err)
	}
	t.Cleanup(func() { ns.Close() })
	h := handle(t, ns)
	lo, err := h.LinkByName("lo")
	if err == nil {
		err = h.LinkSetUp(lo)
	}
	if err != nil {
		t.Fatalf("bringing lo up: %v", err)
	}
	return ns
}

// Container is one "container" namespace plugged into the bridge.
type Container struct {
	NS     netns.NsHandle
	HostIf string     // host-side veth, a port of the bridge
	Addr   netip.Addr // IPv4 on the container side
	Addr6  netip.Addr // IPv6 on the container side
}

// Topology is a bridge in a "host" namespace with veth ports into
// container namespaces, and an "outside" namespace behind a routed veth.
//
//	container i (10.77.0.(i+2)/24, fd00:77::(i+2)/64) ─veth─ bridge (10.77.0.1, fd00:77::1)
//	host ─ veth (198.18.0.1, fd00:99::1) ─ outside (198.18.0.2, fd00:99::2, lo: 169.254.169.254)
type Topology struct {
	Host, Outside netns.NsHandle
	Bridge        string
	Subnet        netip.Prefix
	Gateway       netip.Addr
	Gateway6      netip.Addr
	HostOutside   netip.Addr // host's address on the outside link
	OutsideAddr   netip.Addr
	OutsideAddr6  netip.Addr
	Metadata      netip.Addr // 169.254.169.254, routed to Outside
	Containers    []Container
}

// NewTopology builds the topology with n containers. host must be a
// namespace the test owns (e.g. from InNetNS); every other namespace is
// new. suffix makes link names unique.
func NewTopology(t testing.TB, host netns.NsHandle, n int, suffix string) *Topology {
	t.Helper()
	tp := &Topology{
		Host: host, Outside: NewNS(t), Bridge: "clbr" + suffix,
		Subnet:      netip.MustParsePrefix("10.77.0.0/24"),
		Gateway:     netip.MustParseAddr("10.77.0.1"),
		Gateway6:    netip.MustParseAddr("fd00:77::1"),
		HostOutside: netip.MustParseAddr("198.18.0.1"),
		OutsideAddr: netip.MustParseAddr("198.18.0.2"), OutsideAddr6: netip.MustParseAddr("fd00:99::2"),
		Metadata: netip.MustParseAddr("169.254.169.254"),
	}
	h := handle(t, host)
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: tp.Bridge}}
	must(t, "adding bridge", h.LinkAdd(br))
	addAddr(t, h, br, "10.77.0.1/24")
	addAddr(t, h, br, "fd00:77::1/64")
	must(t, "bridge up", h.LinkSetUp(br))
	for i := range n {
		tp.Containers = append(tp.Containers, tp.addContainer(t, h, br, i, suffix))
	}
	tp.addOutside(t, h, suffix)
	for _, sysctl := range []string{"net/ipv4/ip_forward", "net/ipv6/conf/all/forwarding"} {
		if _, err := InNS(host, func() (struct{}, error) {
			return struct{}{}, os.WriteFile("/proc/sys/"+sysctl, []byte("1"), 0o644)
		}); err != nil {
			t.Fatalf("enabling %s: %v", sysctl, err)
		}
	}
	return tp
}

func (tp *Topology) addContainer(t testing.TB, h *netlink.Handle, br *netlink.Bridge, i int, suffix string) Container {
	c := Container{NS: NewNS(t), HostIf: fmt.Sprintf("vh%d%s", i, suffix),
		Addr:  netip.AddrFrom4([4]byte{10, 77, 0, byte(i + 2)}),
		Addr6: netip.MustParseAddr(fmt.Sprintf("fd00:77::%d", i+2))}
	peer := fmt.Sprintf("vc%d%s", i, suffix)
	veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: c.HostIf, MasterIndex: br.Index}, PeerName: peer,
		PeerNamespace: netlink.NsFd(int(c.NS))}
	must(t, "adding veth", h.LinkAdd(veth))
	hostEnd, err := h.LinkByName(c.HostIf)
	must(t, "host veth", err)
	must(t, "host veth up", h.LinkSetUp(hostEnd))
	ch := handle(t, c.NS)
	l, err := ch.LinkByName(peer)
	must(t, "container veth", err)
	addAddr(t, ch, l, fmt.Sprintf("%s/24", c.Addr))
	addAddr(t, ch, l, fmt.Sprintf("%s/64", c.Addr6))
	must(t, "container veth up", ch.LinkSetUp(l))
	must(t, "container default route", ch.RouteAdd(&netlink.Route{Gw: tp.Gateway.AsSlice()}))
	must(t, "container default route v6", ch.RouteAdd(&netlink.Route{Gw: tp.Gateway6.AsSlice(), LinkIndex: l.Attrs().Index}))
	return c
}

func (tp *Topology) addOutside(t testing.TB, h *netlink.Handle, suffix string) {
	name, peer := "vo"+suffix, "vx"+suffix
	must(t, "adding outside veth", h.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name},
		PeerName: peer, PeerNamespace: netlink.NsFd(int(tp.Outside))}))
	l, err := h.LinkByName(name)
	must(t, "outside veth", err)
	addAddr(t, h, l, "198.18.0.1/24")
	addAddr(t, h, l, "fd00:99::1/64")
	must(t, "outside veth up", h.LinkSetUp(l))
	must(t, "metadata route", h.RouteAdd(&netlink.Route{LinkIndex: l.Attrs().Index,
		Dst: &net.IPNet{IP: tp.Metadata.AsSlice(), Mask: net.CIDRMask(32, 32)}, Gw: tp.OutsideAddr.AsSlice()}))
	oh := handle(t, tp.Outside)
	ol, err := oh.LinkByName(peer)
	must(t, "outside peer", err)
	addAddr(t, oh, ol, "198.18.0.2/24")
	addAddr(t, oh, ol, "fd00:99::2/64")
	must(t, "outside peer up", oh.LinkSetUp(ol))
	lo, err := oh.LinkByName("lo")
	must(t, "outside lo", err)
	addAddr(t, oh, lo, "169.254.169.254/32")
	must(t, "outside default route", oh.RouteAdd(&netlink.Route{Gw: tp.HostOutside.AsSlice()}))
	must(t, "outside default route v6", oh.RouteAdd(&netlink.Route{Gw: net.ParseIP("fd00:99::1"), LinkIndex: ol.Attrs().Index}))
}

// AddAddr adds an extra address to a container's interface (to forge
// source addresses).
func (c Container) AddAddr(t testing.TB, cidr string) {
	t.Helper()
	h, l := c.veth(t)
	addAddr(t, h, l, cidr)
}

// veth returns a handle in the container's namespace and its veth.
func (c Container) veth(t testing.TB) (*netlink.Handle, netlink.Link) {
	t.Helper()
	h := handle(t, c.NS)
	links, err := h.LinkList()
	must(t, "listing container links", err)
	for _, l := range links {
		if l.Type() == "veth" {
			return h, l
		}
	}
	t.Fatalf("container has no veth")
	return nil, nil
}

func handle(t testing.TB, ns netns.NsHandle) *netlink.Handle {
	t.Helper()
	h, err := netlink.NewHandleAt(ns)
	must(t, "netlink handle", err)
	t.Cleanup(h.Close)
	return h
}

func addAddr(t testing.TB, h *netlink.Handle, l netlink.Link, cidr string) {
	t.Helper()
	a, err := netlink.ParseAddr(cidr)
	must(t, "parsing "+cidr, err)
	a.Flags = unix.IFA_F_NODAD // no duplicate address detection delay for v6
	must(t, "adding address "+cidr, h.AddrAdd(l, a))
}

func must(t testing.TB, what string, err error) {
	t.Helper()
	if err != nil {
		t.Fatalf("%s: %v", what, err)
	}
}

// FlushNeighbors empties the container's IPv4 neighbor (ARP) table, so
// that a check after a blocked attempt does not wait for a stale
// INCOMPLETE or FAILED entry (ARP retries once a second).
func (c Container) FlushNeighbors(t testing.TB) {
	t.Helper()
	h := handle(t, c.NS)
	neighs, err := h.NeighList(0, netlink.FAMILY_V4)
	must(t, "listing neighbors", err)
	for _, n := range neighs {
		if n.IP.IsLoopback() {
			continue
		}
		n := n
		_ = h.NeighDel(&n) // a concurrent expiry is fine
	}
}

// MAC returns the hardware address of the container's veth.
func (c Container) MAC(t testing.TB) net.HardwareAddr {
	t.Helper()
	_, l := c.veth(t)
	return l.Attrs().HardwareAddr
}

// HostNeighbor returns the host's neighbour table entry for addr on the
// bridge (nil hardware address when there is none or it is unresolved).
func (tp *Topology) HostNeighbor(t testing.TB, addr netip.Addr) net.HardwareAddr {
	t.Helper()
	h := handle(t, tp.Host)
	br, err := h.LinkByName(tp.Bridge)
	must(t, "bridge", err)
	neighs, err := h.NeighList(br.Attrs().Index, netlink.FAMILY_V4)
	must(t, "listing host neighbors", err)
	for _, n := range neighs {
		if a, ok := netip.AddrFromSlice(n.IP); ok && a.Unmap() == addr {
			return n.HardwareAddr
		}
	}
	return nil
}

// ForgetHostNeighbor deletes the host's neighbour entry for addr, if any.
func (tp *Topology) ForgetHostNeighbor(t testing.TB, addr netip.Addr) {
	t.Helper()
	h := handle(t, tp.Host)
	br, err := h.LinkByName(tp.Bridge)
	must(t, "bridge", err)
	_ = h.NeighDel(&netlink.Neigh{LinkIndex: br.Attrs().Index, Family: netlink.FAMILY_V4, IP: addr.AsSlice()})
}

// CutRouteBack removes the outside namespace's IPv4 default route, so it
// can answer only on-link addresses (like a real next hop that knows
// nothing of the bridge subnet), and returns the func that restores it.
func (tp *Topology) CutRouteBack(t testing.TB) (restore func()) {
	t.Helper()
	oh := handle(t, tp.Outside)
	r := &netlink.Route{Gw: tp.HostOutside.AsSlice()}
	must(t, "deleting outside default route", oh.RouteDel(r))
	return func() { must(t, "restoring outside default route", oh.RouteAdd(r)) }
}

// DelAddr removes an address AddAddr added.
func (c Container) DelAddr(t testing.TB, cidr string) {
	t.Helper()
	h := handle(t, c.NS)
	a, err := netlink.ParseAddr(cidr)
	must(t, "parsing "+cidr, err)
	links, err := h.LinkList()
	must(t, "listing container links", err)
	for _, l := range links {
		if l.Type() == "veth" {
			must(t, "deleting address "+cidr, h.AddrDel(l, a))
			return
		}
	}
	t.Fatalf("container has no veth")
}

// PinGateway gives the container a permanent neighbour entry for the
// gateway (the bridge's MAC), so it sends IP without asking by ARP, and
// returns the func that removes it.
func (tp *Topology) PinGateway(t testing.TB, c Container) (unpin func()) {
	t.Helper()
	br, err := handle(t, tp.Host).LinkByName(tp.Bridge)
	must(t, "bridge", err)
	h := handle(t, c.NS)
	links, err := h.LinkList()
	must(t, "listing container links", err)
	for _, l := range links {
		if l.Type() != "veth" {
			continue
		}
		n := &netlink.Neigh{LinkIndex: l.Attrs().Index, Family: netlink.FAMILY_V4, State: netlink.NUD_PERMANENT,
			IP: tp.Gateway.AsSlice(), HardwareAddr: br.Attrs().HardwareAddr}
		must(t, "pinning the gateway neighbour", h.NeighSet(n))
		return func() { _ = h.NeighDel(n) }
	}
	t.Fatalf("container has no veth")
	return nil
}
