package netfilter

import (
	"bufio"
	"context"
	"encoding/binary"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"

	"github.com/clauderon/clauderond/netfilter/nftest"
)

// blockWait is how long a probe waits before calling a packet dropped.
const blockWait = 400 * time.Millisecond

// recorder remembers what reached a server ("tcp 198.18.0.2:80", ...).
type recorder struct {
	mu  sync.Mutex
	got map[string]int
}

func (r *recorder) add(k string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.got == nil {
		r.got = map[string]int{}
	}
	r.got[k]++
}

func (r *recorder) count(k string) int {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.got[k]
}

// servers runs listeners in namespaces and stops them all in Cleanup.
type servers struct {
	t       *testing.T
	wg      sync.WaitGroup
	mu      sync.Mutex
	closers []func() error
	rec     recorder
}

func newServers(t *testing.T) *servers {
	s := &servers{t: t}
	t.Cleanup(s.stop)
	return s
}

func (s *servers) stop() {
	s.mu.Lock()
	cs := s.closers
	s.closers = nil
	s.mu.Unlock()
	for _, c := range cs {
		_ = c()
	}
	s.wg.Wait()
}

func (s *servers) track(c func() error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.closers = append(s.closers, c)
}

// tcp listens on addr in ns; each accepted connection is recorded and
// answered by reply(conn) (nil: "hello from <addr>\n").
func (s *servers) tcp(ns netns.NsHandle, addr string, reply func(net.Conn) string) net.Listener {
	s.t.Helper()
	return s.tcpMarked(ns, addr, 0, reply)
}

// markedListen is a ListenConfig that sets SO_MARK mark (0: none) on its
// sockets, as the daemon does on its listeners.
func markedListen(mark uint32) *net.ListenConfig {
	return &net.ListenConfig{Control: func(_, _ string, rc syscall.RawConn) error {
		if mark == 0 {
			return nil
		}
		var serr error
		if err := rc.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_MARK, int(mark))
		}); err != nil {
			return err
		}
		return serr
	}}
}

// tcpMarked is tcp with SO_MARK mark on the listener (0: unmarked).
func (s *servers) tcpMarked(ns netns.NsHandle, addr string, mark uint32, reply func(net.Conn) string) net.Listener {
	s.t.Helper()
	ln, err := nftest.InNS(ns, func() (net.Listener, error) {
		return markedListen(mark).Listen(context.Background(), "tcp", addr)
	})
	if err != nil {
		s.t.Fatalf("listening on tcp %s: %v", addr, err)
	}
	s.track(ln.Close)
	s.wg.Add(1)
	go s.serveTCP(ln, addr, reply)
	return ln
}

func (s *servers) serveTCP(ln net.Listener, addr string, reply func(net.Conn) string) {
	defer s.wg.Done()
	for {
		c, err := ln.Accept()
		if err != nil {
			return
		}
		s.rec.add("tcp " + addr)
		msg := "hello from " + addr
		if reply != nil {
			msg = reply(c)
		}
		_ = c.SetDeadline(time.Now().Add(2 * time.Second))
		_, _ = fmt.Fprintln(c, msg)
		_ = c.Close()
	}
}

// udp listens on addr in ns and echoes "udp <addr> <payload>".
func (s *servers) udp(ns netns.NsHandle, addr string) {
	s.t.Helper()
	s.udpMarked(ns, addr, 0)
}

// udpMarked is udp with SO_MARK mark on the socket (0: unmarked).
func (s *servers) udpMarked(ns netns.NsHandle, addr string, mark uint32) {
	s.t.Helper()
	pc, err := nftest.InNS(ns, func() (net.PacketConn, error) {
		return markedListen(mark).ListenPacket(context.Background(), "udp", addr)
	})
	if err != nil {
		s.t.Fatalf("listening on udp %s: %v", addr, err)
	}
	s.track(pc.Close)
	s.wg.Add(1)
	go s.serveUDP(pc, addr)
}

func (s *servers) serveUDP(pc net.PacketConn, addr string) {
	defer s.wg.Done()
	buf := make([]byte, 1500)
	for {
		n, from, err := pc.ReadFrom(buf)
		if err != nil {
			return
		}
		s.rec.add("udp " + addr)
		_, _ = pc.WriteTo([]byte("udp "+addr+" "+string(buf[:n])), from)
	}
}

// originalDst reads SO_ORIGINAL_DST: where the client thought it connected.
func originalDst(c net.Conn) string {
	rc, err := c.(*net.TCPConn).SyscallConn()
	if err != nil {
		return "error: " + err.Error()
	}
	var out string
	_ = rc.Control(func(fd uintptr) {
		mreq, err := unix.GetsockoptIPv6Mreq(int(fd), unix.SOL_IP, unix.SO_ORIGINAL_DST)
		if err != nil {
			out = "error: " + err.Error()
			return
		}
		b := mreq.Multiaddr // struct sockaddr_in
		port := binary.BigEndian.Uint16(b[2:4])
		out = netip.AddrPortFrom(netip.AddrFrom4([4]byte(b[4:8])), port).String()
	})
	return out
}

// dialTCP dials addr from ns (optionally from a given local address) and
// returns the first line the server sent, or "refused", "timeout",
// "unreachable" or the error.
func dialTCP(ns netns.NsHandle, local, addr string) string {
	return dialTCPTimeout(ns, local, addr, blockWait)
}

// dialTCPTimeout is dialTCP with a connect timeout. Dials expected to
// succeed use a long one: after a blocked attempt the container's ARP
// entry is INCOMPLETE and the next probe can be a second away.
func dialTCPTimeout(ns netns.NsHandle, local, addr string, timeout time.Duration) string {
	out, _ := nftest.InNS(ns, func() (string, error) {
		d := net.Dialer{Timeout: timeout}
		if local != "" {
			d.LocalAddr = &net.TCPAddr{IP: net.ParseIP(local)}
		}
		c, err := d.Dial("tcp", addr)
		if err != nil {
			return classify(err), nil
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(2 * time.Second))
		line, err := bufio.NewReader(c).ReadString('\n')
		if err != nil {
			return classify(err), nil
		}
		return strings.TrimSpace(line), nil
	})
	return out
}

// exchangeUDP sends payload to addr from ns and returns the reply or a
// classification of the failure, waiting blockWait: for probes expected
// to be blocked.
func exchangeUDP(ns netns.NsHandle, local, addr, payload string) string {
	return exchangeUDPTimeout(ns, local, addr, payload, blockWait)
}

// exchangeUDPReply is exchangeUDP for a probe expected to be answered: it
// waits as long as a TCP dial expected to succeed (after a blocked probe
// the container's ARP entry can take a second to resolve).
func exchangeUDPReply(ns netns.NsHandle, local, addr, payload string) string {
	return exchangeUDPTimeout(ns, local, addr, payload, 3*time.Second)
}

func exchangeUDPTimeout(ns netns.NsHandle, local, addr, payload string, timeout time.Duration) string {
	out, _ := nftest.InNS(ns, func() (string, error) {
		var laddr *net.UDPAddr
		if local != "" {
			laddr = &net.UDPAddr{IP: net.ParseIP(local)}
		}
		raddr, err := net.ResolveUDPAddr("udp", addr)
		if err != nil {
			return err.Error(), nil
		}
		c, err := net.DialUDP("udp", laddr, raddr)
		if err != nil {
			return classify(err), nil
		}
		defer c.Close()
		_ = c.SetDeadline(time.Now().Add(timeout))
		if _, err := c.Write([]byte(payload)); err != nil {
			return classify(err), nil
		}
		buf := make([]byte, 1500)
		n, err := c.Read(buf)
		if err != nil {
			return classify(err), nil
		}
		return string(buf[:n]), nil
	})
	return out
}

func classify(err error) string {
	var ne net.Error
	switch {
	case errors.Is(err, syscall.ECONNREFUSED):
		return "refused"
	case errors.Is(err, syscall.EHOSTUNREACH), errors.Is(err, syscall.ENETUNREACH):
		return "unreachable"
	case errors.As(err, &ne) && ne.Timeout():
		return "timeout"
	}
	return err.Error()
}
