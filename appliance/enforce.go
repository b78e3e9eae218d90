package appliance

import (
	"context"
	"log/slog"
	"net/netip"
	"slices"
	"sync"
	"time"

	"github.com/clauderon/clauderond/appliance/identity"
	"github.com/clauderon/clauderond/netfilter"
)

// Enforcement states reported in status and metrics.
const (
	EnforcementIntact   = "intact"
	EnforcementDegraded = "degraded"
)

// enforcer keeps the kernel ruleset equal to the desired Spec: it applies it,
// keeps the anti-spoofing ports in step with the identity table, verifies it
// periodically and on every hint (Docker network event, bridge link change),
// and re-applies on drift.
type enforcer struct {
	nft      netfilter.Manager
	log      *slog.Logger
	interval time.Duration
	kick     chan struct{}

	mu        sync.Mutex
	spec      netfilter.Spec // desired, without Ports
	ports     []netfilter.Port
	applied   bool
	state     string
	drift     []string
	reapplies uint64
	onState   func(state string)
}

func newEnforcer(nft netfilter.Manager, spec netfilter.Spec, interval time.Duration, log *slog.Logger) *enforcer {
	return &enforcer{nft: nft, spec: spec, interval: interval, log: log.With("component", "enforce"),
		kick: make(chan struct{}, 1), state: EnforcementDegraded}
}

// desired returns the full spec; the caller holds e.mu.
func (e *enforcer) desired() netfilter.Spec {
	s := e.spec
	s.Ports = slices.Clone(e.ports)
	return s
}

// apply writes the whole ruleset in one atomic batch.
func (e *enforcer) apply(ctx context.Context) error {
	e.mu.Lock()
	defer e.mu.Unlock()
	if err := e.nft.Apply(ctx, e.desired()); err != nil {
		e.setState(EnforcementDegraded, []string{"apply failed: " + err.Error()})
		return err
	}
	e.applied = true
	e.setState(EnforcementIntact, nil)
	return nil
}

// setSpec replaces the desired spec (reload) and re-applies when it changed.
func (e *enforcer) setSpec(ctx context.Context, s netfilter.Spec) error {
	e.mu.Lock()
	same := specEqual(e.spec, s)
	e.spec = s
	e.mu.Unlock()
	if same {
		return nil
	}
	return e.apply(ctx)
}

// setContainers updates the anti-spoofing ports from the identity table
// (identity.Config.OnChange). Containers whose veth is unknown get no port:
// their traffic stays dropped until it is found.
func (e *enforcer) setContainers(ctx context.Context, cs []identity.Container) {
	ports := portsOf(cs, e.log)
	e.mu.Lock()
	defer e.mu.Unlock()
	if slices.Equal(ports, e.ports) {
		return
	}
	e.ports = ports
	if !e.applied {
		return // the first Apply carries them
	}
	if err := e.nft.SetPorts(ctx, ports); err != nil {
		e.log.Error("updating anti-spoofing ports failed; re-applying the ruleset", "err", err)
		e.trigger()
	}
}

// portsOf is the anti-spoofing port set for cs: each workload's host veth
// with its address. A veth the table gives two different addresses (a
// stale or confused source: two pods on one veth) gets none, so neither
// address passes from it (fail closed) rather than both.
func portsOf(cs []identity.Container, log *slog.Logger) []netfilter.Port {
	addrs := map[string]map[netip.Addr]bool{}
	for _, c := range cs {
		if c.HostVeth != "" && c.IP.Is4() {
			if addrs[c.HostVeth] == nil {
				addrs[c.HostVeth] = map[netip.Addr]bool{}
			}
			addrs[c.HostVeth][c.IP] = true
		}
	}
	var ports []netfilter.Port
	for _, c := range cs {
		switch n := len(addrs[c.HostVeth]); {
		case c.HostVeth == "" || !c.IP.Is4():
		case n > 1:
			log.Warn("a host veth is claimed with several addresses; none passes from it", "veth", c.HostVeth, "workload", c.Name, "addr", c.IP)
		default:
			ports = append(ports, netfilter.Port{IfName: c.HostVeth, Addr: c.IP})
		}
	}
	return ports
}

// trigger asks the loop for a verify soon (never blocks).
func (e *enforcer) trigger() {
	select {
	case e.kick <- struct{}{}:
	default:
	}
}

// verify compares the kernel with the desired ruleset and re-applies on drift.
func (e *enforcer) verify(ctx context.Context) {
	e.mu.Lock()
	want := e.desired()
	e.mu.Unlock()
	d, err := e.nft.Verify(ctx, want)
	if err == nil && d.Intact() {
		e.mu.Lock()
		e.setState(EnforcementIntact, nil)
		e.mu.Unlock()
		return
	}
	problems := append(slices.Clone(d.Missing), d.Unexpected...)
	if err != nil {
		problems = append(problems, "verify failed: "+err.Error())
	}
	e.log.Warn("nftables drift detected; re-applying the ruleset", "problems", problems)
	e.mu.Lock()
	e.reapplies++
	e.setState(EnforcementDegraded, problems)
	e.mu.Unlock()
	if err := e.apply(ctx); err != nil {
		e.log.Error("re-applying the ruleset failed; enforcement degraded", "err", err)
	}
}

// run is the drift loop: every interval and on every kick.
func (e *enforcer) run(ctx context.Context) error {
	return everyTick(ctx, e.interval, e.kick, func() (bool, error) {
		e.verify(ctx)
		return false, nil
	})
}

// setState records the enforcement state; the caller holds e.mu.
func (e *enforcer) setState(state string, drift []string) {
	changed := e.state != state
	e.state, e.drift = state, drift
	if changed && e.onState != nil {
		e.onState(state)
	}
}

// snapshot returns the state for status and metrics.
func (e *enforcer) snapshot() (state string, drift []string, reapplies uint64) {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.state, slices.Clone(e.drift), e.reapplies
}

func specEqual(a, b netfilter.Spec) bool {
	return a.Table == b.Table && a.Bridge == b.Bridge && a.Subnet == b.Subnet && a.Gateway == b.Gateway &&
		a.TLSPort == b.TLSPort && a.DNSPort == b.DNSPort && a.AllowIntraBridge == b.AllowIntraBridge &&
		a.AuditMode == b.AuditMode && a.LogGroup == b.LogGroup &&
		slices.EqualFunc(a.AllowCIDRs, b.AllowCIDRs, func(x, y netfilter.AllowCIDR) bool {
			return x.Prefix == y.Prefix && x.Proto == y.Proto && slices.Equal(x.Ports, y.Ports)
		})
}

// logGroup is the NFLOG group of the audit-mode log rules.
func (e *enforcer) logGroup() uint16 {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.spec.LogGroup
}
