package tlsmitm

import (
	"encoding/binary"
	"net"
	"net/netip"

	"golang.org/x/sys/unix"
)

// originalDst returns the address the client dialled before an nftables
// redirect (SO_ORIGINAL_DST), falling back to the local address when the
// connection was not redirected (tests on loopback, direct connections).
func originalDst(c net.Conn) netip.AddrPort {
	local := addrPortOf(c.LocalAddr())
	if u, ok := c.(interface{ NetConn() net.Conn }); ok {
		c = u.NetConn()
	}
	tc, ok := c.(*net.TCPConn)
	if !ok {
		return local
	}
	rc, err := tc.SyscallConn()
	if err != nil {
		return local
	}
	var dst netip.AddrPort
	ctrlErr := rc.Control(func(fd uintptr) {
		if local.Addr().Is4() || local.Addr().Is4In6() {
			dst, err = origDst4(int(fd))
		} else {
			dst, err = origDst6(int(fd))
		}
	})
	if ctrlErr != nil || err != nil || !dst.IsValid() {
		return local
	}
	return dst
}

func origDst4(fd int) (netip.AddrPort, error) {
	// The kernel returns a struct sockaddr_in; IPv6Mreq is a 20-byte
	// buffer whose first 16 bytes receive it.
	mreq, err := unix.GetsockoptIPv6Mreq(fd, unix.SOL_IP, unix.SO_ORIGINAL_DST)
	if err != nil {
		return netip.AddrPort{}, err
	}
	raw := mreq.Multiaddr
	port := binary.BigEndian.Uint16(raw[2:4])
	addr := netip.AddrFrom4([4]byte{raw[4], raw[5], raw[6], raw[7]})
	return netip.AddrPortFrom(addr, port), nil
}

func origDst6(fd int) (netip.AddrPort, error) {
	info, err := unix.GetsockoptIPv6MTUInfo(fd, unix.SOL_IPV6, ip6tSOOriginalDst)
	if err != nil {
		return netip.AddrPort{}, err
	}
	var b [2]byte // Port is in network byte order in memory
	binary.NativeEndian.PutUint16(b[:], info.Addr.Port)
	return netip.AddrPortFrom(netip.AddrFrom16(info.Addr.Addr), binary.BigEndian.Uint16(b[:])), nil
}

// ip6tSOOriginalDst is IP6T_SO_ORIGINAL_DST from linux/netfilter_ipv6/ip6_tables.h.
const ip6tSOOriginalDst = 80
