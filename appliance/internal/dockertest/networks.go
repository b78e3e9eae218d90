package dockertest

import (
	"context"
	"fmt"
	"maps"
	"net/netip"
	"slices"

	"github.com/docker/docker/api/types/events"
	"github.com/docker/docker/api/types/network"
)

// findNet resolves a network ID or name. Caller holds d.mu.
func (d *Docker) findNet(ref string) *network.Inspect {
	if n, ok := d.nets[ref]; ok {
		return n
	}
	for _, n := range d.nets {
		if n.Name == ref {
			return n
		}
	}
	return nil
}

func (d *Docker) netDriver(name string) string {
	if n := d.findNet(name); n != nil {
		return n.Driver
	}
	return ""
}

// UpdateNetwork runs fn on the network behind dockerd's back (as an
// operator recreating it by hand would leave it); fn must not call the fake.
func (d *Docker) UpdateNetwork(ref string, fn func(n *network.Inspect)) error {
	d.mu.Lock()
	defer d.mu.Unlock()
	n := d.findNet(ref)
	if n == nil {
		return notFound("network %s not found", ref)
	}
	fn(n)
	return nil
}

// NetworkInspect returns the network with that ID or name, with its
// running endpoints in Containers.
func (d *Docker) NetworkInspect(ctx context.Context, ref string, _ network.InspectOptions) (network.Inspect, error) {
	if err := d.begin(ctx, "NetworkInspect", ref); err != nil {
		return network.Inspect{}, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	n := d.findNet(ref)
	if n == nil {
		return network.Inspect{}, notFound("network %s not found", ref)
	}
	out := *n
	out.Options, out.Labels = maps.Clone(n.Options), maps.Clone(n.Labels)
	out.IPAM.Config = slices.Clone(n.IPAM.Config)
	out.Containers = map[string]network.EndpointResource{}
	for _, c := range d.containers {
		if ep := c.Networks[n.Name]; ep != nil && ep.IPAddress != "" {
			out.Containers[c.ID] = network.EndpointResource{Name: c.Name, MacAddress: ep.MacAddress,
				IPv4Address: fmt.Sprintf("%s/%d", ep.IPAddress, ep.IPPrefixLen)}
		}
	}
	return out, nil
}

// NetworkCreate refuses a taken name (conflict), a bad subnet (invalid) and
// a subnet overlapping another network's (forbidden, "Pool overlaps");
// without IPAM config it picks a free 172.x.0.0/16, as dockerd's pools.
func (d *Docker) NetworkCreate(ctx context.Context, name string, o network.CreateOptions) (network.CreateResponse, error) {
	if err := d.begin(ctx, "NetworkCreate", name); err != nil {
		return network.CreateResponse{}, err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	if name == "" {
		return network.CreateResponse{}, invalid("network name cannot be empty")
	}
	if d.findNet(name) != nil {
		return network.CreateResponse{}, conflict("network with name %s already exists", name)
	}
	ipam := network.IPAM{Driver: "default"}
	if o.IPAM != nil {
		ipam = *o.IPAM
		ipam.Config = slices.Clone(o.IPAM.Config)
	}
	if len(ipam.Config) == 0 {
		ipam.Config = []network.IPAMConfig{{Subnet: d.freePool()}}
	}
	for i, cfg := range ipam.Config {
		p, err := netip.ParsePrefix(cfg.Subnet)
		if err != nil || p != p.Masked() {
			return network.CreateResponse{}, invalid("invalid subnet %q", cfg.Subnet)
		}
		if other := d.overlapping(p); other != "" {
			return network.CreateResponse{}, forbidden("Pool overlaps with other one on this address space (network %s)", other)
		}
		if cfg.Gateway == "" {
			ipam.Config[i].Gateway = p.Addr().Next().String()
		}
	}
	driver := o.Driver
	if driver == "" {
		driver = "bridge"
	}
	id := d.newID("network")
	d.nets[id] = &network.Inspect{Name: name, ID: id, Driver: driver, Scope: "local", IPAM: ipam,
		Internal: o.Internal, Options: maps.Clone(o.Options), Labels: maps.Clone(o.Labels)}
	d.emit(events.NetworkEventType, events.ActionCreate, id, map[string]string{"name": name, "type": driver})
	return network.CreateResponse{ID: id}, nil
}

// subnet is a network's first IPv4 subnet.
func subnet(n *network.Inspect) (netip.Prefix, bool) {
	for _, c := range n.IPAM.Config {
		if p, err := netip.ParsePrefix(c.Subnet); err == nil && p.Addr().Is4() {
			return p, true
		}
	}
	return netip.Prefix{}, false
}

func (d *Docker) overlapping(p netip.Prefix) string {
	for _, n := range d.nets {
		if q, ok := subnet(n); ok && q.Overlaps(p) {
			return n.Name
		}
	}
	return ""
}

func (d *Docker) freePool() string {
	for i := 18; i < 32; i++ {
		if p := netip.PrefixFrom(netip.AddrFrom4([4]byte{172, byte(i), 0, 0}), 16); d.overlapping(p) == "" {
			return p.String()
		}
	}
	return "192.168.240.0/20"
}

// NetworkRemove refuses the predefined bridge and a network with running
// endpoints (forbidden, as dockerd's "has active endpoints").
func (d *Docker) NetworkRemove(ctx context.Context, ref string) error {
	if err := d.begin(ctx, "NetworkRemove", ref); err != nil {
		return err
	}
	d.mu.Lock()
	defer d.mu.Unlock()
	n := d.findNet(ref)
	if n == nil {
		return notFound("network %s not found", ref)
	}
	if n.Options["com.docker.network.bridge.default_bridge"] == "true" {
		return forbidden("%s is a pre-defined network and cannot be removed", n.Name)
	}
	for _, c := range d.containers {
		if ep := c.Networks[n.Name]; ep != nil && ep.IPAddress != "" {
			return forbidden("error while removing network: network %s id %s has active endpoints", n.Name, n.ID)
		}
	}
	delete(d.nets, n.ID)
	d.emit(events.NetworkEventType, events.ActionDestroy, n.ID, map[string]string{"name": n.Name, "type": n.Driver})
	return nil
}

// connectLocked gives c an address on network name and emits connect.
func (d *Docker) connectLocked(c *Container, name string) error {
	n := d.findNet(name)
	if n == nil {
		return notFound("network %s not found", name)
	}
	ep := c.Networks[name]
	p, ok := subnet(n)
	if !ok {
		return forbidden("network %s has no IPv4 subnet", name)
	}
	ip, err := d.allocate(n, p, c, ep)
	if err != nil {
		return err
	}
	b := ip.As4()
	ep.NetworkID, ep.IPAddress, ep.IPPrefixLen = n.ID, ip.String(), p.Bits()
	ep.Gateway = n.IPAM.Config[0].Gateway
	ep.MacAddress = fmt.Sprintf("02:42:%02x:%02x:%02x:%02x", b[0], b[1], b[2], b[3])
	d.emit(events.NetworkEventType, events.ActionConnect, n.ID, map[string]string{"container": c.ID, "name": name, "type": n.Driver})
	return nil
}

// allocate returns the endpoint's static address if free, else the lowest
// free one past the gateway.
func (d *Docker) allocate(n *network.Inspect, p netip.Prefix, c *Container, ep *network.EndpointSettings) (netip.Addr, error) {
	used := map[netip.Addr]bool{}
	if gw, err := netip.ParseAddr(n.IPAM.Config[0].Gateway); err == nil {
		used[gw] = true
	}
	for _, o := range d.containers {
		if oep := o.Networks[n.Name]; o != c && oep != nil && oep.IPAddress != "" {
			a, _ := netip.ParseAddr(oep.IPAddress)
			used[a] = true
		}
	}
	if ep.IPAMConfig != nil && ep.IPAMConfig.IPv4Address != "" {
		a, err := netip.ParseAddr(ep.IPAMConfig.IPv4Address)
		switch {
		case err != nil || !p.Contains(a):
			return netip.Addr{}, invalid("invalid address %q for network %s (%s)", ep.IPAMConfig.IPv4Address, n.Name, p)
		case used[a]:
			return netip.Addr{}, conflict("Address already in use: %s on network %s", a, n.Name)
		}
		return a, nil
	}
	for a := p.Addr().Next(); p.Contains(a); a = a.Next() {
		if !used[a] && p.Contains(a.Next()) { // the last address is the broadcast
			return a, nil
		}
	}
	return netip.Addr{}, forbidden("no available IPv4 addresses on network %s", n.Name)
}
