package appliance

import (
	"context"
	"encoding/binary"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"time"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// NFLOG (nfnetlink_log) wire constants.
const (
	nfnlSubsysULOG       = 4
	nfulnlMsgPacket      = 0
	nfulnlMsgConfig      = 1
	nfulaCfgCmd          = 1
	nfulaCfgMode         = 2
	nfulnlCfgCmdBind     = 1
	nfulnlCopyPacket     = 2
	nfulaPayload         = 9
	nfulaPrefix          = 10
	nflogCopyRange       = 64 // IPv4 header and the ports are enough
	wouldDenyPrefix      = "clauderon would-deny"
	wouldDenyDedupWindow = time.Minute
)

// watchWouldDeny turns the audit-mode log packets of NFLOG group (the
// forwarded traffic the ruleset would have rejected) into "would-deny" audit
// records: one per flow (source, destination, protocol, port) per minute, so
// a busy flow cannot flood the audit log. It returns nil when ctx is done.
func watchWouldDeny(ctx context.Context, group uint16, emit func(record)) error {
	return watchWouldDenyIn(ctx, 0, group, emit)
}

// watchWouldDenyIn is watchWouldDeny in the network namespace behind netnsFD
// (0: the current one); tests use a throwaway namespace.
func watchWouldDenyIn(ctx context.Context, netnsFD int, group uint16, emit func(record)) error {
	c, err := netlink.Dial(unix.NETLINK_NETFILTER, &netlink.Config{NetNS: netnsFD})
	if err != nil {
		return fmt.Errorf("opening nfnetlink_log: %w", err)
	}
	var once sync.Once
	closeConn := func() { once.Do(func() { c.Close() }) }
	defer closeConn()
	if err := nflogBind(c, group); err != nil {
		return err
	}
	stop := context.AfterFunc(ctx, closeConn)
	defer stop()
	seen := map[string]time.Time{}
	for {
		msgs, err := c.Receive()
		if ctx.Err() != nil {
			return nil
		}
		if err != nil {
			return fmt.Errorf("reading nfnetlink_log group %d: %w", group, err)
		}
		for _, m := range msgs {
			if uint16(m.Header.Type) != nfnlSubsysULOG<<8|nfulnlMsgPacket {
				continue
			}
			r, ok := parseWouldDeny(m.Data, time.Now())
			if ok && firstInWindow(seen, r, time.Now()) {
				emit(r)
			}
		}
	}
}

// nflogBind binds the socket to group and asks for packet copies.
func nflogBind(c *netlink.Conn, group uint16) error {
	hdr := []byte{unix.AF_UNSPEC, 0, byte(group >> 8), byte(group)} // nfgenmsg, res_id big-endian
	bind := netlink.NewAttributeEncoder()
	bind.Bytes(nfulaCfgCmd, []byte{nfulnlCfgCmdBind})
	mode := make([]byte, 6)
	binary.BigEndian.PutUint32(mode, nflogCopyRange)
	mode[4] = nfulnlCopyPacket
	bind.Bytes(nfulaCfgMode, mode)
	attrs, err := bind.Encode()
	if err != nil {
		return fmt.Errorf("encoding nflog config: %w", err)
	}
	_, err = c.Execute(netlink.Message{
		Header: netlink.Header{Type: netlink.HeaderType(nfnlSubsysULOG<<8 | nfulnlMsgConfig),
			Flags: netlink.Request | netlink.Acknowledge},
		Data: append(hdr, attrs...),
	})
	if err != nil {
		return fmt.Errorf("binding nfnetlink_log group %d (another process may own it): %w", group, err)
	}
	return nil
}

// parseWouldDeny decodes one NFLOG packet message (nfgenmsg + attributes)
// into a record, if it carries our prefix and an IPv4 payload.
func parseWouldDeny(data []byte, now time.Time) (record, bool) {
	if len(data) < 4 {
		return record{}, false
	}
	ad, err := netlink.NewAttributeDecoder(data[4:])
	if err != nil {
		return record{}, false
	}
	var prefix string
	var payload []byte
	for ad.Next() {
		switch ad.Type() {
		case nfulaPrefix:
			prefix = strings.TrimRight(string(ad.Bytes()), "\x00")
		case nfulaPayload:
			payload = ad.Bytes()
		}
	}
	if !strings.HasPrefix(prefix, wouldDenyPrefix) {
		return record{}, false
	}
	src, dst, proto, ok := parseIPv4(payload)
	if !ok {
		return record{}, false
	}
	return record{TS: now, Kind: "conn", Decision: "would-deny", Rule: "forward-" + proto,
		SrcIP: src.String(), OrigDst: dst.String()}, true
}

// parseIPv4 reads source, destination (with port for TCP/UDP) and protocol.
func parseIPv4(p []byte) (netip.Addr, netip.AddrPort, string, bool) {
	if len(p) < 20 || p[0]>>4 != 4 {
		return netip.Addr{}, netip.AddrPort{}, "", false
	}
	ihl := int(p[0]&0x0f) * 4
	src := netip.AddrFrom4([4]byte(p[12:16]))
	dstIP := netip.AddrFrom4([4]byte(p[16:20]))
	var port uint16
	proto := fmt.Sprintf("proto%d", p[9])
	switch p[9] {
	case unix.IPPROTO_TCP, unix.IPPROTO_UDP:
		proto = map[byte]string{unix.IPPROTO_TCP: "tcp", unix.IPPROTO_UDP: "udp"}[p[9]]
		if len(p) >= ihl+4 && ihl >= 20 {
			port = binary.BigEndian.Uint16(p[ihl+2 : ihl+4])
		}
	case unix.IPPROTO_ICMP:
		proto = "icmp"
	}
	return src, netip.AddrPortFrom(dstIP, port), proto, true
}

// firstInWindow reports whether r's flow was not reported within the window,
// and remembers it; old entries are dropped so the map stays small.
func firstInWindow(seen map[string]time.Time, r record, now time.Time) bool {
	key := r.SrcIP + ">" + r.OrigDst + "/" + r.Rule
	if t, ok := seen[key]; ok && now.Sub(t) < wouldDenyDedupWindow {
		return false
	}
	if len(seen) > 4096 {
		for k, t := range seen {
			if now.Sub(t) >= wouldDenyDedupWindow {
				delete(seen, k)
			}
		}
	}
	if len(seen) > 4096 {
		return false // under a flood of distinct flows, counters still count them
	}
	seen[key] = now
	return true
}
