package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"
)

// Banner is what the recorder answers on every TCP connection and UDP
// datagram, so an attacking client can tell it reached the outside.
const Banner = "RECORDER"

// hit is one JSON line printed by the recorder.
type hit struct {
	Time  time.Time `json:"time"`
	Proto string    `json:"proto"`
	Port  int       `json:"port,omitempty"`
	Src   string    `json:"src"`
	Data  string    `json:"data,omitempty"`
}

type hitPrinter struct {
	mu  sync.Mutex
	enc *json.Encoder
}

func (p *hitPrinter) print(h hit) {
	p.mu.Lock()
	defer p.mu.Unlock()
	h.Time = time.Now().UTC()
	_ = p.enc.Encode(h)
}

// recorder listens on every given TCP and UDP port (IPv4 and IPv6) and on
// ICMP, printing "READY" once listening and then one JSON line per hit,
// until SIGTERM/SIGINT.
func recorder(args []string) int {
	fs := flag.NewFlagSet("recorder", flag.ExitOnError)
	tcpPorts := fs.String("tcp", "22,80,443", "comma-separated TCP ports")
	udpPorts := fs.String("udp", "53,443", "comma-separated UDP ports")
	icmp := fs.Bool("icmp", true, "record ICMP/ICMPv6 echo requests (needs CAP_NET_RAW)")
	_ = fs.Parse(args)
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, syscall.SIGINT)
	defer stop()
	p := &hitPrinter{enc: json.NewEncoder(os.Stdout)}
	var closers []func() error
	var wg sync.WaitGroup
	for _, port := range ports(*tcpPorts) {
		ln, err := net.Listen("tcp", ":"+strconv.Itoa(port))
		if err != nil {
			fmt.Fprintf(os.Stderr, "recorder: tcp %d: %v\n", port, err)
			return 1
		}
		closers = append(closers, ln.Close)
		wg.Add(1)
		go func() { defer wg.Done(); recordTCP(ln, port, p) }()
	}
	for _, port := range ports(*udpPorts) {
		pc, err := net.ListenPacket("udp", ":"+strconv.Itoa(port))
		if err != nil {
			fmt.Fprintf(os.Stderr, "recorder: udp %d: %v\n", port, err)
			return 1
		}
		closers = append(closers, pc.Close)
		wg.Add(1)
		go func() { defer wg.Done(); recordUDP(pc, port, p) }()
	}
	if *icmp {
		for _, network := range []string{"ip4:icmp", "ip6:ipv6-icmp"} {
			pc, err := net.ListenPacket(network, "")
			if err != nil {
				fmt.Fprintf(os.Stderr, "recorder: %s: %v (not recording it)\n", network, err)
				continue
			}
			closers = append(closers, pc.Close)
			wg.Add(1)
			go func() { defer wg.Done(); recordICMP(pc, network, p) }()
		}
	}
	fmt.Println("READY")
	<-ctx.Done()
	for _, c := range closers {
		_ = c()
	}
	wg.Wait()
	return 0
}

func ports(list string) []int {
	var out []int
	for _, f := range strings.Split(list, ",") {
		if n, err := strconv.Atoi(strings.TrimSpace(f)); err == nil && n > 0 {
			out = append(out, n)
		}
	}
	return out
}

// recordTCP accepts until ln is closed, then waits for its connections.
func recordTCP(ln net.Listener, port int, p *hitPrinter) {
	var wg sync.WaitGroup
	defer wg.Wait()
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		wg.Add(1)
		go func() { defer wg.Done(); recordTCPConn(c, port, p) }()
	}
}

func recordTCPConn(c net.Conn, port int, p *hitPrinter) {
	defer c.Close()
	_, _ = c.Write([]byte(Banner + "\n"))
	_ = c.SetReadDeadline(time.Now().Add(500 * time.Millisecond))
	buf := make([]byte, 256)
	n, _ := c.Read(buf)
	p.print(hit{Proto: "tcp", Port: port, Src: c.RemoteAddr().String(), Data: printable(buf[:n])})
}

func recordUDP(pc net.PacketConn, port int, p *hitPrinter) {
	buf := make([]byte, 2048)
	for {
		n, addr, err := pc.ReadFrom(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		p.print(hit{Proto: "udp", Port: port, Src: addr.String(), Data: printable(buf[:min(n, 64)])})
		_, _ = pc.WriteTo([]byte(Banner), addr)
	}
}

func recordICMP(pc net.PacketConn, network string, p *hitPrinter) {
	buf := make([]byte, 2048)
	for {
		n, addr, err := pc.ReadFrom(buf)
		if err != nil {
			if errors.Is(err, net.ErrClosed) {
				return
			}
			continue
		}
		// Record echo requests only (type 8 for v4, 128 for v6); our own
		// replies and other noise are not hits.
		if n > 0 && (buf[0] == 8 || buf[0] == 128) {
			p.print(hit{Proto: network, Src: addr.String()})
		}
	}
}

func printable(b []byte) string {
	out := make([]rune, 0, len(b))
	for _, c := range b {
		if c >= 32 && c < 127 {
			out = append(out, rune(c))
		} else {
			out = append(out, '.')
		}
	}
	return string(out)
}
