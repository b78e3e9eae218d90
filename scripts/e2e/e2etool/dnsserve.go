package main

import (
	"encoding/binary"
	"flag"
	"fmt"
	"net"
	"net/netip"
	"os"
	"strings"
)

// dnsServe is a stand-in cluster DNS (the Kubernetes suite has no CoreDNS
// image): it answers A queries over UDP for the names given with -a
// (name=ip,...), NXDOMAIN for any other name, until killed.
func dnsServe(args []string) int {
	fs := flag.NewFlagSet("dnsserve", flag.ExitOnError)
	listen := fs.String("listen", ":53", "UDP address to serve on")
	records := fs.String("a", "", "A records: name=ip,...")
	_ = fs.Parse(args)
	zone := map[string]netip.Addr{}
	for _, r := range split(*records) {
		name, ip, ok := strings.Cut(r, "=")
		a, err := netip.ParseAddr(ip)
		if !ok || err != nil || !a.Is4() {
			fmt.Fprintf(os.Stderr, "dnsserve: bad record %q (want name=ipv4)\n", r)
			return 2
		}
		zone[strings.ToLower(strings.TrimSuffix(name, "."))] = a
	}
	pc, err := net.ListenPacket("udp", *listen)
	if err != nil {
		fmt.Fprintf(os.Stderr, "dnsserve: %v\n", err)
		return 1
	}
	buf := make([]byte, 1500)
	for {
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			fmt.Fprintf(os.Stderr, "dnsserve: %v\n", err)
			return 1
		}
		if reply := answer(buf[:n], zone); reply != nil {
			_, _ = pc.WriteTo(reply, from)
		}
	}
}

// answer builds the reply to one query with a single question, or nil for
// anything that is not one.
func answer(q []byte, zone map[string]netip.Addr) []byte {
	if len(q) < 12 || q[2]&0x80 != 0 || binary.BigEndian.Uint16(q[4:]) != 1 {
		return nil
	}
	var labels []string
	off := 12
	for off < len(q) && q[off] != 0 {
		l := int(q[off])
		if l&0xc0 != 0 || off+1+l > len(q) {
			return nil
		}
		labels = append(labels, string(q[off+1:off+1+l]))
		off += 1 + l
	}
	if off+5 > len(q) {
		return nil
	}
	question := q[12 : off+5]
	qtype := binary.BigEndian.Uint16(q[off+1:])
	reply := append([]byte{q[0], q[1], 0x81, 0x80, 0, 1, 0, 0, 0, 0, 0, 0}, question...) // QR RD RA
	addr, ok := zone[strings.ToLower(strings.Join(labels, "."))]
	switch {
	case !ok:
		reply[3] |= 3 // NXDOMAIN
	case qtype == 1:
		reply[7] = 1
		reply = append(reply, 0xc0, 12, 0, 1, 0, 1, 0, 0, 0, 30, 0, 4) // name ptr, A, IN, TTL 30, len 4
		reply = append(reply, addr.AsSlice()...)
	}
	return reply
}
