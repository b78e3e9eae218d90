package bridge

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"

	"github.com/vishvananda/netlink"
)

// ErrNoLinuxBridge says a Kubernetes node's CNI does not put pods on a
// Linux bridge, so node mode cannot confine them.
var ErrNoLinuxBridge = errors.New("node mode needs a CNI that puts pods on a Linux bridge (the bridge plugin, flannel)")

// Links is the part of netlink AdoptCNI reads; tests fake it.
type Links interface {
	LinkList() ([]netlink.Link, error)
	AddrList(link netlink.Link, family int) ([]netlink.Addr, error)
}

type hostLinks struct{}

func (hostLinks) LinkList() ([]netlink.Link, error) { return consistent(netlink.LinkList) }
func (hostLinks) AddrList(l netlink.Link, family int) ([]netlink.Addr, error) {
	return consistent(func() ([]netlink.Addr, error) { return netlink.AddrList(l, family) })
}

// consistent retries a netlink dump the kernel interrupted (links changed
// while it was read) until one reads whole, a few times at most.
func consistent[T any](dump func() ([]T, error)) ([]T, error) {
	for attempt := 1; ; attempt++ {
		out, err := dump()
		if !errors.Is(err, netlink.ErrDumpInterrupted) || attempt == 5 {
			return out, err
		}
	}
}

// HostLinks reads the host's links through netlink, whole: a dump the
// kernel interrupted is read again (consistent).
var HostLinks Links = hostLinks{}

// AdoptCNI finds a Kubernetes node's pod bridge (node mode): the Linux
// bridge named name whose address in subnet is the pods' gateway. The CNI
// creates the bridge with the node's first pod, so a missing bridge is
// not an error: the Network then says Pending, with the gateway the
// bridge plugin will give it (the subnet's first host). CNIs that route
// pods without a Linux bridge (Calico, Cilium) are refused, by name.
//
// An invalid subnet (network.subnet: auto) takes the bridge's first IPv4
// address and its prefix; with no bridge yet the Network stays Pending
// with no subnet, for the caller to find elsewhere.
func AdoptCNI(links Links, name string, subnet netip.Prefix) (Network, error) {
	n := Network{Name: "kubernetes", Bridge: name, Subnet: subnet, Pending: true}
	if subnet.IsValid() {
		n.Gateway = GatewayFor(subnet)
	}
	all, err := links.LinkList()
	if err != nil {
		return Network{}, fmt.Errorf("listing links: %w", err)
	}
	var br netlink.Link
	var others []string
	for _, l := range all {
		a := l.Attrs()
		switch {
		case a.Name == name:
			br = l
		case a.Name == "cilium_host" || a.Name == "cilium_net":
			others = append(others, "Cilium ("+a.Name+")")
		case a.Name == "vxlan.calico" || strings.HasPrefix(a.Name, "cali"):
			others = append(others, "Calico ("+a.Name+")")
		case a.Name == "kube-ipvs0":
			// IPVS makes every ClusterIP a local address: Services would
			// meet the host rules, and IPVS's own forwarding leaves through
			// the output path, where nothing judges the endpoint.
			return Network{}, errors.New("kube-proxy runs in IPVS mode (kube-ipvs0): node mode needs kube-proxy in iptables or nftables mode")
		}
	}
	if br == nil {
		if len(others) > 0 {
			return Network{}, fmt.Errorf("%w; this node runs %s, which routes pods without one (and may skip netfilter), so clauderond cannot confine them", ErrNoLinuxBridge, others[0])
		}
		return n, nil
	}
	if br.Type() != "bridge" {
		return Network{}, fmt.Errorf("%w; %s is a %s link, not a Linux bridge: set network.bridge to the CNI's bridge (e.g. cni0)", ErrNoLinuxBridge, name, br.Type())
	}
	addrs, err := links.AddrList(br, netlink.FAMILY_V4)
	if err != nil {
		return Network{}, fmt.Errorf("listing addresses of %s: %w", name, err)
	}
	var seen []string
	for _, a := range addrs {
		ip, ok := netip.AddrFromSlice(a.IP)
		if !ok {
			continue
		}
		ip = ip.Unmap()
		if !subnet.IsValid() && ip.Is4() {
			ones, _ := a.Mask.Size()
			n.Subnet, n.Gateway, n.Pending = netip.PrefixFrom(ip, ones).Masked(), ip, false
			return n, nil
		}
		if subnet.Contains(ip) {
			n.Gateway, n.Pending = ip, false
			return n, nil
		}
		seen = append(seen, ip.String())
	}
	if len(seen) > 0 {
		return Network{}, fmt.Errorf("bridge %s carries %s, none in network.subnet %s: set network.subnet to this node's pod subnet (kubectl get node -o jsonpath='{.spec.podCIDR}')",
			name, strings.Join(seen, ", "), subnet)
	}
	return n, nil
}

// LinkExists reports whether the host has a link named name.
func LinkExists(name string) bool {
	_, err := netlink.LinkByName(name)
	return err == nil
}
