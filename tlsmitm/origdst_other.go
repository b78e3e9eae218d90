//go:build !linux

package tlsmitm

import (
	"net"
	"net/netip"
)

// originalDst returns the local address: SO_ORIGINAL_DST is Linux-only.
func originalDst(c net.Conn) netip.AddrPort { return addrPortOf(c.LocalAddr()) }

func addrPortOf(a net.Addr) netip.AddrPort {
	if ta, ok := a.(*net.TCPAddr); ok {
		return ta.AddrPort()
	}
	if a == nil {
		return netip.AddrPort{}
	}
	ap, _ := netip.ParseAddrPort(a.String())
	return ap
}
