package netfilter

import (
	"fmt"
	"net"
	"net/netip"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/clauderon/clauderond/netfilter/nftest"
)

// TestKernel_ClusterForeignPods proves node mode's rules for the pods of
// other nodes with real packets: the rig's outside namespace plays another
// node, sending from a pod address (10.77.5.9, in the cluster's pod CIDR
// but not on this bridge). It reaches this node's pods and the API server
// endpoint, and nothing else: not this host's services through its
// pod-CIDR address, not onward out of the cluster through this node (to a
// "far" network routed behind this host).
func TestKernel_ClusterForeignPods(t *testing.T) {
	host, restore := nftest.InNetNS(t)
	defer restore()
	r := newRig(t, host)
	c2 := r.tp.Containers[1]
	foreignPod := netip.MustParseAddr("10.77.5.9")
	addOnLo(t, r.tp.Outside, foreignPod)
	h, err := netlink.NewHandleAt(host)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	// The route back to the other node's pods, as flannel would install.
	if err := h.RouteAdd(&netlink.Route{Dst: &net.IPNet{IP: net.IP{10, 77, 5, 0}, Mask: net.CIDRMask(24, 32)},
		Gw: r.tp.OutsideAddr.AsSlice()}); err != nil {
		t.Fatal(err)
	}
	far, farNS := addFar(t, h)
	farAddr := fmt.Sprintf("%s:80", far)
	r.srv.tcp(farNS, farAddr, nil)
	s := r.spec
	s.AllowIntraBridge = true
	s.Cluster = Cluster{PodCIDRs: []netip.Prefix{netip.MustParsePrefix("10.77.0.0/16")},
		APIServer: []netip.AddrPort{netip.AddrPortFrom(r.tp.HostOutside, 2375)}, HostToPods: true}
	r.apply(t, s)
	from := nftest.Container{NS: r.tp.Outside, Addr: foreignPod}
	local := foreignPod.String()

	// Allowed: a pod of this node, and the API server endpoint.
	c2Addr := fmt.Sprintf("%s:9000", c2.Addr)
	r.expectTCP(t, from, local, c2Addr, "hello from "+c2Addr)
	api := fmt.Sprintf("%s:2375", r.tp.HostOutside)
	r.expectTCP(t, from, local, api, "hello from 0.0.0.0:2375")
	// Refused: this host's service through its address in the pod CIDR,
	// and a network beyond this node.
	r.expectTCP(t, from, local, fmt.Sprintf("%s:2375", r.tp.Gateway), "timeout")
	r.expectTCP(t, from, local, farAddr, "timeout")
	r.expectNothingReached(t, "tcp "+farAddr)
	cs := r.counters(t)
	if cs["clauderon:host-foreign-pods-0"] == 0 || cs["clauderon:transit-foreign-pods-0"] == 0 {
		t.Errorf("counters host-foreign-pods-0=%d transit-foreign-pods-0=%d, want both hit",
			cs["clauderon:host-foreign-pods-0"], cs["clauderon:transit-foreign-pods-0"])
	}
	// Without the cluster rules the same packets get through: the test
	// sees what it claims to.
	r.apply(t, r.spec)
	r.expectTCP(t, from, local, farAddr, "hello from "+farAddr)
	r.expectTCP(t, from, local, fmt.Sprintf("%s:2375", r.tp.Gateway), "hello from 0.0.0.0:2375")
}

// addFar routes 203.0.113.0/24 from the host (h) to a new namespace
// holding 203.0.113.2, and returns that address and namespace.
func addFar(t *testing.T, h *netlink.Handle) (netip.Addr, netns.NsHandle) {
	t.Helper()
	ns := nftest.NewNS(t)
	name, peer := "vf"+nftest.Suffix(), "vg"+nftest.Suffix()
	if err := h.LinkAdd(&netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name}, PeerName: peer, PeerNamespace: netlink.NsFd(int(ns))}); err != nil {
		t.Fatal(err)
	}
	fh, err := netlink.NewHandleAt(ns)
	if err != nil {
		t.Fatal(err)
	}
	defer fh.Close()
	set := func(hd *netlink.Handle, link, cidr string) {
		l, err := hd.LinkByName(link)
		if err == nil {
			p := netip.MustParsePrefix(cidr)
			err = hd.AddrAdd(l, &netlink.Addr{IPNet: &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), 32)}})
		}
		if err == nil {
			err = hd.LinkSetUp(l)
		}
		if err != nil {
			t.Fatalf("%s %s: %v", link, cidr, err)
		}
	}
	set(h, name, "203.0.113.1/24")
	set(fh, peer, "203.0.113.2/24")
	if err := fh.RouteAdd(&netlink.Route{Gw: net.IP{203, 0, 113, 1}}); err != nil {
		t.Fatal(err)
	}
	return netip.MustParseAddr("203.0.113.2"), ns
}

// addOnLo gives ns an extra address on its loopback.
func addOnLo(t *testing.T, ns netns.NsHandle, a netip.Addr) {
	t.Helper()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	lo, err := h.LinkByName("lo")
	if err == nil {
		err = h.AddrAdd(lo, &netlink.Addr{IPNet: &net.IPNet{IP: a.AsSlice(), Mask: net.CIDRMask(32, 32)}})
	}
	if err != nil {
		t.Fatalf("adding %s: %v", a, err)
	}
}
