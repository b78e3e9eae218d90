package appliance

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync/atomic"
	"time"

	"github.com/clauderon/clauderond/appliance/bridge"
	"github.com/clauderon/clauderond/appliance/config"
	"github.com/clauderon/clauderond/appliance/identity"
	"github.com/clauderon/clauderond/appliance/kubepods"
	"github.com/clauderon/clauderond/dnsredir"
	"github.com/clauderon/clauderond/netfilter"
	"golang.org/x/sync/errgroup"
)

// identitySource says which workload holds an address on the bridge:
// Docker containers on the clauderon network (identity.Table, host mode)
// or this node's pods (kubepods.Table, node mode). Both fail closed: an
// address they cannot vouch for is unknown.
type identitySource interface {
	Sync(ctx context.Context) error
	Run(ctx context.Context) error
	Lookup(addr netip.Addr) (identity.Container, bool)
	List() []identity.Container
	// StreamDown: the source cannot vouch for any address now (its
	// stream is down, or it has never listed); Lookup refuses everyone.
	StreamDown() bool
}

var (
	_ identitySource = (*identity.Table)(nil)
	_ identitySource = (*kubepods.Table)(nil)
)

// workloads indexes the identity source's list by ID; the source's change
// callback keeps it current.
type workloads struct {
	byID atomic.Pointer[map[string]identity.Container]
}

func (w *workloads) set(cs []identity.Container) {
	m := make(map[string]identity.Container, len(cs))
	for _, c := range cs {
		m[c.ID] = c
	}
	w.byID.Store(&m)
}

func (w *workloads) get(id string) (identity.Container, bool) {
	m := w.byID.Load()
	if m == nil || id == "" {
		return identity.Container{}, false
	}
	c, ok := (*m)[id]
	return c, ok
}

// podProfile is the profile a pod's clauderon.profile label selects, or
// why it selects none. In node mode a label alone is never enough: the
// profile must be bound (profiles.access[].namespaces or
// .service_accounts) to the pod's namespace or service account, so a pod
// cannot pick another namespace's credentials. The default profile, which
// a pod without the label asks for, is bound the same way (an access
// entry for profile "default"): unbound, no pod gets it.
func podProfile(access []config.ProfileAccess, c identity.Container) (profile, reason string) {
	name := c.Profile
	if !c.Labelled {
		name = DefaultProfile
	}
	i := slices.IndexFunc(access, func(a config.ProfileAccess) bool { return a.Profile == name })
	if i < 0 || (len(access[i].Namespaces) == 0 && len(access[i].ServiceAccounts) == 0) {
		if !c.Labelled {
			return "", fmt.Sprintf("pod %s has no clauderon.profile label, and the default profile is bound to no namespace or service account "+
				"(profiles.access: {profile: default, namespaces: [...]}); in kubernetes mode every profile is bound", c.Name)
		}
		return "", fmt.Sprintf("pod %s carries clauderon.profile=%s, but profile %s is bound to no namespace or service account "+
			"(profiles.access[].namespaces, .service_accounts); in kubernetes mode a label alone selects no profile", c.Name, c.Profile, c.Profile)
	}
	a := access[i]
	if slices.Contains(a.Namespaces, c.Namespace) || slices.Contains(a.ServiceAccounts, c.Namespace+"/"+c.ServiceAccount) {
		if !c.Labelled {
			return "", ""
		}
		return c.Profile, ""
	}
	return "", fmt.Sprintf("pod %s (namespace %s, service account %s) asks for profile %s, but that profile is bound to namespaces [%s] and service accounts [%s]",
		c.Name, c.Namespace, c.ServiceAccount, a.Profile, strings.Join(a.Namespaces, " "), strings.Join(a.ServiceAccounts, " "))
}

// DefaultProfile names the default profile in profiles.access (node mode
// binds it like any other).
const DefaultProfile = "default"

// stepNodeBridge adopts the CNI's bridge (node mode). A bridge the CNI has
// not created yet is fine: the rules match it by name and the listeners
// bind the gateway with IP_FREEBIND, so the node's first pod is confined
// from its first packet.
func (d *daemon) stepNodeBridge(ctx context.Context, _ *errgroup.Group) error {
	kc, err := d.kubeClient()
	if err != nil {
		return err
	}
	d.kube = kc
	n, err := bridge.AdoptCNI(bridge.HostLinks, d.cfg.Network.Bridge, d.cfg.Subnet())
	if err != nil {
		return err
	}
	if !n.Subnet.IsValid() { // network.subnet auto, and no bridge yet
		if n, err = d.nodeSubnet(ctx, n); err != nil {
			return err
		}
	}
	d.network = n
	d.log.Info("node mode: pod bridge", "bridge", n.Bridge, "subnet", n.Subnet, "gateway", n.Gateway, "pending", n.Pending,
		"node", d.cfg.Kubernetes.Node)
	if n.Pending {
		d.log.Info("the pod bridge or its gateway address does not exist yet; the CNI creates them with the node's first pod, and the rules already cover it",
			"bridge", n.Bridge, "gateway", n.Gateway)
	}
	return nil
}

// nodeSubnet finds this node's pod subnet when network.subnet is auto and
// the CNI has made no bridge yet: the Node's spec.podCIDR, else the bridge
// once the node's first pod makes it. Until then there is no pod network
// on this node to confine.
func (d *daemon) nodeSubnet(ctx context.Context, n bridge.Network) (bridge.Network, error) {
	p, err := d.kube.NodePodCIDR(ctx, d.cfg.Kubernetes.Node)
	if err == nil && p.IsValid() {
		n.Subnet, n.Gateway = p, bridge.GatewayFor(p)
		return n, nil
	}
	d.log.Warn("network.subnet is auto, the pod bridge does not exist yet and the Node names no spec.podCIDR; waiting for the CNI to make the bridge "+
		"(or set network.subnet, or let the controller manager allocate node CIDRs)", "bridge", n.Bridge, "node", d.cfg.Kubernetes.Node, "err", err)
	start := time.Now()
	err = everyTick(ctx, time.Second, nil, func() (bool, error) {
		got, err := bridge.AdoptCNI(bridge.HostLinks, n.Bridge, netip.Prefix{})
		if err != nil {
			return true, err
		}
		if got.Subnet.IsValid() {
			n = got
			return true, nil
		}
		if s := time.Since(start).Round(time.Second); s%(30*time.Second) == 0 {
			d.log.Info("still waiting for the pod bridge", "bridge", n.Bridge, "waited", s)
		}
		return false, nil
	})
	if err == nil && !n.Subnet.IsValid() {
		err = ctx.Err()
	}
	return n, err
}

// kubeClient reaches the API server: the configured one, else the pod's
// service account.
func (d *daemon) kubeClient() (*kubepods.Client, error) {
	k := d.cfg.Kubernetes
	var c *kubepods.Client
	var err error
	switch {
	case d.opts.kubeClient != nil:
		c = d.opts.kubeClient
	case k.APIServer != "":
		c, err = kubepods.NewClient(k.APIServer, k.TokenFile, k.CAFile)
	default:
		c, err = kubepods.InCluster()
	}
	if err != nil {
		return nil, fmt.Errorf("reaching the Kubernetes API server (kubernetes.api_server, or the pod's service account): %w", err)
	}
	return c, nil
}

// newPodSource follows this node's pods through the API server.
func (d *daemon) newPodSource(onChange func(context.Context, []identity.Container)) (identitySource, error) {
	k, c := d.cfg.Kubernetes, d.kube
	veth := kubepods.CNIResults(k.CNIResultsDir, d.network.Bridge)
	if d.opts.podVeth != nil {
		veth = d.opts.podVeth
	}
	return kubepods.New(kubepods.Config{Client: c, Node: k.Node, Subnet: d.network.Subnet, Veth: veth,
		OnChange: onChange, Logger: d.base}), nil
}

// clusterSpec is the node's exceptions for the ruleset (node mode).
func clusterSpec(cfg *config.Config) (netfilter.Cluster, error) {
	var c netfilter.Cluster
	if !cfg.NodeMode() {
		return c, nil
	}
	c.HostToPods = true // the kubelet's probes
	for _, s := range cfg.Kubernetes.PodCIDRs {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return c, fmt.Errorf("kubernetes.pod_cidrs: %w", err)
		}
		c.PodCIDRs = append(c.PodCIDRs, p)
	}
	for _, s := range cfg.Kubernetes.ServiceCIDRs {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return c, fmt.Errorf("kubernetes.service_cidrs: %w", err)
		}
		c.ServiceCIDRs = append(c.ServiceCIDRs, p)
	}
	for _, s := range cfg.Kubernetes.APIServerEndpoints {
		a, err := netip.ParseAddrPort(s)
		if err != nil {
			return c, fmt.Errorf("kubernetes.api_server_endpoints: %w", err)
		}
		c.APIServer = append(c.APIServer, a)
	}
	return c, nil
}

// inDomain reports whether name is domain or under it.
func inDomain(name, domain string) bool {
	name = strings.ToLower(strings.TrimSuffix(name, "."))
	return domain != "" && (name == domain || strings.HasSuffix(name, "."+domain))
}

// clusterDNS resolves names under the cluster domain at the cluster's DNS
// server (node mode), the rest with base. Like every allowed name, only
// the daemon's own A lookup of the name reaches the server.
type clusterDNS struct {
	domain  string
	cluster dnsredir.Resolver
	base    dnsredir.Resolver
}

func (r clusterDNS) LookupNetIP(ctx context.Context, network, host string) ([]netip.Addr, error) {
	if inDomain(host, r.domain) {
		return r.cluster.LookupNetIP(ctx, network, host)
	}
	return r.base.LookupNetIP(ctx, network, host)
}

// podBridgeMissing says why node mode is not ready: the pod list is not in
// (pods are refused, and a rollout must not go on as if all were well), or
// this node has pods but no bridge of the configured name (the rules, keyed
// on that name, would confine nothing: network.bridge names another device
// than the CNI's). "" otherwise.
func (d *daemon) podBridgeMissing() string {
	if d.table != nil && d.table.StreamDown() {
		return "the pod list is not in (the API server is away, or the service account may not list pods): every pod is refused"
	}
	if d.table == nil {
		return ""
	}
	if n := len(d.table.List()); n > 0 && !bridge.LinkExists(d.network.Bridge) {
		return fmt.Sprintf("%d pods on this node but no bridge %s: network.bridge must name the CNI's bridge", n, d.network.Bridge)
	}
	return ""
}

// workloadOf finds a workload by ID, else by source address.
func (d *daemon) workloadOf(id string, src netip.Addr) (identity.Container, bool) {
	if c, ok := d.work.get(id); ok {
		return c, true
	}
	if src.IsValid() && d.table != nil {
		return d.table.Lookup(src)
	}
	return identity.Container{}, false
}

// awaitPodBridge waits for the CNI to create the pod bridge with its
// gateway (node mode, started before the node's first pod). The rules
// and the listeners were set up for the gateway the bridge plugin gives
// by default; a CNI that picks another one stops the daemon (the rules
// stay: fail closed), and the restart adopts what exists.
func (d *daemon) awaitPodBridge(ctx context.Context, every time.Duration) error {
	return everyTick(ctx, every, nil, func() (bool, error) {
		n, err := bridge.AdoptCNI(bridge.HostLinks, d.network.Bridge, d.network.Subnet)
		switch {
		case err != nil:
			return true, fmt.Errorf("the pod bridge appeared but cannot be adopted: %w", err)
		case n.Pending:
			return false, nil
		case n.Gateway != d.network.Gateway:
			return true, fmt.Errorf("the CNI gave bridge %s the gateway %s, not %s as expected; stopping so that a restart binds the right one (the rules stay in place)",
				n.Bridge, n.Gateway, d.network.Gateway)
		}
		d.log.Info("the pod bridge is up", "bridge", n.Bridge, "gateway", n.Gateway)
		d.enforcer.trigger()
		return true, nil
	})
}

// identityFor is the terminator's identity for cfg (node mode: the pods'
// bound profiles).
func (d *daemon) identityFor(cfg *config.Config) identityAdapter {
	a := identityAdapter{t: d.table}
	if cfg.NodeMode() {
		access := cfg.Profiles.Access
		a.access = &access
	}
	return a
}
