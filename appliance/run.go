package appliance

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"syscall"
	"time"

	"github.com/clauderon/clauderond/appliance/authz"
	"github.com/clauderon/clauderond/appliance/bridge"
	"github.com/clauderon/clauderond/appliance/config"
	"github.com/clauderon/clauderond/appliance/identity"
	"github.com/clauderon/clauderond/dnsredir"
	"github.com/clauderon/clauderond/injector"
	"github.com/clauderon/clauderond/netfilter"
	"github.com/clauderon/clauderond/tlsmitm"
	"github.com/clauderon/clauderond/tlsmitm/localca"
	"github.com/docker/docker/client"
	"golang.org/x/sync/errgroup"
	"golang.org/x/sys/unix"
)

// fixHint ends start-up errors that may have left state behind.
const fixHint = "; run `clauderond teardown`, then start clauderond again if the problem persists"

// daemon is one running clauderond.
type daemon struct {
	opts options
	log  *slog.Logger // component=appliance
	base *slog.Logger // for the parts, which add their own component

	cfgMu sync.Mutex
	cfg   *config.Config

	docker   DockerClient
	closers  []func() error
	network  bridge.Network
	ca       *localca.CA
	store    *injector.Store
	audit    auditSink
	events   *eventAdapter
	metrics  *metrics
	table    *identity.Table
	enforcer *enforcer
	resolver *dnsredir.UpstreamResolver
	dnsRes   *overrideResolver // the DNS shim's resolver: overrides, then resolver
	tls      *tlsmitm.Server
	dnsH     *dnsredir.Handler
	parts    atomic.Pointer[parts]
	records  containerRecords             // which containers the daemon made (sessions, runs)
	authz    atomic.Pointer[authz.Policy] // the authorization plugin's, when served

	listeners []listenerStatus
	ensure    chan struct{} // network destroyed behind our back: recreate it
	ready     atomic.Bool
	reloadMu  sync.Mutex
}

type listenerStatus struct {
	Name, Address string
	OK            bool
}

// Run starts clauderond and blocks until ctx is cancelled (SIGTERM) or a
// component fails. On return the listeners are drained and closed, the audit
// log is flushed and the API socket is removed; the Docker network and the
// nftables rules stay in place so the bridge fails closed.
func Run(ctx context.Context, cfg *config.Config, logger *slog.Logger, opts ...Option) error {
	d, err := newDaemon(cfg, logger, opts)
	if err != nil {
		return err
	}
	defer d.close()
	g, gctx := errgroup.WithContext(ctx)
	if err := d.start(gctx, g); err != nil {
		d.log.Error("start-up failed", "err", err)
		_ = g.Wait() // start cancelled the parts it had started; wait for them
		return err
	}
	d.ready.Store(true)
	d.metrics.ready.Set(1)
	d.log.Info("ready", "network", d.network.Name, "bridge", d.network.Bridge, "gateway", d.network.Gateway,
		"tls_port", cfg.Listen.TLSPort, "dns_port", cfg.Listen.DNSPort, "state_dir", cfg.StateDir)
	if p := hostResolverProblem(d.network.Gateway); p != "" {
		d.log.Warn(p)
	}
	if d.opts.onReady != nil {
		d.opts.onReady()
	}
	err = g.Wait()
	d.ready.Store(false)
	d.metrics.ready.Set(0)
	if err != nil && ctx.Err() == nil {
		d.log.Error("a component failed; stopping (rules and network stay in place)", "err", err)
		return err
	}
	d.log.Info("stopped; the network and nftables rules stay in place (fail closed)")
	return nil
}

func newDaemon(cfg *config.Config, logger *slog.Logger, opts []Option) (*daemon, error) {
	if cfg == nil {
		return nil, errors.New("no configuration")
	}
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("invalid configuration: %w", err)
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	o := options{table: netfilter.DefaultTable, verifyInterval: 10 * time.Second}
	for _, f := range opts {
		f(&o)
	}
	return &daemon{ensure: make(chan struct{}, 1), opts: o, cfg: cfg, log: logger.With("component", "appliance"), base: logger}, nil
}

// start runs the start-up steps in order; long-lived parts join g with a
// context derived from ctx. When a step fails, that context is cancelled so
// the parts already running stop, and the caller's g.Wait collects them.
func (d *daemon) start(ctx context.Context, g *errgroup.Group) (err error) {
	ctx, cancel := context.WithCancel(ctx)
	defer func() {
		if err != nil {
			cancel()
			return
		}
		g.Go(func() error { <-ctx.Done(); cancel(); return nil })
	}()
	steps := []struct {
		name string
		fn   func(context.Context, *errgroup.Group) error
	}{
		{"state dir", d.stepStateDir},
		{"CA", d.stepCA},
		{"credentials", d.stepCredentials},
		{"audit log", d.stepAudit},
		{"bridge network", d.stepBridge},
		{"identity", d.stepIdentity},
		{"listeners", d.stepListeners},
		{"nftables", d.stepNetfilter},
		{"docker events", d.stepWatchers},
		{"metrics", d.stepMetrics},
		{"daemon API", d.stepAPI},
		{"docker authorization plugin", d.stepAuthz},
		{"reload", d.stepReload},
	}
	for _, s := range steps {
		t0 := time.Now()
		if err := s.fn(ctx, g); err != nil {
			return fmt.Errorf("start-up step %q: %w", s.name, err)
		}
		d.log.Debug("start-up step done", "step", s.name, "took", time.Since(t0))
	}
	return nil
}

func (d *daemon) stepStateDir(ctx context.Context, g *errgroup.Group) error {
	if err := prepareStateDir(d.cfg.StateDir); err != nil {
		return err
	}
	why := swappableBy(d.cfg.StateDir, os.Geteuid())
	if why == "" {
		return nil
	}
	pin, err := pinStateDir(d.cfg.StateDir)
	if err != nil {
		return err
	}
	d.closers = append(d.closers, pin.f.Close)
	d.log.Warn("the state dir could be swapped by another user; clauderond stops if it is (fail closed). A path only root can change, e.g. /var/lib/clauderon, avoids this",
		"state_dir", d.cfg.StateDir, "because", why)
	g.Go(func() error { return pin.watch(ctx, time.Second) })
	return nil
}

func (d *daemon) stepCA(context.Context, *errgroup.Group) error {
	ca, err := d.loadCA()
	if errors.Is(err, localca.ErrNotPermitted) {
		return err
	}
	if err != nil {
		return fmt.Errorf("loading the local CA from %s: %w (it must be %s and %s, the key mode 0600)",
			d.cfg.StateDir, err, localca.CertFile, localca.KeyFile)
	}
	d.ca = ca
	return nil
}

func (d *daemon) stepCredentials(ctx context.Context, g *errgroup.Group) error {
	st, err := injector.NewStore(injector.StoreOptions{
		SecretsDir:      filepath.Join(d.cfg.StateDir, "secrets"),
		CredentialsFile: d.cfg.CredentialsFile,
		Logger:          d.base,
	})
	if err != nil {
		return fmt.Errorf("reading credentials: %w", err)
	}
	d.store = st
	warnMissingCredentials(d.log, st.Summary(), d.cfg.CredentialsFile, os.Getenv("SUDO_USER") != "")
	g.Go(func() error { return st.Watch(ctx) })
	return nil
}

func (d *daemon) stepAudit(context.Context, *errgroup.Group) error {
	a, err := openAudit(d.cfg, d.store, d.log)
	if err != nil {
		return err
	}
	d.audit = a
	d.closers = append(d.closers, a.Close)
	return nil
}

func (d *daemon) stepBridge(ctx context.Context, _ *errgroup.Group) error {
	if d.opts.docker == nil {
		c, err := client.NewClientWithOpts(client.FromEnv, client.WithAPIVersionNegotiation())
		if err != nil {
			return fmt.Errorf("creating the docker client: %w", err)
		}
		d.closers = append(d.closers, c.Close)
		if _, err := c.Ping(ctx); err != nil {
			return fmt.Errorf("reaching dockerd: %w; is docker running (systemctl status docker)?", err)
		}
		d.docker = c
	} else {
		d.docker = d.opts.docker
	}
	n, err := bridge.Ensure(ctx, d.docker, bridge.Spec{Name: d.cfg.Network.Name, Bridge: d.cfg.Network.Bridge,
		Subnet: d.cfg.Subnet(), AllowIntraBridge: d.cfg.Network.AllowIntraBridge})
	if err != nil {
		return err
	}
	if err := d.waitGateway(ctx, n); err != nil {
		return err
	}
	d.network = n
	d.log.Info("bridge network ready", "network", n.Name, "bridge", n.Bridge, "subnet", n.Subnet,
		"gateway", n.Gateway, "created", n.Created)
	return nil
}

func (d *daemon) waitGateway(ctx context.Context, n bridge.Network) error {
	if d.opts.gatewayWait != nil {
		return d.opts.gatewayWait(n.Bridge, n.Gateway.String())
	}
	_, err := bridge.WaitGateway(ctx, n.Bridge, n.Gateway, 10*time.Second)
	return err
}

// stepIdentity builds the container table and reads the running containers
// once, so the first ruleset already carries their anti-spoofing ports.
func (d *daemon) stepIdentity(ctx context.Context, _ *errgroup.Group) error {
	veth := d.opts.veth
	if veth == nil {
		veth = identity.BridgeVeth(d.network.Bridge)
	}
	d.table = identity.New(identity.Options{
		Docker: d.docker, Network: d.network.Name, Subnet: d.network.Subnet, Veth: veth, Logger: d.base,
		OnChange: func(ctx context.Context, cs []identity.Container) {
			for _, c := range cs {
				d.records.bindRun(ctx, c.ID, c.Labels)
			}
			if d.enforcer != nil {
				d.enforcer.setContainers(ctx, cs)
			}
		},
		OnNetwork: func(action string) {
			if action == "destroy" {
				d.kickEnsure()
			}
			if d.enforcer != nil {
				d.enforcer.trigger()
			}
		},
	})
	if err := d.table.Sync(ctx); err != nil {
		return fmt.Errorf("listing the containers on %s: %w", d.network.Name, err)
	}
	return nil
}

// stepListeners builds the terminator and the DNS shim and serves them on
// listeners bound to the gateway.
func (d *daemon) stepListeners(ctx context.Context, g *errgroup.Group) error {
	res, err := dnsredir.NewUpstreamResolver(dnsredir.UpstreamConfig{Servers: d.cfg.DNS.Servers,
		Logger: d.base})
	if err != nil {
		return fmt.Errorf("dns.servers: %w", err)
	}
	d.resolver = res
	d.closers = append(d.closers, res.Close)
	d.metrics = newMetrics(d.statsSource())
	d.events = &eventAdapter{out: d.audit, metrics: d.metrics, owner: d.ownerOf, placeholders: newPlaceholderWatch(&d.records, d.table, d.base)}
	p, err := buildParts(d.cfg, d.store, d.network.Gateway, d.base)
	if p != nil {
		p.injector.records = &d.records
	}
	if err != nil {
		return err
	}
	d.parts.Store(p)
	if d.tls, err = tlsmitm.New(tlsConfig(d.cfg, p, identityAdapter{d.table}, d.events, res, d.network.Subnet, d.base)); err != nil {
		return fmt.Errorf("starting the TLS terminator: %w", err)
	}
	d.dnsRes = &overrideResolver{base: res}
	d.dnsRes.set(p.overrides)
	if d.dnsH, err = dnsredir.NewHandler(dnsConfig(d.cfg, p, dnsIdentity{d.table}, d.events, d.dnsRes, d.base)); err != nil {
		return fmt.Errorf("starting the DNS shim: %w", err)
	}
	host := d.network.Gateway.String()
	if d.opts.listenAddr != "" {
		host = d.opts.listenAddr
	}
	tlsAddr := net.JoinHostPort(host, strconv.Itoa(d.cfg.Listen.TLSPort))
	dnsAddr := net.JoinHostPort(host, strconv.Itoa(d.cfg.Listen.DNSPort))
	lc := listenerConfig(d.opts.listenAddr == "")
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
	dsrv := dnsredir.NewServer(d.dnsH)
	dsrv.Logger = d.base
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
// (withListenAddr) gets plain sockets.
func listenerConfig(owned bool) *net.ListenConfig {
	if !owned {
		return &net.ListenConfig{}
	}
	return &net.ListenConfig{Control: func(network, address string, rc syscall.RawConn) error {
		var serr error
		err := rc.Control(func(fd uintptr) {
			serr = unix.SetsockoptInt(int(fd), unix.SOL_SOCKET, unix.SO_MARK, int(netfilter.DefaultListenerMark))
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

// stepNetfilter applies the ruleset once (atomically replacing any table a
// previous run left), with the running containers' ports.
func (d *daemon) stepNetfilter(ctx context.Context, g *errgroup.Group) error {
	if d.opts.nft == nil {
		if err := netfilter.Probe(ctx).Err(); err != nil {
			return fmt.Errorf("kernel support for the ruleset: %w", err)
		}
		k, err := netfilter.NewKernel(netfilter.WithLogger(d.base))
		if err != nil {
			return fmt.Errorf("opening nftables: %w", err)
		}
		d.opts.nft = k
	}
	spec, err := netfilterSpec(d.cfg, d.opts.table, d.network.Bridge, d.network.Subnet, d.network.Gateway)
	if err != nil {
		return err
	}
	e := newEnforcer(d.opts.nft, spec, d.opts.verifyInterval, d.base)
	e.onState = func(state string) {
		d.metrics.enforced.Set(boolGauge(state == EnforcementIntact))
		d.log.Info("enforcement state", "state", state)
	}
	e.setContainers(ctx, d.table.List())
	if err := e.apply(ctx); err != nil {
		return fmt.Errorf("applying the nftables ruleset (table inet %s): %w%s", spec.Table, err, fixHint)
	}
	d.enforcer = e
	g.Go(func() error { return e.run(ctx) })
	return nil
}

// stepWatchers follows Docker events and the bridge link.
func (d *daemon) stepWatchers(ctx context.Context, g *errgroup.Group) error {
	g.Go(func() error { return d.table.Run(ctx) })
	g.Go(func() error { return d.reensureNetwork(ctx) })
	if d.opts.gatewayWait != nil {
		return nil // no kernel bridge in this run
	}
	g.Go(func() error { return d.watchBridgeLink(ctx) })
	g.Go(func() error { return d.auditWouldDeny(ctx) })
	return nil
}

// auditWouldDeny records the forwarded traffic that audit mode lets through
// (see watchWouldDeny). In enforce mode no such packets are logged. A failure
// here costs audit lines, not enforcement, so it is logged and not fatal.
func (d *daemon) auditWouldDeny(ctx context.Context) error {
	err := watchWouldDeny(ctx, d.enforcer.logGroup(), func(r record) {
		if a, err := netip.ParseAddr(r.SrcIP); err == nil {
			if c, ok := d.table.Lookup(a); ok {
				r.Container, r.ContainerID, r.Profile = c.Name, c.ID, c.Profile
			}
		}
		d.events.emit(r)
	})
	if err != nil {
		d.log.Warn("audit mode: would-deny packets will be counted but not audited", "err", err)
	}
	return nil
}

func (d *daemon) kickEnsure() {
	select {
	case d.ensure <- struct{}{}:
	default:
	}
}

// reensureNetwork recreates the Docker network when someone removes it while
// the daemon runs (Docker refuses while containers are attached, so this is
// an empty network). The rules never went away; the listeners stay bound to
// the gateway address and serve again once it is back.
func (d *daemon) reensureNetwork(ctx context.Context) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-d.ensure:
		}
		for attempt := 1; ctx.Err() == nil; attempt++ {
			n, err := bridge.Ensure(ctx, d.docker, bridge.Spec{Name: d.cfg.Network.Name, Bridge: d.network.Bridge,
				Subnet: d.network.Subnet, AllowIntraBridge: d.config().Network.AllowIntraBridge})
			if err == nil {
				err = d.waitGateway(ctx, n)
			}
			if err == nil {
				d.log.Warn("the docker network was removed while running; recreated it", "network", n.Name, "id", n.ID)
				d.enforcer.trigger()
				break
			}
			d.log.Error("recreating the removed docker network failed; retrying", "attempt", attempt, "err", err)
			select {
			case <-ctx.Done():
			case <-time.After(time.Duration(min(attempt, 10)) * time.Second):
			}
		}
	}
}

// watchBridgeLink re-verifies the ruleset whenever the bridge link changes.
func (d *daemon) watchBridgeLink(ctx context.Context) error {
	for ctx.Err() == nil {
		err := bridge.WatchLink(ctx, d.network.Bridge, func(ev bridge.LinkEvent) {
			if ev.Deleted {
				d.log.Error("bridge link deleted; rules stay in place; the network is recreated if docker removed it", "bridge", ev.Name)
			}
			d.enforcer.trigger()
		}, d.log)
		if err != nil {
			d.log.Warn("watching the bridge link failed; retrying", "err", err)
		}
		select {
		case <-ctx.Done():
		case <-time.After(time.Second):
		}
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
	g.Go(func() error { return serveMetrics(ctx, ln, d.metrics, d.log) })
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

// close releases what start opened, in reverse order (audit flush included).
func (d *daemon) close() {
	for i := len(d.closers) - 1; i >= 0; i-- {
		if err := d.closers[i](); err != nil {
			d.log.Warn("closing", "err", err)
		}
	}
}
