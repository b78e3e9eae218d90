package tlsmitm

import (
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
)

// Fair shares. Two things every container shares are admitted by one rule
// (share.admit): open client connections (MaxConns, MaxConnsPerSource) and
// intercepted requests in flight (MaxRequests, MaxRequestsPerSource).
//
//  1. The total stays below the global cap.
//  2. A source (client address) stays below its per-source cap.
//  3. The last quarter of the global cap is a reserve: once three quarters
//     are taken, only a source holding fewer than a sixty-fourth of the
//     global cap (its floor) is admitted.
//
// Sources that already hold a lot can therefore together take at most three
// quarters of either resource, however many of them there are, and a new or
// light source still finds room for its first max/64 (64 connections, 16
// requests with the defaults) until at least 16 such sources share the
// reserve.
type share struct {
	max, perSource int
	total          int
}

// admit reports whether a source holding held may take one more.
func (sh *share) admit(held int) bool {
	switch {
	case sh.total >= sh.max || held >= sh.perSource:
		return false
	case sh.total >= sh.max-sh.max/4 && held >= max(sh.max/64, 1):
		return false
	}
	return true
}

// source is one client address's holdings, guarded by sourceLimiter.mu. A
// connection keeps a pointer to it, so a request needs no map lookup.
type source struct {
	addr        netip.Addr
	conns, reqs int
}

// sourceLimiter applies the fair shares of connections and requests.
type sourceLimiter struct {
	mu    sync.Mutex
	srcs  map[netip.Addr]*source
	conns share
	reqs  share
}

func newSourceLimiter(cfg *Config) *sourceLimiter {
	return &sourceLimiter{
		srcs:  make(map[netip.Addr]*source),
		conns: share{max: cfg.MaxConns, perSource: cfg.MaxConnsPerSource},
		reqs:  share{max: cfg.MaxRequests, perSource: cfg.MaxRequestsPerSource},
	}
}

// acquireConn takes a connection slot for a, or returns nil and why not.
func (l *sourceLimiter) acquireConn(a netip.Addr) (*source, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	src := l.srcs[a]
	held := 0
	if src != nil {
		held = src.conns
	}
	if !l.conns.admit(held) {
		return nil, limitError("connections", held, &l.conns)
	}
	if src == nil {
		src = &source{addr: a}
		l.srcs[a] = src
	}
	src.conns++
	l.conns.total++
	return src, nil
}

func (l *sourceLimiter) releaseConn(src *source) {
	l.mu.Lock()
	defer l.mu.Unlock()
	src.conns--
	l.conns.total--
	l.forget(src)
}

// acquireRequest takes a request slot for src (nil: a connection that did
// not come through admitSource, counted in the total only).
func (l *sourceLimiter) acquireRequest(src *source) error {
	l.mu.Lock()
	defer l.mu.Unlock()
	held := 0
	if src != nil {
		held = src.reqs
	}
	if !l.reqs.admit(held) {
		return limitError("requests in flight", held, &l.reqs)
	}
	if src != nil {
		src.reqs++
	}
	l.reqs.total++
	return nil
}

func (l *sourceLimiter) releaseRequest(src *source) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.reqs.total--
	if src != nil {
		src.reqs--
		l.forget(src)
	}
}

// forget drops src from the table once it holds nothing (a request can
// outlive its connection by a moment).
func (l *sourceLimiter) forget(src *source) {
	if src.conns <= 0 && src.reqs <= 0 && l.srcs[src.addr] == src {
		delete(l.srcs, src.addr)
	}
}

// errTooMany: a fair-share limit refused a connection or a request. A
// request refused for it is answered 503 with Retry-After.
var errTooMany = errors.New("limit reached")

// limitError says which rule refused, naming the numbers an operator tunes.
func limitError(what string, held int, sh *share) error {
	switch {
	case held >= sh.perSource:
		return fmt.Errorf("%w: this source already has %d %s (per-source limit %d)", errTooMany, held, what, sh.perSource)
	case sh.total >= sh.max:
		return fmt.Errorf("%w: %d %s open in total (limit %d)", errTooMany, sh.total, what, sh.max)
	}
	return fmt.Errorf("%w: %d %s open in total; the last quarter of the limit %d is kept for sources holding fewer than %d, and this one has %d",
		errTooMany, sh.total, what, sh.max, max(sh.max/64, 1), held)
}

// sourceConn gives its slot back to the limiter on the first Close, whichever
// path (deny, splice, the HTTP server) closes it.
type sourceConn struct {
	net.Conn
	once sync.Once
	lim  *sourceLimiter
	src  *source
}

func (c *sourceConn) Close() error {
	c.once.Do(func() { c.lim.releaseConn(c.src) })
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

// admitSource applies the connection shares (MaxConns, MaxConnsPerSource
// and the reserve): it returns the connection wrapped so that closing it
// frees the slot, or nil (connection closed unread, counted) when the
// source may not open another.
func (s *Server) admitSource(c net.Conn) net.Conn {
	a := addrPortOf(c.RemoteAddr()).Addr().Unmap()
	src, err := s.limits.acquireConn(a)
	if err != nil {
		s.stats.rejected.Add(1)
		s.events.Warn("connection limit reached; closing new connection", "src", a, "err", err.Error())
		c.Close()
		return nil
	}
	return &sourceConn{Conn: c, lim: s.limits, src: src}
}

// sourceOf returns the limiter record of an admitted connection.
func sourceOf(c net.Conn) *source {
	if sc, ok := c.(*sourceConn); ok {
		return sc.src
	}
	return nil
}

// admitRequest applies the request shares to one intercepted request; the
// caller releases with releaseRequest when it returns nil.
func (s *Server) admitRequest(info *connInfo) error {
	if err := s.limits.acquireRequest(info.source); err != nil {
		s.stats.refusedRequests.Add(1)
		return err
	}
	return nil
}

func (s *Server) releaseRequest(info *connInfo) { s.limits.releaseRequest(info.source) }
