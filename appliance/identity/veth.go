package identity

import (
	"fmt"
	"net/netip"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// HostVeth finds the host-side veth of the container endpoint holding ip:
// it opens the container's network namespace (/proc/<pid>/ns/net), finds the
// interface carrying ip, and follows its peer index (IFLA_LINK) back to the
// host namespace. Docker renames host veths on restart, so callers recompute
// it on every event. It satisfies VethResolver.
func HostVeth(pid int, ip netip.Addr) (string, error) {
	ns, err := netns.GetFromPid(pid)
	if err != nil {
		return "", fmt.Errorf("opening network namespace of pid %d: %w", pid, err)
	}
	defer ns.Close()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		return "", fmt.Errorf("netlink handle in namespace of pid %d: %w", pid, err)
	}
	defer h.Close()
	peer, err := peerIndex(h, ip)
	if err != nil {
		return "", err
	}
	l, err := netlink.LinkByIndex(peer)
	if err != nil {
		return "", fmt.Errorf("host link with index %d (peer of %s): %w", peer, ip, err)
	}
	return l.Attrs().Name, nil
}

// peerIndex returns the host-namespace ifindex of the veth peer of the
// interface holding ip inside the namespace behind h.
func peerIndex(h *netlink.Handle, ip netip.Addr) (int, error) {
	links, err := h.LinkList()
	if err != nil {
		return 0, fmt.Errorf("listing container links: %w", err)
	}
	for _, l := range links {
		addrs, err := h.AddrList(l, netlink.FAMILY_V4)
		if err != nil {
			continue
		}
		for _, a := range addrs {
			if got, ok := netip.AddrFromSlice(a.IP); ok && got.Unmap() == ip {
				if l.Attrs().ParentIndex == 0 {
					return 0, fmt.Errorf("container interface %s has no peer index", l.Attrs().Name)
				}
				return l.Attrs().ParentIndex, nil
			}
		}
	}
	return 0, fmt.Errorf("no container interface carries %s", ip)
}
