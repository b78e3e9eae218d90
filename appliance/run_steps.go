package appliance

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"time"

	"github.com/clauderon/clauderond/appliance/bridge"
	"github.com/clauderon/clauderond/appliance/identity"
	"github.com/clauderon/clauderond/injector"
	"github.com/clauderon/clauderond/netfilter"
	"github.com/clauderon/clauderond/tlsmitm/localca"
	"github.com/docker/docker/client"
	"golang.org/x/sync/errgroup"
)

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

func (d *daemon) stepBridge(ctx context.Context, g *errgroup.Group) error {
	if d.cfg.NodeMode() {
		return d.stepNodeBridge(ctx, g)
	}
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
	onChange := func(ctx context.Context, cs []identity.Container) {
		d.work.set(cs)
		for _, c := range cs {
			d.records.bindRun(ctx, c.ID, c.Labels)
		}
		if d.enforcer != nil {
			d.enforcer.setContainers(ctx, cs)
		}
	}
	if d.cfg.NodeMode() {
		src, err := d.newPodSource(onChange)
		if err != nil {
			return err
		}
		d.table = src
		if err := src.Sync(ctx); err != nil {
			// Not fatal: the rules go in next (closed: no pod is known, so
			// none is let through) and the watch keeps listing. Stopping
			// here would leave the node unconfined while the API server
			// is away (after a reboot, say).
			d.log.Error("listing this node's pods failed; no pod gets through until a list succeeds (retrying)",
				"node", d.cfg.Kubernetes.Node, "err", err)
		}
		d.work.set(src.List())
		return nil
	}
	veth := d.opts.veth
	if veth == nil {
		veth = identity.BridgeVeth(d.network.Bridge)
	}
	d.table = identity.New(identity.Config{
		Docker: d.docker, Network: d.network.Name, Subnet: d.network.Subnet, Veth: veth, Logger: d.base,
		OnChange: onChange,
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
	d.work.set(d.table.List())
	return nil
}

// stepNetfilter applies the ruleset once (atomically replacing any table a
// previous run left), with the running containers' ports.
func (d *daemon) stepNetfilter(ctx context.Context, g *errgroup.Group) error {
	if d.opts.nft == nil {
		if err := netfilter.Probe(ctx, netfilter.KernelConfig{}).Err(); err != nil {
			return fmt.Errorf("kernel support for the ruleset: %w", err)
		}
		k, err := netfilter.NewKernel(netfilter.KernelConfig{Logger: d.base})
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
	if !d.cfg.NodeMode() {
		g.Go(func() error { return d.reensureNetwork(ctx) })
	} else if d.network.Pending {
		g.Go(func() error { return d.awaitPodBridge(ctx, time.Second) })
	}
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
