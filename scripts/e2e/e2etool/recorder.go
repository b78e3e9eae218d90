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
	var rs recordings
	defer rs.stop()
	for _, port := range ports(*tcpPorts) {
		ln, err := net.Listen("tcp", ":"+strconv.Itoa(port))
		if err != nil {
			fmt.Fprintf(os.Stderr, "recorder: tcp %d: %v\n", port, err)
			return 1
		}
		rs.start(ln.Close, func() { recordTCP(ln, port, p) })
	}
	for _, port := range ports(*udpPorts) {
		pc, err := net.ListenPacket("udp", ":"+strconv.Itoa(port))
		if err != nil {
			fmt.Fprintf(os.Stderr, "recorder: udp %d: %v\n", port, err)
			return 1
		}
		rs.start(pc.Close, func() { recordUDP(pc, port, p) })
	}
	if *icmp {
		for _, network := range []string{"ip4:icmp", "ip6:ipv6-icmp"} {
			pc, err := net.ListenPacket(network, "")
			if err != nil {
				fmt.Fprintf(os.Stderr, "recorder: %s: %v (not recording it)\n", network, err)
				continue
			}
			rs.start(pc.Close, func() { recordICMP(pc, network, p) })
		}
	}
	fmt.Println("READY")
	<-ctx.Done()
	return 0
}

// recordings are the recorder's listeners and the goroutines serving them.
type recordings struct {
	closers []func() error
	wg      sync.WaitGroup
}

// start runs record in its own goroutine; calling closer ends it.
func (rs *recordings) start(closer func() error, record func()) {
	rs.closers = append(rs.closers, closer)
	rs.wg.Add(1)
	go func() { defer rs.wg.Done(); record() }()
}

// stop closes every listener and waits for the goroutines serving them.
func (rs *recordings) stop() {
	for _, c := range rs.closers {
		_ = c()
	}
	rs.wg.Wait()
}

// ports parses a comma-separated list of port numbers, skipping anything
// else.
func ports(list string) []int {
	var out []int
	for _, f := range split(list) {
		if n, err := strconv.Atoi(f); err == nil && n > 0 {
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

// recordUDP records every datagram and answers it with the banner.
func recordUDP(pc net.PacketConn, port int, p *hitPrinter) {
	eachPacket(pc, func(b []byte, addr net.Addr) {
		p.print(hit{Proto: "udp", Port: port, Src: addr.String(), Data: printable(b[:min(len(b), 64)])})
		_, _ = pc.WriteTo([]byte(Banner), addr)
	})
}

// recordICMP records echo requests only (type 8 for v4, 128 for v6); our
// own replies and other noise are not hits.
func recordICMP(pc net.PacketConn, network string, p *hitPrinter) {
	eachPacket(pc, func(b []byte, addr net.Addr) {
		if len(b) > 0 && (b[0] == 8 || b[0] == 128) {
			p.print(hit{Proto: network, Src: addr.String()})
		}
	})
}

// eachPacket calls handle with every packet read from pc until pc is
// closed; read errors on an open socket are skipped.
func eachPacket(pc net.PacketConn, handle func(b []byte, addr net.Addr)) {
	buf := make([]byte, 2048)
	for {
		n, addr, err := pc.ReadFrom(buf)
		if errors.Is(err, net.ErrClosed) {
			return
		}
		if err == nil {
			handle(buf[:n], addr)
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
