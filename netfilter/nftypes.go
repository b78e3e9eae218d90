package netfilter

import (
	"fmt"
	"net/netip"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
)

func nfFamily(f Family) nftables.TableFamily {
	switch f {
	case FamilyBridge:
		return nftables.TableFamilyBridge
	case FamilyARP:
		return nftables.TableFamilyARP
	}
	return nftables.TableFamilyINet
}

var hooks = map[string]nftables.ChainHook{
	"prerouting":  *nftables.ChainHookPrerouting,
	"input":       *nftables.ChainHookInput,
	"forward":     *nftables.ChainHookForward,
	"output":      *nftables.ChainHookOutput,
	"postrouting": *nftables.ChainHookPostrouting,
}

// arpHooks are the arp family's hook numbers (NF_ARP_IN, ...): they differ
// from the inet and bridge ones.
var arpHooks = map[string]nftables.ChainHook{"input": 0, "output": 1}

func familyHooks(f nftables.TableFamily) map[string]nftables.ChainHook {
	if f == nftables.TableFamilyARP {
		return arpHooks
	}
	return hooks
}

func hookName(f nftables.TableFamily, h *nftables.ChainHook) string {
	if h == nil {
		return "none"
	}
	for n, v := range familyHooks(f) {
		if *h == v {
			return n
		}
	}
	return fmt.Sprintf("hook%d", *h)
}

func nfChain(t *nftables.Table, ch Chain) *nftables.Chain {
	accept := nftables.ChainPolicyAccept
	return &nftables.Chain{
		Name: ch.Name, Table: t, Type: nftables.ChainType(ch.Type),
		Hooknum:  nftables.ChainHookRef(familyHooks(t.Family)[ch.Hook]),
		Priority: nftables.ChainPriorityRef(nftables.ChainPriority(ch.Priority)),
		Policy:   &accept,
	}
}

func nfSet(t *nftables.Table, name string, kind SetKind) *nftables.Set {
	s := &nftables.Set{Table: t, Name: name, KeyType: nftables.TypeIFName, KeyByteOrder: binaryutil.NativeEndian}
	switch kind {
	case SetIfNameAddrs:
		s.KeyType = nftables.MustConcatSetType(nftables.TypeIFName, nftables.TypeIPAddr)
		s.Concatenation = true
	case SetAddrs:
		s.KeyType, s.KeyByteOrder = nftables.TypeIPAddr, binaryutil.BigEndian
	}
	return s
}

func setElements(kind SetKind, ports []Port) []nftables.SetElement {
	out := make([]nftables.SetElement, 0, len(ports))
	for _, p := range ports {
		var key []byte
		switch kind {
		case SetIfNames:
			key = ifname(p.IfName)
		case SetIfNameAddrs:
			a := p.Addr.As4()
			key = append(ifname(p.IfName), a[:]...)
		case SetAddrs:
			a := p.Addr.As4()
			key = a[:]
		}
		out = append(out, nftables.SetElement{Key: key})
	}
	return out
}

// decodeElement turns a set element key back into a Port.
func decodeElement(key []byte) Port {
	var p Port
	if len(key) == 4 {
		return Port{Addr: netip.AddrFrom4([4]byte(key))}
	}
	n := min(len(key), ifNameSize)
	p.IfName = strings.TrimRight(string(key[:n]), "\x00")
	if len(key) == ifNameSize+4 {
		p.Addr = netip.AddrFrom4([4]byte(key[ifNameSize:]))
	}
	return p
}
