package appliance

import (
	"context"
	"fmt"

	"github.com/clauderon/clauderond/appliance/config"
	"golang.org/x/sync/errgroup"
)

// stepReload serves reload triggers (SIGHUP from cmd/clauderond).
func (d *daemon) stepReload(ctx context.Context, g *errgroup.Group) error {
	if d.opts.reloads == nil {
		return nil
	}
	g.Go(func() error { return d.reloadLoop(ctx) })
	return nil
}

func (d *daemon) reloadLoop(ctx context.Context) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case _, ok := <-d.opts.reloads:
			if !ok {
				return nil
			}
			if err := d.reload(ctx); err != nil {
				d.log.Error("reload failed", "err", err)
			}
		}
	}
}

// reload re-reads the configuration (when a loader was given) and the
// credentials, builds everything that depends on them, and only then swaps it
// in: a bad file or a bad credential directory changes nothing (and the
// error says so). Only a kernel failure while applying the new ruleset can
// leave it half-applied, which the returned error states.
func (d *daemon) reload(ctx context.Context) error {
	d.reloadMu.Lock()
	defer d.reloadMu.Unlock()
	cur := d.config()
	next := cur
	if d.opts.load != nil {
		c, err := d.opts.load()
		if err != nil {
			return fmt.Errorf("reading the configuration (the previous configuration stays in force): %w", err)
		}
		next = c
	}
	for _, w := range restartOnly(cur, next) {
		d.log.Warn("this setting changes only on restart; keeping the running value", "key", w)
	}
	next = keepRestartOnly(cur, next)
	p, err := buildParts(next, d.store, d.network.Gateway, d.base)
	if p != nil {
		p.injector.records, p.injector.pod = &d.records, d.work.get
	}
	if err != nil {
		return fmt.Errorf("%w (the previous configuration stays in force)", err)
	}
	if err := d.checkCAHosts(next); err != nil {
		return fmt.Errorf("%w (the previous configuration stays in force)", err)
	}
	spec, err := netfilterSpec(next, d.opts.table, d.network.Bridge, d.network.Subnet, d.network.Gateway)
	if err != nil {
		return fmt.Errorf("%w (the previous configuration stays in force)", err)
	}
	if err := d.store.Reload(); err != nil {
		return fmt.Errorf("reloading credentials (the previous configuration and credentials stay in force): %w", err)
	}
	if err := d.tls.Update(tlsConfig(next, p, d.identityFor(next), d.events, d.resolver, d.network.Subnet, d.base)); err != nil {
		return fmt.Errorf("updating the TLS terminator: %w", err)
	}
	if err := d.dnsH.Update(p.policy, p.answer); err != nil {
		return fmt.Errorf("updating the DNS shim: %w", err)
	}
	d.dnsRes.set(p.overrides)
	d.parts.Store(p)
	// From here on the new configuration is in force in the proxy and the
	// DNS shim; the ruleset is the only step left that can fail (the
	// kernel). The enforcer keeps the new spec as its desired state and the
	// drift loop retries it, so the running config must say so too.
	d.cfgMu.Lock()
	d.cfg = next
	d.cfgMu.Unlock()
	if err := d.enforcer.setSpec(ctx, spec); err != nil {
		return fmt.Errorf("the new configuration is active in the proxy and DNS shim, but applying its nftables ruleset failed "+
			"(the drift check retries it; enforcement shows degraded until then): %w", err)
	}
	d.log.Info("reloaded configuration and credentials", "rules", len(convertRules(next)),
		"egress_mode", next.Egress.Mode, "allow", len(next.Egress.Allow))
	return nil
}

func (d *daemon) config() *config.Config {
	d.cfgMu.Lock()
	defer d.cfgMu.Unlock()
	return d.cfg
}

// restartOnly names the keys that differ between cur and next but take
// effect only on restart (the network, listeners, state dir, socket, metrics).
func restartOnly(cur, next *config.Config) []string {
	var keys []string
	check := func(key string, same bool) {
		if !same {
			keys = append(keys, key)
		}
	}
	check("state_dir", cur.StateDir == next.StateDir)
	check("credentials_file", cur.CredentialsFile == next.CredentialsFile)
	check("network.name", cur.Network.Name == next.Network.Name)
	check("network.bridge", cur.Network.Bridge == next.Network.Bridge)
	check("network.subnet", cur.Network.Subnet == next.Network.Subnet)
	check("network.allow_intra_bridge", cur.Network.AllowIntraBridge == next.Network.AllowIntraBridge)
	check("listen.tls_port", cur.Listen.TLSPort == next.Listen.TLSPort)
	check("listen.dns_port", cur.Listen.DNSPort == next.Listen.DNSPort)
	check("socket", cur.Socket == next.Socket)
	check("metrics.address", cur.Metrics.Address == next.Metrics.Address)
	check("audit", cur.Audit == next.Audit)
	check("log", cur.Log == next.Log)
	check("dns.servers", fmt.Sprint(cur.DNS.Servers) == fmt.Sprint(next.DNS.Servers))
	check("drain_timeout", cur.DrainTimeout == next.DrainTimeout)
	check("mode", cur.Mode == next.Mode)
	check("kubernetes", fmt.Sprint(cur.Kubernetes) == fmt.Sprint(next.Kubernetes))
	return keys
}

// keepRestartOnly returns a copy of next with the restart-only keys of cur.
func keepRestartOnly(cur, next *config.Config) *config.Config {
	c := *next
	c.StateDir, c.Network, c.Listen, c.Socket = cur.StateDir, cur.Network, cur.Listen, cur.Socket
	c.CredentialsFile = cur.CredentialsFile
	c.Metrics, c.Audit, c.Log, c.DrainTimeout = cur.Metrics, cur.Audit, cur.Log, cur.DrainTimeout
	c.DNS.Servers = cur.DNS.Servers
	c.Mode, c.Kubernetes = cur.Mode, cur.Kubernetes
	return &c
}
