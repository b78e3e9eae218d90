package netfilter

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"github.com/google/nftables/userdata"
	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
	"golang.org/x/sys/unix"
)

// KernelConfig configures a Kernel (or Probe). The zero value works in the
// calling thread's namespace and discards the log.
type KernelConfig struct {
	// NetNS makes the Kernel work in that network namespace instead of the
	// current one (tests). The caller keeps ownership of it and must keep
	// it open. 0 (the zero value) or netns.None() means the calling
	// thread's namespace at each call.
	NetNS  netns.NsHandle
	Logger *slog.Logger
}

// options is a KernelConfig with its defaults applied.
type options struct {
	ns     netns.NsHandle // <= 0: the calling thread's namespace
	logger *slog.Logger
}

func newOptions(cfg KernelConfig) options {
	o := options{ns: cfg.NetNS, logger: cfg.Logger}
	if o.logger == nil {
		o.logger = slog.New(slog.DiscardHandler)
	}
	o.logger = o.logger.With("component", "netfilter")
	return o
}

// inNS reports whether calls go to a namespace other than the caller's.
func (o options) inNS() bool { return o.ns > 0 }

func (o options) conn() (*nftables.Conn, error) {
	var cos []nftables.ConnOption
	if o.inNS() {
		cos = append(cos, nftables.WithNetNSFd(int(o.ns)))
	}
	c, err := nftables.New(cos...)
	if err != nil {
		return nil, fmt.Errorf("opening nftables netlink connection: %w", err)
	}
	return c, nil
}

func (o options) netlink() (*netlink.Handle, error) {
	if o.inNS() {
		return netlink.NewHandleAt(o.ns)
	}
	return netlink.NewHandle()
}

// ErrPortIsolation wraps failures to set bridge port isolation, which
// happen after the nftables batch was committed: the ruleset is in place,
// only the second (netlink) layer of container isolation is incomplete.
var ErrPortIsolation = errors.New("netfilter: setting bridge port isolation")

// Kernel is the Manager backed by the running kernel (google/nftables for
// the ruleset, netlink for bridge port isolation). Safe for concurrent use.
type Kernel struct {
	opts    options
	mu      sync.Mutex
	applied *Spec
}

var _ Manager = (*Kernel)(nil)

// NewKernel returns a Kernel. It checks that nftables can be reached.
func NewKernel(cfg KernelConfig) (*Kernel, error) {
	k := &Kernel{opts: newOptions(cfg)}
	c, err := k.opts.conn()
	if err != nil {
		return nil, err
	}
	if _, err := c.ListTablesOfFamily(nftables.TableFamilyINet); err != nil {
		return nil, fmt.Errorf("listing nftables tables (is nf_tables available? try `modprobe nf_tables`): %w", err)
	}
	return k, nil
}

// Apply replaces our tables with Build(spec) in one Flush: add table,
// delete table, add table and everything in it. The kernel commits the
// batch atomically, so there is no moment without rules; a re-apply is
// idempotent (and resets counters).
func (k *Kernel) Apply(ctx context.Context, spec Spec) error {
	rs, err := Build(spec)
	if err != nil {
		return err
	}
	k.mu.Lock()
	defer k.mu.Unlock()
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("applying nftables ruleset: %w", err)
	}
	c, err := k.opts.conn()
	if err != nil {
		return fmt.Errorf("applying nftables ruleset: %w", err)
	}
	if err := queueRuleset(c, rs); err != nil {
		return fmt.Errorf("applying nftables ruleset: %w", err)
	}
	start := time.Now()
	if err := c.Flush(); err != nil {
		return fmt.Errorf("applying nftables ruleset: %w", err)
	}
	s := spec.withDefaults()
	k.applied = &s
	k.opts.logger.Info("nftables ruleset applied", "table", s.Table, "bridge", s.Bridge,
		"rules", len(rs.Comments()), "ports", len(s.Ports), "audit_mode", s.AuditMode, "took", time.Since(start))
	return k.isolate(s, !s.AllowIntraBridge)
}

// queueRuleset adds the batch for rs to c without flushing.
func queueRuleset(c *nftables.Conn, rs Ruleset) error {
	for _, t := range rs.Tables {
		nt := &nftables.Table{Family: nfFamily(t.Family), Name: t.Name}
		c.AddTable(nt)
		c.DelTable(nt)
		c.AddTable(nt)
		sets := map[string]*nftables.Set{}
		for _, s := range t.Sets {
			ns := nfSet(nt, s.Name, s.Kind)
			if err := c.AddSet(ns, setElements(s.Kind, s.Elements)); err != nil {
				return fmt.Errorf("adding set %s: %w", s.Name, err)
			}
			sets[s.Name] = ns
		}
		for _, ch := range t.Chains {
			nc := c.AddChain(nfChain(nt, ch))
			for _, r := range ch.Rules {
				x := &exprCtx{table: nt, sets: sets, anon: c.AddSet}
				exprs := r.compile(x)
				if x.err != nil {
					return fmt.Errorf("rule %s: %w", r.Comment, x.err)
				}
				c.AddRule(&nftables.Rule{Table: nt, Chain: nc, Exprs: exprs,
					UserData: userdata.AppendString(nil, userdata.TypeComment, r.Comment)})
			}
		}
	}
	return nil
}

// SetPorts replaces the elements of the port sets in one batch (flush set
// and add elements commit together), leaving rules and counters alone,
// then updates bridge port isolation.
func (k *Kernel) SetPorts(ctx context.Context, ports []Port) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.applied == nil {
		return fmt.Errorf("setting bridge ports: %w", ErrNotApplied)
	}
	ports = normalizePorts(ports)
	if err := k.applied.validatePorts(ports); err != nil {
		return fmt.Errorf("setting bridge ports: %w", err)
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("setting bridge ports: %w", err)
	}
	c, err := k.opts.conn()
	if err != nil {
		return fmt.Errorf("setting bridge ports: %w", err)
	}
	for _, s := range portSets(k.applied.Table, ports) {
		ns := nfSet(&nftables.Table{Family: nfFamily(s.family), Name: k.applied.Table}, s.Name, s.Kind)
		c.FlushSet(ns)
		if len(s.Elements) > 0 {
			if err := c.SetAddElements(ns, setElements(s.Kind, s.Elements)); err != nil {
				return fmt.Errorf("setting bridge ports: %w", err)
			}
		}
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("setting bridge ports in tables %s: %w", k.applied.Table, err)
	}
	k.applied.Ports = ports
	k.opts.logger.Debug("bridge port sets updated", "ports", len(ports))
	return k.isolate(*k.applied, !k.applied.AllowIntraBridge)
}

// isolate sets IFLA_BRPORT_ISOLATED to on for every port enslaved to
// spec.Bridge, by index, not by name: a veth Docker just created (and the
// appliance has not reported through SetPorts yet) is covered as soon as
// anything calls Apply or SetPorts. Isolated ports reach the host but not
// each other. A missing bridge with no ports is not an error.
func (k *Kernel) isolate(spec Spec, on bool) error {
	h, err := k.opts.netlink()
	if err != nil {
		return fmt.Errorf("%w: opening netlink: %w", ErrPortIsolation, err)
	}
	defer h.Close()
	br, err := h.LinkByName(spec.Bridge)
	if errors.As(err, new(netlink.LinkNotFoundError)) && len(spec.Ports) == 0 {
		return nil
	}
	if err != nil {
		return fmt.Errorf("%w: bridge %s: %w", ErrPortIsolation, spec.Bridge, err)
	}
	links, err := h.LinkList()
	for attempt := 1; errors.Is(err, netlink.ErrDumpInterrupted) && attempt < 5; attempt++ {
		links, err = h.LinkList() // links changed while the kernel dumped them: read again
	}
	if err != nil {
		return fmt.Errorf("%w: listing links: %w", ErrPortIsolation, err)
	}
	var errs []error
	for _, l := range links {
		if l.Attrs().MasterIndex != br.Attrs().Index {
			continue
		}
		if err := h.LinkSetIsolated(l, on); err != nil && !errors.Is(err, unix.ENODEV) {
			errs = append(errs, fmt.Errorf("port %s: %w", l.Attrs().Name, err))
		}
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("%w: %w", ErrPortIsolation, err)
	}
	return nil
}

// Teardown deletes our inet, bridge and arp tables (only those) in one batch
// and, if this Kernel applied a ruleset, clears port isolation on the
// bridge's ports. ErrNotApplied when neither table exists.
func (k *Kernel) Teardown(ctx context.Context) error {
	k.mu.Lock()
	defer k.mu.Unlock()
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("tearing down nftables ruleset: %w", err)
	}
	name := DefaultTable
	if k.applied != nil {
		name = k.applied.Table
	}
	c, err := k.opts.conn()
	if err != nil {
		return fmt.Errorf("tearing down nftables ruleset: %w", err)
	}
	present, err := ourTables(c, name)
	if err != nil {
		return fmt.Errorf("tearing down nftables ruleset: %w", err)
	}
	if len(present) == 0 {
		k.applied = nil
		return fmt.Errorf("tearing down nftables ruleset: %w", ErrNotApplied)
	}
	for _, t := range present {
		c.DelTable(t)
	}
	if err := c.Flush(); err != nil {
		return fmt.Errorf("tearing down nftables ruleset: %w", err)
	}
	var isoErr error
	if k.applied != nil && !k.applied.AllowIntraBridge {
		isoErr = k.isolate(*k.applied, false)
	}
	k.applied = nil
	k.opts.logger.Info("nftables ruleset removed", "table", name)
	return isoErr
}

// ourTables lists the tables named name in the inet, bridge and arp families.
func ourTables(c *nftables.Conn, name string) ([]*nftables.Table, error) {
	var out []*nftables.Table
	for _, fam := range []nftables.TableFamily{nftables.TableFamilyINet, nftables.TableFamilyBridge, nftables.TableFamilyARP} {
		ts, err := c.ListTablesOfFamily(fam)
		if err != nil {
			return nil, fmt.Errorf("listing tables: %w", err)
		}
		for _, t := range ts {
			if t.Name == name {
				out = append(out, t)
			}
		}
	}
	return out, nil
}

// Counters returns packet and byte counts per rule comment, sorted by
// comment (like Fake). ErrNotApplied before Apply or when none of our
// tables exists.
func (k *Kernel) Counters(ctx context.Context) ([]Counter, error) {
	k.mu.Lock()
	defer k.mu.Unlock()
	if k.applied == nil {
		return nil, fmt.Errorf("reading nftables counters: %w", ErrNotApplied)
	}
	if err := ctx.Err(); err != nil {
		return nil, fmt.Errorf("reading nftables counters: %w", err)
	}
	c, err := k.opts.conn()
	if err != nil {
		return nil, fmt.Errorf("reading nftables counters: %w", err)
	}
	tables, err := ourTables(c, k.applied.Table)
	if err != nil {
		return nil, fmt.Errorf("reading nftables counters: %w", err)
	}
	if len(tables) == 0 {
		return nil, fmt.Errorf("reading nftables counters: %w", ErrNotApplied)
	}
	var out []Counter
	for _, t := range tables {
		rules, err := tableRules(c, t)
		if err != nil {
			return nil, fmt.Errorf("reading nftables counters: %w", err)
		}
		for _, r := range rules {
			if cnt := counterOf(r.rule); cnt != nil && r.comment != "" {
				out = append(out, Counter{Rule: r.comment, Packets: cnt.Packets, Bytes: cnt.Bytes})
			}
		}
	}
	slices.SortFunc(out, func(a, b Counter) int { return strings.Compare(a.Rule, b.Rule) })
	return out, nil
}

func counterOf(r *nftables.Rule) *expr.Counter {
	for _, e := range r.Exprs {
		if c, ok := e.(*expr.Counter); ok {
			return c
		}
	}
	return nil
}

type kernelRule struct {
	chain   *nftables.Chain
	rule    *nftables.Rule
	comment string
}

// tableRules lists every rule of t with its chain and comment.
func tableRules(c *nftables.Conn, t *nftables.Table) ([]kernelRule, error) {
	chains, err := tableChains(c, t)
	if err != nil {
		return nil, err
	}
	var out []kernelRule
	for _, ch := range chains {
		rules, err := c.GetRules(t, ch)
		if err != nil {
			return nil, fmt.Errorf("listing rules of chain %s: %w", ch.Name, err)
		}
		for _, r := range rules {
			comment, _ := userdata.GetString(r.UserData, userdata.TypeComment)
			out = append(out, kernelRule{chain: ch, rule: r, comment: comment})
		}
	}
	return out, nil
}

func tableChains(c *nftables.Conn, t *nftables.Table) ([]*nftables.Chain, error) {
	all, err := c.ListChainsOfTableFamily(t.Family)
	if err != nil {
		return nil, fmt.Errorf("listing chains: %w", err)
	}
	return slices.DeleteFunc(all, func(ch *nftables.Chain) bool { return ch.Table.Name != t.Name }), nil
}
