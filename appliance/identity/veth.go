package identity

import (
	"errors"
	"fmt"
	"net/netip"

	"github.com/clauderon/clauderond/appliance/bridge"
	"github.com/vishvananda/netlink"
)

// BridgeVeth returns the VethResolver for containers attached to bridge.
//
// It finds a container's host-side veth from the host's network namespace
// only, so the daemon needs no CAP_SYS_ADMIN (setns) and no ptrace access
// to the container's processes (opening /proc/<pid>/ns/net): the kernel
// names the container's namespace by pid (RTM_GETNSID with NETNSA_PID),
// and each host veth on the bridge names the namespace of its peer
// (IFLA_LINK_NETNSID). The veth on our bridge whose peer lives in the
// container's namespace is the container's endpoint: one namespace has one
// endpoint per Docker network. Nothing here is learnt from the container's
// own frames (no FDB, no ARP), so a container cannot steer it.
//
// ip is the address Docker reports for the endpoint; it is not checked
// against the namespace (that would mean entering it): the anti-spoofing
// set pairs the port found here with that address.
func BridgeVeth(bridge string) VethResolver {
	return func(pid int, _ netip.Addr) (string, error) {
		return bridgeVeth(kernelLinks{}, bridge, pid)
	}
}

// linkSource is the netlink surface bridgeVeth uses, faked in unit tests.
type linkSource interface {
	LinkByName(name string) (netlink.Link, error)
	LinkList() ([]netlink.Link, error)
	GetNetNsIdByPid(pid int) (int, error)
}

type kernelLinks struct{}

func (kernelLinks) LinkByName(name string) (netlink.Link, error) { return netlink.LinkByName(name) }
func (kernelLinks) LinkList() ([]netlink.Link, error)            { return bridge.HostLinks.LinkList() }
func (kernelLinks) GetNetNsIdByPid(pid int) (int, error)         { return netlink.GetNetNsIdByPid(pid) }

// errNoNsid: the host has no id for the container's namespace yet.
var errNoNsid = errors.New("no namespace id assigned")

func bridgeVeth(ls linkSource, bridge string, pid int) (string, error) {
	br, err := ls.LinkByName(bridge)
	if err != nil {
		return "", fmt.Errorf("bridge %s: %w", bridge, err)
	}
	// Listing the links first makes the kernel assign ids to the peer
	// namespaces it reports (IFLA_LINK_NETNSID), so the lookup by pid
	// below finds one for any namespace that has a veth on the host.
	links, err := ls.LinkList()
	if err != nil {
		return "", fmt.Errorf("listing host links: %w", err)
	}
	nsid, err := ls.GetNetNsIdByPid(pid)
	if err == nil && nsid < 0 {
		err = errNoNsid
	}
	if err != nil {
		return "", fmt.Errorf("namespace id of pid %d: %w", pid, err)
	}
	var found []string
	for _, l := range links {
		a := l.Attrs()
		if l.Type() == "veth" && a.MasterIndex == br.Attrs().Index && a.NetNsID == nsid {
			found = append(found, a.Name)
		}
	}
	switch len(found) {
	case 0:
		return "", fmt.Errorf("no veth on %s has its peer in the network namespace of pid %d (nsid %d)", bridge, pid, nsid)
	case 1:
		return found[0], nil
	default:
		return "", fmt.Errorf("%d veths on %s lead into the network namespace of pid %d (%v); refusing to pick one", len(found), bridge, pid, found)
	}
}
