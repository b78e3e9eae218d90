package appliance

import (
	"context"
	"fmt"
	"reflect"
	"time"

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
	next, kept := keepRestartOnly(cur, next)
	for _, w := range kept {
		d.log.Warn("this setting changes only on restart; keeping the running value", "key", w)
	}
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
	if err := d.tls.Update(p.tlsReloadable(d.identityFor(next), d.events, d.resolver, d.network.Subnet)); err != nil {
		return fmt.Errorf("updating the TLS terminator: %w", err)
	}
	if err := d.dnsH.Update(p.dnsReloadable()); err != nil {
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

// setting is one row of the reload table: a configuration key, or a section
// standing for every key below it, and whether SIGHUP applies it.
type setting struct {
	key string
	// same and keep are nil for a key that reloads. For one that changes
	// only on restart, same compares it and keep copies the running value
	// over the reloaded one.
	same func(cur, next *config.Config) bool
	keep func(next, cur *config.Config)
}

func reloads(key string) setting { return setting{key: key} }

func restart[T any](key string, field func(*config.Config) *T) setting {
	return setting{key: key,
		same: func(cur, next *config.Config) bool { return reflect.DeepEqual(*field(cur), *field(next)) },
		keep: func(next, cur *config.Config) { *field(next) = *field(cur) },
	}
}

// settings says, for every key of the configuration (TestSettings_CoverEveryKey
// checks), whether a reload applies it. The network, the listeners, the state
// dir, the socket, the metrics listener, the audit writer, the logger, the DNS
// upstreams, the drain timeout and the mode are set up once at start.
var settings = []setting{
	reloads("rules"),
	reloads("default_rules"),
	reloads("egress"),
	reloads("upstreams"),
	reloads("dns.deny_rcode"),
	reloads("dns.rate_per_second"),
	reloads("dns.burst"),
	reloads("profiles"),
	reloads("sessions"),
	reloads("authz"),
	restart("state_dir", func(c *config.Config) *string { return &c.StateDir }),
	restart("credentials_file", func(c *config.Config) *string { return &c.CredentialsFile }),
	restart("network.name", func(c *config.Config) *string { return &c.Network.Name }),
	restart("network.bridge", func(c *config.Config) *string { return &c.Network.Bridge }),
	restart("network.subnet", func(c *config.Config) *config.Subnet { return &c.Network.Subnet }),
	restart("network.allow_intra_bridge", func(c *config.Config) *bool { return &c.Network.AllowIntraBridge }),
	restart("listen.tls_port", func(c *config.Config) *int { return &c.Listen.TLSPort }),
	restart("listen.dns_port", func(c *config.Config) *int { return &c.Listen.DNSPort }),
	restart("socket", func(c *config.Config) *config.SocketConfig { return &c.Socket }),
	restart("metrics.address", func(c *config.Config) *string { return &c.Metrics.Address }),
	restart("audit", func(c *config.Config) *config.AuditConfig { return &c.Audit }),
	restart("log", func(c *config.Config) *config.LogConfig { return &c.Log }),
	restart("dns.servers", func(c *config.Config) *[]config.DNSServer { return &c.DNS.Servers }),
	restart("drain_timeout", func(c *config.Config) *time.Duration { return &c.DrainTimeout }),
	restart("mode", func(c *config.Config) *string { return &c.Mode }),
	restart("kubernetes", func(c *config.Config) *config.KubernetesConfig { return &c.Kubernetes }),
}

// keepRestartOnly returns a copy of next that keeps cur's value of every
// restart-only setting, and the keys whose reloaded value it set aside.
func keepRestartOnly(cur, next *config.Config) (*config.Config, []string) {
	c := *next
	var kept []string
	for _, s := range settings {
		if s.same != nil && !s.same(cur, &c) {
			kept = append(kept, s.key)
			s.keep(&c, cur)
		}
	}
	return &c, kept
}
