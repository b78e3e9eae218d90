package tlsmitm

import (
	"net"
	"net/netip"
	"sync"
	"time"
)

// sourceLimiter counts open client connections per source address.
type sourceLimiter struct {
	mu   sync.Mutex
	open map[netip.Addr]int
}

func (l *sourceLimiter) acquire(a netip.Addr, max int) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.open == nil {
		l.open = make(map[netip.Addr]int)
	}
	if l.open[a] >= max {
		return false
	}
	l.open[a]++
	return true
}

func (l *sourceLimiter) release(a netip.Addr) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.open[a] <= 1 {
		delete(l.open, a)
		return
	}
	l.open[a]--
}

// sourceConn gives its slot back to the limiter on the first Close, whichever
// path (deny, splice, the HTTP server) closes it.
type sourceConn struct {
	net.Conn
	once sync.Once
	lim  *sourceLimiter
	src  netip.Addr
}

func (c *sourceConn) Close() error {
	c.once.Do(func() { c.lim.release(c.src) })
	return c.Conn.Close()
}

// NetConn is the accepted TCP connection (SO_ORIGINAL_DST, CloseWrite).
func (c *sourceConn) NetConn() net.Conn { return c.Conn }

// CloseWrite half-closes the underlying TCP connection (passthrough, deny).
func (c *sourceConn) CloseWrite() error {
	if cw, ok := c.Conn.(interface{ CloseWrite() error }); ok {
		return cw.CloseWrite()
	}
	return nil
}

// admitSource applies MaxConnsPerSource: it returns the connection wrapped
// so that closing it frees the slot, or nil (connection closed, counted)
// when that source already holds its share.
func (s *Server) admitSource(c net.Conn) net.Conn {
	src := addrPortOf(c.RemoteAddr()).Addr().Unmap()
	if !s.perSource.acquire(src, s.cfg.MaxConnsPerSource) {
		s.stats.rejected.Add(1)
		if ok, suppressed := s.logLimit.allow(time.Now()); ok {
			s.log.Warn("per-source connection limit reached; closing new connection",
				"src", src, "max_conns_per_source", s.cfg.MaxConnsPerSource, "suppressed_since_last", suppressed)
		}
		c.Close()
		return nil
	}
	return &sourceConn{Conn: c, lim: &s.perSource, src: src}
}
