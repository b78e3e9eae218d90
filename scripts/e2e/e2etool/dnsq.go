package main

import (
	"encoding/binary"
	"encoding/json"
	"flag"
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"strings"
	"time"
)

// dnsQuery sends one A (or AAAA) query and prints {"rcode":N,"answers":[...]}.
func dnsQuery(args []string) int {
	fs := flag.NewFlagSet("dnsq", flag.ExitOnError)
	server := fs.String("server", "127.0.0.11:53", "server ip:port")
	network := fs.String("net", "udp", "udp or tcp")
	timeout := fs.Duration("timeout", 3*time.Second, "timeout")
	_ = fs.Parse(args)
	if fs.NArg() != 1 {
		fmt.Fprintln(os.Stderr, "dnsq: need one name")
		return 2
	}
	rcode, answers, _, err := exchangeDNS(&net.Dialer{Timeout: *timeout}, *network, *server, fs.Arg(0), *timeout)
	out := map[string]any{"rcode": rcode, "answers": answers}
	if err != nil {
		out["error"] = err.Error()
	}
	_ = json.NewEncoder(os.Stdout).Encode(out)
	if err != nil {
		return 1
	}
	return 0
}

// exchangeDNS does one query for name/A and returns the rcode, the A
// answers, and the raw reply bytes.
func exchangeDNS(d *net.Dialer, network, server, name string, timeout time.Duration) (int, []string, []byte, error) {
	q := buildQuery(name, 1)
	c, err := d.Dial(network, server)
	if err != nil {
		return -1, nil, nil, fmt.Errorf("dial %s %s: %w", network, server, err)
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(timeout))
	var raw []byte
	if network == "tcp" {
		if _, err := c.Write(append(binary.BigEndian.AppendUint16(nil, uint16(len(q))), q...)); err != nil {
			return -1, nil, nil, fmt.Errorf("write: %w", err)
		}
		var hdr [2]byte
		n, err := io.ReadFull(c, hdr[:])
		if err != nil {
			return -1, nil, hdr[:n], fmt.Errorf("read length: %w", err)
		}
		raw = make([]byte, binary.BigEndian.Uint16(hdr[:]))
		if n, err := io.ReadFull(c, raw); err != nil {
			return -1, nil, append(hdr[:], raw[:n]...), fmt.Errorf("read body: %w", err)
		}
	} else {
		if _, err := c.Write(q); err != nil {
			return -1, nil, nil, fmt.Errorf("write: %w", err)
		}
		buf := make([]byte, 1500)
		n, err := c.Read(buf)
		if err != nil {
			return -1, nil, nil, fmt.Errorf("read: %w", err)
		}
		raw = buf[:n]
	}
	rcode, answers, err := parseReply(raw)
	return rcode, answers, raw, err
}

func buildQuery(name string, qtype uint16) []byte {
	msg := []byte{0xbe, 0xef, 0x01, 0x00, 0, 1, 0, 0, 0, 0, 0, 0} // id, RD, 1 question
	for _, label := range strings.Split(strings.TrimSuffix(name, "."), ".") {
		msg = append(msg, byte(len(label)))
		msg = append(msg, label...)
	}
	msg = append(msg, 0)
	msg = binary.BigEndian.AppendUint16(msg, qtype)
	return binary.BigEndian.AppendUint16(msg, 1) // IN
}

// parseReply extracts the rcode and the A/AAAA answers of a reply.
func parseReply(b []byte) (int, []string, error) {
	if len(b) < 12 {
		return -1, nil, errShort
	}
	rcode := int(b[3] & 0x0f)
	qd, an := int(binary.BigEndian.Uint16(b[4:])), int(binary.BigEndian.Uint16(b[6:]))
	off := 12
	for range qd {
		var err error
		if off, err = skipName(b, off); err != nil {
			return rcode, nil, err
		}
		off += 4
	}
	var answers []string
	for range an {
		var err error
		if off, err = skipName(b, off); err != nil || off+10 > len(b) {
			return rcode, answers, errShort
		}
		typ, rdlen := binary.BigEndian.Uint16(b[off:]), int(binary.BigEndian.Uint16(b[off+8:]))
		off += 10
		if off+rdlen > len(b) {
			return rcode, answers, errShort
		}
		if addr, ok := netip.AddrFromSlice(b[off : off+rdlen]); ok && (typ == 1 || typ == 28) {
			answers = append(answers, addr.String())
		}
		off += rdlen
	}
	return rcode, answers, nil
}

func skipName(b []byte, off int) (int, error) {
	for off < len(b) {
		l := int(b[off])
		switch {
		case l == 0:
			return off + 1, nil
		case l&0xc0 == 0xc0:
			return off + 2, nil
		default:
			off += l + 1
		}
	}
	return off, errShort
}
