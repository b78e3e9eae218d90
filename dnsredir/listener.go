package dnsredir

import (
	"net"
	"net/netip"
	"sync"
	"time"
)

// limitListener bounds concurrent TCP connections, overall and per source
// address. A connection over either bound is closed as soon as it is
// accepted, so it never costs a goroutine. Every accepted connection gets a
// write deadline per reply.
type limitListener struct {
	net.Listener
	max, perClient int
	writeTimeout   time.Duration
	onReject       func(uint64) uint64

	mu      sync.Mutex
	perAddr map[netip.Addr]int
	conns   map[*limitConn]struct{}
}

func newLimitListener(ln net.Listener, max, perClient int, writeTimeout time.Duration, onReject func(uint64) uint64) *limitListener {
	return &limitListener{
		Listener:     ln,
		max:          max,
		perClient:    perClient,
		writeTimeout: writeTimeout,
		onReject:     onReject,
		perAddr:      make(map[netip.Addr]int),
		conns:        make(map[*limitConn]struct{}),
	}
}

// Accept returns the next connection within the bounds.
func (l *limitListener) Accept() (net.Conn, error) {
	for {
		c, err := l.Listener.Accept()
		if err != nil {
			return nil, err
		}
		if lc := l.admit(c); lc != nil {
			return lc, nil
		}
		l.onReject(1) // before Close: a client that sees the close sees the count
		_ = c.Close()
	}
}

func (l *limitListener) admit(c net.Conn) *limitConn {
	addr := connIP(c)
	l.mu.Lock()
	defer l.mu.Unlock()
	if len(l.conns) >= l.max || l.perAddr[addr] >= l.perClient {
		return nil
	}
	lc := &limitConn{Conn: c, l: l, addr: addr}
	l.perAddr[addr]++
	l.conns[lc] = struct{}{}
	return lc
}

func (l *limitListener) release(lc *limitConn) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.conns, lc)
	if l.perAddr[lc.addr]--; l.perAddr[lc.addr] <= 0 {
		delete(l.perAddr, lc.addr)
	}
}

// closeAll closes every connection still open.
func (l *limitListener) closeAll() {
	l.mu.Lock()
	conns := make([]*limitConn, 0, len(l.conns))
	for c := range l.conns {
		conns = append(conns, c)
	}
	l.mu.Unlock()
	for _, c := range conns {
		_ = c.Close()
	}
}

// limitConn releases its slot once, on Close, and bounds every write.
type limitConn struct {
	net.Conn
	l    *limitListener
	addr netip.Addr
	once sync.Once
}

func (c *limitConn) Write(b []byte) (int, error) {
	if err := c.Conn.SetWriteDeadline(time.Now().Add(c.l.writeTimeout)); err != nil {
		return 0, err
	}
	return c.Conn.Write(b)
}

func (c *limitConn) Close() error {
	err := c.Conn.Close()
	c.once.Do(func() { c.l.release(c) })
	return err
}

func connIP(c net.Conn) netip.Addr {
	if a, ok := c.RemoteAddr().(*net.TCPAddr); ok {
		return a.AddrPort().Addr().Unmap()
	}
	return netip.Addr{}
}
