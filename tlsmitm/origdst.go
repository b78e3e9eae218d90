package tlsmitm

import (
	"net"
	"net/netip"
)

// addrPortOf is a connection address as a netip.AddrPort (zero for nil).
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
