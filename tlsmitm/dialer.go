package tlsmitm

import (
	"context"
	"crypto/tls"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"sync"
	"syscall"
	"time"
)

// addrPolicy decides which upstream addresses may be dialled. Loopback,
// link-local (cloud metadata lives there), unspecified, multicast and
// broadcast addresses, the denied prefixes (the bridge subnet) and the
// host's own addresses are refused unless an override names that exact
// address.
type addrPolicy struct {
	denied []netip.Prefix
	own    *ownAddrs
}

func (p addrPolicy) check(ap netip.AddrPort, allow netip.AddrPort) error {
	if allow.IsValid() && ap == allow {
		return nil
	}
	a := ap.Addr().Unmap()
	var why string
	switch {
	case a.IsLoopback():
		why = "loopback"
	case a.IsLinkLocalUnicast(), a.IsLinkLocalMulticast():
		why = "link-local"
	case a.IsUnspecified():
		why = "unspecified"
	case a.IsMulticast(), a.IsInterfaceLocalMulticast():
		why = "multicast"
	case a == netip.AddrFrom4([4]byte{255, 255, 255, 255}):
		why = "broadcast"
	}
	if why == "" {
		for _, pfx := range p.denied {
			if pfx.Contains(a) {
				why = "denied prefix " + pfx.String()
				break
			}
		}
	}
	if why == "" && p.own != nil && p.own.contains(a) {
		why = "an address of this host"
	}
	if why != "" {
		return fmt.Errorf("%w: %s is %s (add an upstreams override naming this exact address to allow it)", ErrUpstreamDenied, ap, why)
	}
	return nil
}

// control returns a ControlContext hook that vets the resolved address
// right before connect(2).
func (p addrPolicy) control(allow netip.AddrPort) ControlFunc {
	return func(_ context.Context, network, address string, _ syscall.RawConn) error {
		ap, err := netip.ParseAddrPort(address)
		if err != nil {
			return fmt.Errorf("%w: unparsable address %q", ErrUpstreamDenied, address)
		}
		return p.check(ap, allow)
	}
}

// ownAddrs caches the host's interface addresses, refreshed at most every
// ownAddrsTTL.
type ownAddrs struct {
	list    func() ([]net.Addr, error)
	mu      sync.Mutex
	set     map[netip.Addr]struct{}
	fetched time.Time
}

const ownAddrsTTL = 30 * time.Second

func (o *ownAddrs) contains(a netip.Addr) bool {
	o.mu.Lock()
	defer o.mu.Unlock()
	if o.set == nil || time.Since(o.fetched) > ownAddrsTTL {
		o.refresh()
	}
	_, ok := o.set[a]
	return ok
}

func (o *ownAddrs) refresh() {
	addrs, err := o.list()
	if err != nil && o.set != nil {
		return // keep the last good list
	}
	set := make(map[netip.Addr]struct{}, len(addrs))
	for _, a := range addrs {
		if pfx, err := netip.ParsePrefix(a.String()); err == nil {
			set[pfx.Addr().Unmap()] = struct{}{}
		} else if ip, err := netip.ParseAddr(a.String()); err == nil {
			set[ip.Unmap()] = struct{}{}
		}
	}
	o.set, o.fetched = set, time.Now()
}

// dialUpstream connects TCP to host's upstream: the override's address if
// one names host, else each address the resolver returns for host, on
// port. Every connect goes through the address policy.
func (s *Server) dialUpstream(ctx context.Context, st *state, host, port string) (net.Conn, error) {
	if o, ok := st.overrides[host]; ok {
		return s.dialOverride(ctx, st, o)
	}
	ips, err := st.resolver.LookupNetIP(ctx, "ip", host)
	if err != nil {
		return nil, fmt.Errorf("resolving upstream %s: %w: %w", host, ErrUpstreamDNS, err)
	}
	if len(ips) == 0 {
		return nil, fmt.Errorf("resolving upstream %s: %w: no addresses", host, ErrUpstreamDNS)
	}
	var errs []error
	for _, ip := range ips {
		addr := net.JoinHostPort(ip.Unmap().String(), port)
		c, err := s.dialTCP(ctx, addr, st.policy.control(netip.AddrPort{}))
		if err == nil {
			return c, nil
		}
		errs = append(errs, err)
		if ctx.Err() != nil {
			break
		}
	}
	return nil, fmt.Errorf("connecting to upstream %s: %w", host, errors.Join(errs...))
}

func (s *Server) dialOverride(ctx context.Context, st *state, o Upstream) (net.Conn, error) {
	h, p, _ := net.SplitHostPort(o.Address) // validated in Config.validate
	if ip, err := netip.ParseAddr(h); err == nil {
		ap, _ := netip.ParseAddrPort(net.JoinHostPort(ip.Unmap().String(), p))
		c, err := s.dialTCP(ctx, ap.String(), st.policy.control(ap))
		if err != nil {
			return nil, fmt.Errorf("connecting to upstream override %s for %s: %w", o.Address, o.Host, err)
		}
		return c, nil
	}
	ips, err := st.resolver.LookupNetIP(ctx, "ip", h)
	if err != nil || len(ips) == 0 {
		return nil, fmt.Errorf("resolving upstream override %s for %s: %w: %v", o.Address, o.Host, ErrUpstreamDNS, err)
	}
	ap := netip.AddrPortFrom(ips[0].Unmap(), mustPort(p))
	c, err := s.dialTCP(ctx, ap.String(), st.policy.control(ap))
	if err != nil {
		return nil, fmt.Errorf("connecting to upstream override %s for %s: %w", o.Address, o.Host, err)
	}
	return c, nil
}

func mustPort(p string) uint16 {
	var n uint16
	for _, c := range p {
		if c < '0' || c > '9' {
			return 0
		}
		n = n*10 + uint16(c-'0')
	}
	return n
}

// dialTCP connects with the address policy in ControlContext (vetted right
// before connect), then checks the peer address once more, so that an
// injected DialContext that ignores control cannot bypass the policy.
func (s *Server) dialTCP(ctx context.Context, addr string, control ControlFunc) (net.Conn, error) {
	ctx, cancel := context.WithTimeout(ctx, s.cfg.DialTimeout)
	defer cancel()
	var c net.Conn
	var err error
	if s.cfg.DialContext != nil {
		c, err = s.cfg.DialContext(ctx, "tcp", addr, control)
	} else {
		d := net.Dialer{ControlContext: control, KeepAlive: 30 * time.Second}
		c, err = d.DialContext(ctx, "tcp", addr)
	}
	if err != nil {
		return nil, err
	}
	if err := control(ctx, "tcp", addrPortOf(c.RemoteAddr()).String(), nil); err != nil {
		c.Close()
		return nil, err
	}
	return c, nil
}

// dialUpstreamTLS connects to host and completes a verified TLS handshake
// offering protos. It is the Transports' DialTLSContext.
func (s *Server) dialUpstreamTLS(ctx context.Context, st *state, addr string, protos []string) (net.Conn, error) {
	host, port, err := net.SplitHostPort(addr)
	if err != nil {
		return nil, fmt.Errorf("dialing upstream %q: %w", addr, err)
	}
	raw, err := s.dialUpstream(ctx, st, host, port)
	if err != nil {
		return nil, err
	}
	roots := st.rootCAs
	if o, ok := st.overrides[host]; ok && o.RootCAs != nil {
		roots = o.RootCAs
	}
	bc := newBatchConn(raw)
	tc := tls.Client(&bc, &tls.Config{
		ServerName:         host,
		RootCAs:            roots,
		NextProtos:         protos,
		MinVersion:         tls.VersionTLS12,
		ClientSessionCache: st.sessions,
		// Full-size records for request bodies from the first byte (see
		// newTLSConfig); prompts of several hundred KiB are common.
		DynamicRecordSizingDisabled: true,
	})
	hctx, cancel := context.WithTimeout(ctx, s.cfg.UpstreamTLSTimeout)
	defer cancel()
	if err := tc.HandshakeContext(hctx); err != nil {
		raw.Close()
		return nil, fmt.Errorf("%w with %s (%s): %w", errTLSHandshake, host, raw.RemoteAddr(), err)
	}
	return tc, nil
}
