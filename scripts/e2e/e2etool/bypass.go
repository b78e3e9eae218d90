package main

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"encoding/binary"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"strconv"
	"strings"
	"sync"
	"time"
)

// attempt is one escape try and its outcome, printed as a JSON line.
// Reached is the only thing that matters for security: the attacker saw the
// recorder's banner, i.e. bytes made it to the outside and back.
type attempt struct {
	Name      string `json:"name"`
	Kind      string `json:"kind"`
	Target    string `json:"target"`
	Connected bool   `json:"connected"`
	Reached   bool   `json:"reached"`
	Detail    string `json:"detail,omitempty"`
}

type bypassOpts struct {
	bind    net.IP
	timeout time.Duration
}

// dialer returns a dialer for network ("tcp" or "udp") bound to -bind.
func (o bypassOpts) dialer(network string) *net.Dialer {
	d := &net.Dialer{Timeout: o.timeout}
	if o.bind != nil && network == "udp" {
		d.LocalAddr = &net.UDPAddr{IP: o.bind}
	} else if o.bind != nil {
		d.LocalAddr = &net.TCPAddr{IP: o.bind}
	}
	return d
}

// bypass runs every requested escape attempt concurrently (bounded) and
// prints one JSON line per attempt. It exits 0 whatever the outcome: the
// test decides what is a failure.
func bypass(args []string) int {
	fs := flag.NewFlagSet("bypass", flag.ExitOnError)
	outside := fs.String("outside", "", "IPv4 address of the outside host")
	outside6 := fs.String("outside6", "", "IPv6 address of the outside host (optional)")
	tcpPorts := fs.String("tcp", "22,25,53,80,443,853,2375,3128,5432,6443,8080,8443,9418", "TCP ports to try on the outside host")
	udpPorts := fs.String("udp", "53,123,443,500,853,4500,51820", "UDP ports to try on the outside host")
	snis := fs.String("sni", "evil.example,example.com,,api.anthropic.com", "SNIs to present on outside:443 (empty item = no SNI)")
	hosts := fs.String("hosts", "", "extra TCP targets ip:port,... (host services, other containers)")
	udpHosts := fs.String("udp-hosts", "", "extra UDP targets ip:port,...")
	pings := fs.String("ping", "", "extra ICMP echo targets (the outside hosts are always pinged)")
	bind := fs.String("bind", "", "source address to bind (forged-source test)")
	timeout := fs.Duration("timeout", 2*time.Second, "per-attempt timeout")
	only := fs.String("only", "tcp,udp,tls,dot,dns,icmp", "attempt kinds against the outside hosts")
	_ = fs.Parse(args)
	kinds := map[string]bool{}
	for _, k := range split(*only) {
		kinds[k] = true
	}
	o := bypassOpts{timeout: *timeout, bind: net.ParseIP(*bind)}
	var jobs []func() attempt
	add := func(f func() attempt) { jobs = append(jobs, f) }
	for _, ip := range nonEmpty(*outside, *outside6) {
		for _, port := range ports(*tcpPorts) {
			if kinds["tcp"] {
				add(func() attempt { return o.tcp(net.JoinHostPort(ip, strconv.Itoa(port))) })
			}
		}
		for _, port := range ports(*udpPorts) {
			if kinds["udp"] {
				add(func() attempt { return o.udp(net.JoinHostPort(ip, strconv.Itoa(port)), port) })
			}
		}
		for _, sni := range strings.Split(*snis, ",") {
			if kinds["tls"] {
				add(func() attempt { return o.tls(net.JoinHostPort(ip, "443"), sni) })
			}
		}
		if kinds["dot"] {
			add(func() attempt { return o.tls(net.JoinHostPort(ip, "853"), "dns.example") })
		}
		if kinds["dns"] {
			add(func() attempt { return o.dns(net.JoinHostPort(ip, "53"), "udp") })
			add(func() attempt { return o.dns(net.JoinHostPort(ip, "53"), "tcp") })
		}
		if kinds["icmp"] {
			add(func() attempt { return o.ping(ip) })
		}
	}
	for _, t := range split(*hosts) {
		add(func() attempt { return o.tcp(t) })
	}
	for _, t := range split(*udpHosts) {
		add(func() attempt { return o.udp(t, 0) })
	}
	for _, ip := range split(*pings) {
		add(func() attempt { return o.ping(ip) })
	}
	results := runBounded(jobs, 16)
	enc := json.NewEncoder(os.Stdout)
	for _, r := range results {
		_ = enc.Encode(r)
	}
	return 0
}

func runBounded(jobs []func() attempt, n int) []attempt {
	out := make([]attempt, len(jobs))
	sem := make(chan struct{}, n)
	var wg sync.WaitGroup
	for i, job := range jobs {
		wg.Add(1)
		sem <- struct{}{}
		go func() {
			defer wg.Done()
			defer func() { <-sem }()
			out[i] = job()
		}()
	}
	wg.Wait()
	return out
}

// probe dials a.Target over network (bound to -bind, with the -timeout
// deadline) and lets talk fill in the rest of a; a failed dial is a's
// detail.
func (o bypassOpts) probe(a attempt, network string, talk func(c net.Conn, a *attempt)) attempt {
	c, err := o.dialer(network).Dial(network, a.Target)
	if err != nil {
		a.Detail = err.Error()
		return a
	}
	defer c.Close()
	_ = c.SetDeadline(time.Now().Add(o.timeout))
	talk(c, &a)
	return a
}

func (o bypassOpts) tcp(target string) attempt {
	return o.probe(attempt{Name: "tcp " + target, Kind: "tcp", Target: target}, "tcp", talkTCP)
}

// talkTCP sends a probe line and looks for the recorder's banner.
func talkTCP(c net.Conn, a *attempt) {
	a.Connected = true
	_, _ = c.Write([]byte("PROBE tcp\n"))
	line, err := bufio.NewReader(c).ReadString('\n')
	a.Reached = strings.HasPrefix(line, Banner)
	a.Detail = fmt.Sprintf("read %q err=%v", line, err)
}

func (o bypassOpts) udp(target string, port int) attempt {
	kind := "udp"
	payload := []byte("PROBE udp")
	if port == 443 {
		kind = "quic"
		// The first bytes of a QUIC v1 Initial: long header, fixed bit, version 1.
		payload = append([]byte{0xc3, 0, 0, 0, 1, 8}, bytes.Repeat([]byte{0x42}, 1200)...)
	}
	return o.probe(attempt{Name: kind + " " + target, Kind: kind, Target: target}, "udp", func(c net.Conn, a *attempt) {
		if _, err := c.Write(payload); err != nil {
			a.Detail = "write: " + err.Error()
			return
		}
		buf := make([]byte, 512)
		n, err := c.Read(buf)
		a.Connected = err == nil
		a.Reached = bytes.HasPrefix(buf[:n], []byte(Banner))
		a.Detail = fmt.Sprintf("read %d bytes err=%v", n, err)
	})
}

// recConn remembers the first bytes read, to spot the recorder's banner
// under a failed TLS handshake.
type recConn struct {
	net.Conn
	mu   sync.Mutex
	seen []byte
}

func (c *recConn) Read(p []byte) (int, error) {
	n, err := c.Conn.Read(p)
	c.mu.Lock()
	if len(c.seen) < 64 {
		c.seen = append(c.seen, p[:min(n, 64-len(c.seen))]...)
	}
	c.mu.Unlock()
	return n, err
}

func (o bypassOpts) tls(target, sni string) attempt {
	label := sni
	if label == "" {
		label = "<none>"
	}
	return o.probe(attempt{Name: "tls " + target + " sni=" + label, Kind: "tls", Target: target}, "tcp", func(raw net.Conn, a *attempt) {
		a.Connected = true
		talkTLS(&recConn{Conn: raw}, sni, a)
	})
}

// talkTLS shakes hands presenting sni and sends one request; the
// recorder's banner counts as reached even under a failed handshake.
func talkTLS(rc *recConn, sni string, a *attempt) {
	defer func() { a.Reached = a.Reached || bytes.Contains(rc.seen, []byte(Banner)) }()
	// No verification: the attacker wants any byte path out, trusted or not.
	c := tls.Client(rc, &tls.Config{ServerName: sni, InsecureSkipVerify: true, NextProtos: []string{"http/1.1"}})
	if err := c.Handshake(); err != nil {
		a.Detail = "handshake: " + err.Error()
		return
	}
	cert := c.ConnectionState().PeerCertificates[0]
	host := sni
	if host == "" {
		host = "x"
	}
	fmt.Fprintf(c, "GET / HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", host)
	line, rerr := bufio.NewReader(c).ReadString('\n')
	a.Detail = fmt.Sprintf("handshake ok, cert CN=%q issuer=%q; response %q err=%v", cert.Subject.CommonName, cert.Issuer.CommonName, strings.TrimSpace(line), rerr)
}

// dns sends one A query for a name no policy allows and reports the rcode.
func (o bypassOpts) dns(target, network string) attempt {
	a := attempt{Name: "dns/" + network + " " + target, Kind: "dns-" + network, Target: target}
	rcode, answers, raw, err := exchangeDNS(o.dialer(network), network, target, "exfil.evil.example", o.timeout)
	a.Reached = bytes.HasPrefix(raw, []byte(Banner)) || bytes.Contains(raw, []byte(Banner))
	a.Connected = len(raw) > 0
	if err != nil {
		a.Detail = err.Error()
		return a
	}
	a.Detail = fmt.Sprintf("rcode=%d answers=%v", rcode, answers)
	return a
}

func (o bypassOpts) ping(ip string) attempt {
	a := attempt{Name: "icmp " + ip, Kind: "icmp", Target: ip}
	network, typ := "ip4:icmp", byte(8)
	if strings.Contains(ip, ":") {
		network, typ = "ip6:ipv6-icmp", 128
	}
	laddr := ""
	if o.bind != nil {
		laddr = o.bind.String()
	}
	pc, err := net.ListenPacket(network, laddr)
	if err != nil {
		a.Detail = "raw socket: " + err.Error()
		return a
	}
	defer pc.Close()
	msg := []byte{typ, 0, 0, 0, 0x12, 0x34, 0, 1, 'c', 'l', 'a', 'u', 'd', 'e', 'r', 'o', 'n'}
	if typ == 8 {
		binary.BigEndian.PutUint16(msg[2:], checksum(msg))
	}
	dst, err := net.ResolveIPAddr("ip", ip)
	if err != nil {
		a.Detail = err.Error()
		return a
	}
	if _, err := pc.WriteTo(msg, dst); err != nil {
		a.Detail = "send: " + err.Error()
		return a
	}
	_ = pc.SetReadDeadline(time.Now().Add(o.timeout))
	buf := make([]byte, 1500)
	for {
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			a.Detail = "no echo reply: " + err.Error()
			return a
		}
		if from.String() == dst.String() && n > 0 && (buf[0] == 0 || buf[0] == 129) {
			a.Reached, a.Connected = true, true
			a.Detail = "echo reply"
			return a
		}
	}
}

func checksum(b []byte) uint16 {
	var s uint32
	for i := 0; i+1 < len(b); i += 2 {
		s += uint32(b[i])<<8 | uint32(b[i+1])
	}
	if len(b)%2 == 1 {
		s += uint32(b[len(b)-1]) << 8
	}
	for s>>16 != 0 {
		s = s&0xffff + s>>16
	}
	return ^uint16(s)
}

func nonEmpty(v ...string) []string {
	var out []string
	for _, s := range v {
		if s != "" {
			out = append(out, s)
		}
	}
	return out
}

func split(list string) []string {
	var out []string
	for _, f := range strings.Split(list, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

var errShort = errors.New("short DNS answer")
