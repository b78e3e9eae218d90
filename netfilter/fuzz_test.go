package netfilter

import (
	"net/netip"
	"strings"
	"testing"
)

// FuzzBuild feeds config-shaped values (what an operator can type) to
// Build: it must never panic, and whatever it accepts must render with
// every rule commented and reject a spec Validate rejects.
func FuzzBuild(f *testing.F) {
	// bridge, subnet, gateway, tls, dns, cidr, proto, port, ifname, addr, flags
	f.Add("clauderon0", "10.213.0.0/24", "10.213.0.1", uint16(8443), uint16(8053), "10.50.0.0/16", "tcp", uint16(22), "veth1", "10.213.0.2", uint8(0))
	f.Add("br", "10.0.0.0/8", "10.0.0.1", uint16(1), uint16(2), "0.0.0.0/0", "", uint16(0), "v", "10.0.0.2", uint8(7))
	f.Add("", "fd00::/64", "fd00::1", uint16(0), uint16(0), "::/0", "icmp", uint16(443), "", "", uint8(255))
	f.Add("x\"y", "10.1.2.3/24", "10.1.2.3", uint16(443), uint16(443), "10.1.0.0/16", "udp", uint16(53), "a/b", "10.1.2.1", uint8(1))
	f.Fuzz(func(t *testing.T, bridge, subnet, gw string, tls, dns uint16, cidr, proto string, port uint16, ifn, addr string, flags uint8) {
		s := Spec{Bridge: bridge, TLSPort: tls, DNSPort: dns,
			AllowIntraBridge: flags&1 != 0, AuditMode: flags&2 != 0, LogGroup: uint16(flags)}
		s.Subnet, _ = netip.ParsePrefix(subnet)
		s.Gateway, _ = netip.ParseAddr(gw)
		a := AllowCIDR{Proto: proto}
		a.Prefix, _ = netip.ParsePrefix(cidr)
		if flags&4 != 0 {
			a.Ports = []uint16{port}
		}
		s.AllowCIDRs = []AllowCIDR{a}
		p := Port{IfName: ifn}
		p.Addr, _ = netip.ParseAddr(addr)
		s.Ports = []Port{p}
		rs, err := Build(s)
		if (err == nil) != (s.Validate() == nil) {
			t.Fatalf("Build err = %v but Validate err = %v", err, s.Validate())
		}
		if err != nil {
			return
		}
		text := rs.String()
		for _, c := range rs.Comments() {
			if !strings.Contains(text, `comment "`+c+`"`) {
				t.Fatalf("rule %s not rendered", c)
			}
		}
	})
}
