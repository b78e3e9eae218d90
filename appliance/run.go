package appliance

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"sync"
	"sync/atomic"
	"time"

	"github.com/clauderon/clauderond/appliance/authz"
	"github.com/clauderon/clauderond/appliance/bridge"
	"github.com/clauderon/clauderond/appliance/config"
	"github.com/clauderon/clauderond/appliance/kubepods"
	"github.com/clauderon/clauderond/appliance/ratelog"
	"github.com/clauderon/clauderond/dnsredir"
	"github.com/clauderon/clauderond/injector"
	"github.com/clauderon/clauderond/netfilter"
	"github.com/clauderon/clauderond/tlsmitm"
	"github.com/clauderon/clauderond/tlsmitm/localca"
	"golang.org/x/sync/errgroup"
)

// fixHint ends start-up errors that may have left state behind.
const fixHint = "; run `clauderond teardown`, then start clauderond again if the problem persists"

// daemon is one running clauderond.
type daemon struct {
	opts options
	log  *slog.Logger // component=appliance
	base *slog.Logger // for the parts, which add their own component
	// clientLog takes the parts' lines a client causes (per connection,
	// request or query), rate-limited by ratelog: one handler for all the
	// parts, a budget per part and level.
	clientLog *slog.Logger

	cfgMu sync.Mutex
	cfg   *config.Config

	docker   DockerClient
	kube     *kubepods.Client // node mode
	closers  []func() error
	network  bridge.Network
	ca       *localca.CA
	store    *injector.Store
	audit    auditSink
	events   *eventAdapter
	metrics  *metrics
	table    identitySource
	work     workloads // the table's workloads by ID
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
	if p := hostResolverProblem(d.network.Gateway); p != "" && !cfg.NodeMode() {
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
	return &daemon{ensure: make(chan struct{}, 1), opts: o, cfg: cfg, log: logger.With("component", "appliance"), base: logger,
		clientLog: slog.New(ratelog.New(logger.Handler(), ratelog.Config{}))}, nil
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
		// node mode adopts the CNI's bridge instead (stepBridge branches)
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

// close releases what start opened, in reverse order (audit flush included).
func (d *daemon) close() {
	for i := len(d.closers) - 1; i >= 0; i-- {
		if err := d.closers[i](); err != nil {
			d.log.Warn("closing", "err", err)
		}
	}
}
