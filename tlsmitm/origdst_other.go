//go:build !linux

package tlsmitm

import (
	"net"
	"net/netip"
)

// originalDst returns the local address: SO_ORIGINAL_DST is Linux-only.
func originalDst(c net.Conn) netip.AddrPort { return addrPortOf(c.LocalAddr()) }
