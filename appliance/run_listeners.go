package appliance

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"strings"
	"syscall"

	"github.com/clauderon/clauderond/appliance/config"
	"github.com/clauderon/clauderond/dnsredir"
	"github.com/clauderon/clauderond/netfilter"
	"github.com/clauderon/clauderond/tlsmitm"
	"golang.org/x/sync/errgroup"
	"golang.org/x/sys/unix"
)

// stepListeners builds the terminator and the DNS shim and serves them on
// listeners bound to the gateway.
func (d *daemon) stepListeners(ctx context.Context, g *errgroup.Group) error {
	res, err := dnsredir.NewUpstreamResolver(dnsredir.UpstreamConfig{Servers: dnsServers(d.cfg.DNS.Servers),
		Logger: d.base})
	if err != nil {
		return fmt.Errorf("dns.servers: %w", err)
	}
	d.resolver = res
	d.closers = append(d.closers, res.Close)
	d.metrics = newMetrics(d.statsSource())
	d.events = &eventAdapter{out: d.audit, metrics: d.metrics, owner: d.ownerOf, workload: d.workloadOf, placeholders: newPlaceholderWatch(&d.records, d.table, d.base)}
	p, err := buildParts(d.cfg, d.store, d.network.Gateway, d.base)
	if p != nil {
		p.injector.records, p.injector.pod = &d.records, d.work.get
	}
	if err != nil {
		return err
	}
	d.parts.Store(p)
	tcfg := tlsmitm.Config{StateDir: d.cfg.StateDir, DrainTimeout: d.cfg.DrainTimeout, Logger: d.base, EventLogger: d.clientLog}
	tcfg.SetReloadable(p.tlsReloadable(d.identityFor(d.cfg), d.events, res, d.network.Subnet))
	if d.tls, err = tlsmitm.New(tcfg); err != nil {
		return fmt.Errorf("starting the TLS terminator: %w", err)
	}
	d.dnsRes = &overrideResolver{base: res}
	if srv := d.cfg.ClusterDNSServer(); d.cfg.NodeMode() && srv.IsValid() {
		cres, err := dnsredir.NewUpstreamResolver(dnsredir.UpstreamConfig{Servers: []string{srv.String()}, Logger: d.base})
		if err != nil {
			return fmt.Errorf("kubernetes.cluster_dns: %w", err)
		}
		d.closers = append(d.closers, cres.Close)
		d.dnsRes.base = clusterDNS{domain: strings.ToLower(d.cfg.Kubernetes.ClusterDomain), cluster: cres, base: res}
	}
	d.dnsRes.set(p.overrides)
	if d.dnsH, err = dnsredir.NewHandler(dnsConfig(d.cfg, p, dnsIdentity{d.table}, d.events, d.dnsRes, d.clientLog)); err != nil {
		return fmt.Errorf("starting the DNS shim: %w", err)
	}
	host := d.network.Gateway.String()
	if d.opts.listenAddr != "" {
		host = d.opts.listenAddr
	}
	tlsAddr := net.JoinHostPort(host, strconv.Itoa(d.cfg.Listen.TLSPort))
	dnsAddr := net.JoinHostPort(host, strconv.Itoa(d.cfg.Listen.DNSPort))
	lc := listenerConfig(d.opts.listenAddr == "", d.network.Pending)
	tln, err := lc.Listen(ctx, "tcp", tlsAddr)
	if err != nil {
		return fmt.Errorf("listening on %s (listen.tls_port): %w; is another clauderond running?", tlsAddr, err)
	}
	dln, err := lc.Listen(ctx, "tcp", dnsAddr)
	if err != nil {
		tln.Close()
		return fmt.Errorf("listening on tcp %s (listen.dns_port): %w", dnsAddr, err)
	}
	dpc, err := lc.ListenPacket(ctx, "udp", dnsAddr)
	if err != nil {
		tln.Close()
		dln.Close()
		return fmt.Errorf("listening on udp %s (listen.dns_port): %w", dnsAddr, err)
	}
	d.listeners = []listenerStatus{{"tls", tln.Addr().String(), true}, {"dns-udp", dpc.LocalAddr().String(), true},
		{"dns-tcp", dln.Addr().String(), true}}
	g.Go(func() error { return d.serveTLS(ctx, tln) })
	dsrv := dnsredir.NewServer(d.dnsH, dnsredir.ServerConfig{Logger: d.base})
	g.Go(func() error { return serveDNS(ctx, dsrv, dpc, dln) })
	return nil
}

// listenerConfig makes the listener sockets. On the bridge (owned) they
// carry SO_MARK netfilter.DefaultListenerMark (needs CAP_NET_ADMIN): the
// input chain hands redirected traffic only to sockets with that mark, so
// an unprivileged user listening on our ports while the daemon is down
// receives nothing. No SO_BINDTODEVICE: it binds the bridge's ifindex,
// and the network recreated behind our back gets a new bridge device the
// sockets would no longer serve; the input chain refuses traffic to the
// listeners from other interfaces instead. A test listening elsewhere
// (withListenAddr) gets plain sockets. freebind (node mode, before the CNI
// has given the bridge its gateway address) binds the address ahead of
// time: the sockets serve as soon as the bridge carries it.
func listenerConfig(owned, freebind bool) *net.ListenConfig {
	if !owned {
		return &net.ListenConfig{}
	}
	return &net.ListenConfig{Control: func(network, address string, rc syscall.RawConn) error {
		var serr error
		err := rc.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_MARK, int(netfilter.DefaultListenerMark))
			if serr == nil && freebind {
				serr = unix.SetsockoptInt(int(fd), unix.IPPROTO_IP, unix.IP_FREEBIND, 1)
			}
		})
		if err != nil {
			return fmt.Errorf("configuring the %s listener %s: %w", network, address, err)
		}
		if serr != nil {
			return fmt.Errorf("setting SO_MARK on the %s listener %s (needs CAP_NET_ADMIN): %w", network, address, serr)
		}
		return nil
	}}
}

func (d *daemon) serveTLS(ctx context.Context, ln net.Listener) error {
	if err := d.tls.Serve(ctx, ln); err != nil {
		return fmt.Errorf("TLS terminator: %w", err)
	}
	return nil
}

func serveDNS(ctx context.Context, s *dnsredir.Server, pc net.PacketConn, ln net.Listener) error {
	if err := s.Serve(ctx, pc, ln); err != nil {
		return fmt.Errorf("DNS shim: %w", err)
	}
	return nil
}

func (d *daemon) stepMetrics(ctx context.Context, g *errgroup.Group) error {
	addr := d.cfg.Metrics.Address
	if addr == "" {
		return nil
	}
	if err := checkMetricsAddress(addr, d.network.Subnet, d.network.Gateway); err != nil {
		return err
	}
	ln, err := (&net.ListenConfig{}).Listen(ctx, "tcp", addr)
	if err != nil {
		return fmt.Errorf("listening on metrics.address %s: %w", addr, err)
	}
	if ap, err := netip.ParseAddrPort(ln.Addr().String()); err == nil {
		if err := checkMetricsAddress(ap.String(), d.network.Subnet, d.network.Gateway); err != nil {
			ln.Close()
			return err
		}
	}
	d.listeners = append(d.listeners, listenerStatus{"metrics", ln.Addr().String(), true})
	g.Go(func() error { return serveMetrics(ctx, ln, d.metrics, d.notReady, d.log) })
	return nil
}

func (d *daemon) statsSource() statsSource {
	return statsSource{
		tls: func() tlsmitm.Stats {
			if d.tls == nil {
				return tlsmitm.Stats{}
			}
			return d.tls.Stats()
		},
		dns: func() dnsredir.Stats {
			if d.dnsH == nil {
				return dnsredir.Stats{}
			}
			return d.dnsH.Stats()
		},
		nft: func(ctx context.Context) ([]netfilter.Counter, error) {
			if d.opts.nft == nil {
				return nil, netfilter.ErrNotApplied
			}
			return d.opts.nft.Counters(ctx)
		},
		reapplies: func() uint64 {
			if d.enforcer == nil {
				return 0
			}
			_, _, n := d.enforcer.snapshot()
			return n
		},
		containers: func() int {
			if d.table == nil {
				return 0
			}
			return len(d.table.List())
		},
	}
}

// notReady says why the daemon is not ready to confine the bridge, "" when
// it is (the metrics listener's /readyz).
func (d *daemon) notReady() string {
	switch {
	case !d.ready.Load():
		return "starting or stopping"
	case d.enforcer == nil:
		return "no ruleset applied"
	}
	if state, drift, _ := d.enforcer.snapshot(); state != EnforcementIntact {
		return fmt.Sprintf("enforcement %s: %v", state, drift)
	}
	if d.config().NodeMode() {
		return d.podBridgeMissing()
	}
	return ""
}

// dnsServers is dns.servers as written ("ip" or "ip:port"), the form the
// upstream resolver reads.
func dnsServers(list []config.DNSServer) []string {
	out := make([]string, len(list))
	for i, s := range list {
		out[i] = string(s)
	}
	return out
}
