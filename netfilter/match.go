package netfilter

import (
	"encoding/binary"
	"fmt"
	"net/netip"
	"slices"
	"strings"

	"github.com/google/nftables"
	"github.com/google/nftables/binaryutil"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// Match is one condition of a Rule. Each match knows its nft text and the
// kernel expressions it compiles to; the set of matches is closed (only
// this package implements it) so every rule we emit is one we test.
type Match interface {
	String() string
	exprs(x *exprCtx) []expr.Any
}

// IfName matches the input (or output) interface name exactly (or, with
// Neg, every other name).
type IfName struct {
	Out  bool
	Name string
	Neg  bool
}

func (m IfName) key() (expr.MetaKey, string) {
	if m.Out {
		return expr.MetaKeyOIFNAME, "oifname"
	}
	return expr.MetaKeyIIFNAME, "iifname"
}

func (m IfName) String() string {
	_, k := m.key()
	return fmt.Sprintf("%s %s%q", k, notEq(m.Neg), m.Name)
}

func (m IfName) exprs(*exprCtx) []expr.Any {
	k, _ := m.key()
	return []expr.Any{&expr.Meta{Key: k, Register: 1}, compare(ifname(m.Name), m.Neg)}
}

// IfNameInSet matches the input (or output) interface name against a named
// ifname set.
type IfNameInSet struct {
	Out bool
	Set string
}

func (m IfNameInSet) String() string {
	_, k := IfName{Out: m.Out}.key()
	return fmt.Sprintf("%s @%s", k, m.Set)
}

func (m IfNameInSet) exprs(x *exprCtx) []expr.Any {
	k, _ := IfName{Out: m.Out}.key()
	return []expr.Any{&expr.Meta{Key: k, Register: 1}, x.namedSet(m.Set, false)}
}

// NFProto matches the layer 3 protocol in the inet family.
type NFProto struct{ IPv6 bool }

func (m NFProto) String() string {
	if m.IPv6 {
		return "meta nfproto ipv6"
	}
	return "meta nfproto ipv4"
}

func (m NFProto) exprs(*exprCtx) []expr.Any {
	p := byte(unix.NFPROTO_IPV4)
	if m.IPv6 {
		p = unix.NFPROTO_IPV6
	}
	return []expr.Any{&expr.Meta{Key: expr.MetaKeyNFPROTO, Register: 1}, cmpEq([]byte{p})}
}

func protoNumber(proto string) byte {
	switch proto {
	case "tcp":
		return unix.IPPROTO_TCP
	case "udp":
		return unix.IPPROTO_UDP
	}
	panic("netfilter: unknown protocol " + proto) // unreachable: specs are validated
}

// L4Proto matches the transport protocol ("tcp" or "udp").
type L4Proto struct{ Proto string }

func (m L4Proto) String() string { return "meta l4proto " + m.Proto }

func (m L4Proto) exprs(*exprCtx) []expr.Any {
	return []expr.Any{&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1}, cmpEq([]byte{protoNumber(m.Proto)})}
}

// DPort matches the transport protocol and one of the destination ports.
type DPort struct {
	Proto string
	Ports []uint16
}

func (m DPort) String() string {
	if len(m.Ports) == 1 {
		return fmt.Sprintf("%s dport %d", m.Proto, m.Ports[0])
	}
	ps := make([]string, len(m.Ports))
	for i, p := range m.Ports {
		ps[i] = fmt.Sprint(p)
	}
	return fmt.Sprintf("%s dport { %s }", m.Proto, strings.Join(ps, ", "))
}

func (m DPort) exprs(x *exprCtx) []expr.Any {
	out := L4Proto{Proto: m.Proto}.exprs(x)
	out = append(out, &expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 2, Len: 2})
	if len(m.Ports) == 1 {
		return append(out, cmpEq(be16(m.Ports[0])))
	}
	elems := make([][]byte, len(m.Ports))
	for i, p := range m.Ports {
		elems[i] = be16(p)
	}
	return append(out, x.anonSet(nftables.TypeInetService, elems, false))
}

// Addr matches the IPv4 source (or destination) address against a prefix.
// The caller establishes that the packet is IPv4 (NFProto or EtherType).
type Addr struct {
	Dst    bool
	Prefix netip.Prefix
	Neg    bool
}

func (m Addr) String() string {
	dir, p := "saddr", m.Prefix.String()
	if m.Dst {
		dir = "daddr"
	}
	if m.Prefix.IsSingleIP() {
		p = m.Prefix.Addr().String()
	}
	return fmt.Sprintf("ip %s %s%s", dir, notEq(m.Neg), p)
}

func (m Addr) exprs(*exprCtx) []expr.Any {
	off := uint32(12)
	if m.Dst {
		off = 16
	}
	out := []expr.Any{&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: 4}}
	if !m.Prefix.IsSingleIP() {
		mask := make([]byte, 4)
		binary.BigEndian.PutUint32(mask, ^uint32(0)<<(32-m.Prefix.Bits()))
		out = append(out, &expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 4, Mask: mask, Xor: make([]byte, 4)})
	}
	a := m.Prefix.Masked().Addr().As4()
	return append(out, compare(a[:], m.Neg))
}

// AddrNotInSet matches IPv4 packets whose source address is not in the
// named ipv4_addr set. The caller establishes that the packet is IPv4.
type AddrNotInSet struct{ Set string }

func (m AddrNotInSet) String() string { return fmt.Sprintf("ip saddr != @%s", m.Set) }

func (m AddrNotInSet) exprs(x *exprCtx) []expr.Any {
	return []expr.Any{
		&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseNetworkHeader, Offset: 12, Len: 4},
		x.namedSet(m.Set, true),
	}
}

// CtEstablished matches conntrack state established or related.
type CtEstablished struct{}

func (CtEstablished) String() string { return "ct state established,related" }

func (CtEstablished) exprs(*exprCtx) []expr.Any {
	return ctAnyBit(expr.CtKeySTATE, expr.CtStateBitESTABLISHED|expr.CtStateBitRELATED)
}

// ctAnyBit matches when the conntrack field key has any of bits set.
func ctAnyBit(key expr.CtKey, bits uint32) []expr.Any {
	return []expr.Any{
		&expr.Ct{Register: 1, Key: key},
		andXor(bits, 0),
		compare(make([]byte, 4), true),
	}
}

// CtNew matches conntrack state new: the first packet of a connection.
type CtNew struct{}

func (CtNew) String() string { return "ct state new" }

func (CtNew) exprs(*exprCtx) []expr.Any {
	return ctAnyBit(expr.CtKeySTATE, expr.CtStateBitNEW)
}

// CtDNAT matches a packet of a connection whose destination conntrack
// rewrote (the redirect is a DNAT to the host itself): on the listener
// ports it tells a redirected connection from a container that dials the
// listener directly.
type CtDNAT struct{}

func (CtDNAT) String() string { return "ct status dnat" }

func (CtDNAT) exprs(*exprCtx) []expr.Any {
	const ipsDstNat = 1 << 5 // IPS_DST_NAT in linux/netfilter/nf_conntrack_common.h
	return ctAnyBit(expr.CtKeySTATUS, ipsDstNat)
}

// SocketMark matches packets whose local destination socket (looked up
// by the kernel for this packet, listening or connected) carries SO_MARK
// Mark (with Neg: carries another mark). Without a socket it never
// matches, either way. Only a process with CAP_NET_ADMIN can set SO_MARK.
type SocketMark struct {
	Mark uint32
	Neg  bool
}

func (m SocketMark) String() string {
	return fmt.Sprintf("socket mark %s0x%08x", notEq(m.Neg), m.Mark)
}

func (m SocketMark) exprs(*exprCtx) []expr.Any {
	return []expr.Any{&expr.Socket{Key: expr.SocketKeyMark, Register: 1}, compare(binaryutil.NativeEndian.PutUint32(m.Mark), m.Neg)}
}

// MarkBits matches packets whose meta mark has (or, with Unset, lacks)
// every bit of Bits.
type MarkBits struct {
	Bits  uint32
	Unset bool
}

func (m MarkBits) String() string {
	if m.Unset {
		return fmt.Sprintf("meta mark & 0x%08x == 0x00000000", m.Bits)
	}
	return fmt.Sprintf("meta mark & 0x%08x == 0x%08x", m.Bits, m.Bits)
}

func (m MarkBits) exprs(*exprCtx) []expr.Any {
	want := m.Bits
	if m.Unset {
		want = 0
	}
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyMARK, Register: 1},
		andXor(m.Bits, 0),
		cmpEq(binaryutil.NativeEndian.PutUint32(want)),
	}
}

// SrcAddrIn matches IPv4 packets (or, with ARP, ARP packets by sender
// protocol address) whose (input port name . source address) pair is in
// the named ifname . ipv4_addr set: the positive form of PortAddrNotIn.
type SrcAddrIn struct {
	ARP bool
	Set string
}

func (m SrcAddrIn) String() string {
	return strings.Replace(PortAddrNotIn(m).String(), " != @", " @", 1)
}

func (m SrcAddrIn) exprs(x *exprCtx) []expr.Any {
	out := PortAddrNotIn(m).exprs(x)
	out[len(out)-1].(*expr.Lookup).Invert = false
	return out
}

// Ethernet types we name.
const (
	EtherIPv4 uint16 = 0x0800
	EtherARP  uint16 = 0x0806
	EtherIPv6 uint16 = 0x86dd
)

func etherName(t uint16) string {
	switch t {
	case EtherIPv4:
		return "ip"
	case EtherARP:
		return "arp"
	case EtherIPv6:
		return "ip6"
	}
	return fmt.Sprintf("0x%04x", t)
}

// EtherType matches the frame's ethertype (bridge family): equal to
// Types[0] if one type and !Neg, else (not) in the set of Types.
type EtherType struct {
	Types []uint16
	Neg   bool
}

func (m EtherType) String() string {
	names := make([]string, len(m.Types))
	for i, t := range m.Types {
		names[i] = etherName(t)
	}
	if len(names) == 1 {
		return "ether type " + notEq(m.Neg) + names[0]
	}
	return fmt.Sprintf("ether type %s{ %s }", notEq(m.Neg), strings.Join(names, ", "))
}

func (m EtherType) exprs(x *exprCtx) []expr.Any {
	out := []expr.Any{&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseLLHeader, Offset: 12, Len: 2}}
	if len(m.Types) == 1 {
		return append(out, compare(be16(m.Types[0]), m.Neg))
	}
	elems := make([][]byte, len(m.Types))
	for i, t := range slices.Sorted(slices.Values(m.Types)) {
		elems[i] = be16(t)
	}
	return append(out, x.anonSet(nftables.TypeEtherType, elems, m.Neg))
}

// PortAddrNotIn matches frames whose (input port name . IPv4 source
// address) pair is not in the named ifname . ipv4_addr set; with ARP the
// address is the ARP sender protocol address. The caller establishes the
// ethertype first.
type PortAddrNotIn struct {
	ARP bool
	Set string
}

func (m PortAddrNotIn) String() string {
	if m.ARP {
		return fmt.Sprintf("iifname . arp saddr ip != @%s", m.Set)
	}
	return fmt.Sprintf("iifname . ip saddr != @%s", m.Set)
}

func (m PortAddrNotIn) exprs(x *exprCtx) []expr.Any {
	off := uint32(12) // IPv4 source address
	if m.ARP {
		off = 14 // ARP sender IP: htype, ptype, hlen, plen, oper, sha[6]
	}
	// Register 1 holds 16 bytes of name, register 2 (the next 16-byte
	// register, i.e. 32-bit register 4) the address: one concatenation.
	return []expr.Any{
		&expr.Meta{Key: expr.MetaKeyIIFNAME, Register: 1},
		&expr.Payload{DestRegister: 2, Base: expr.PayloadBaseNetworkHeader, Offset: off, Len: 4},
		x.namedSet(m.Set, true),
	}
}
