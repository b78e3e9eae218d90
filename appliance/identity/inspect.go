package identity

import (
	"context"
	"fmt"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/container"
)

// summaryName is a listed container's name without the leading slash.
func summaryName(s container.Summary) string {
	if len(s.Names) > 0 {
		return strings.TrimPrefix(s.Names[0], "/")
	}
	return shortID(s.ID)
}

// markShared sets SharedWith on the containers others joined; X may be a
// name, an ID or an ID prefix.
func markShared(cs map[string]Container, joiners map[string][]string) {
	for ref, names := range joiners {
		for id, c := range cs {
			if ref == c.Name || ref == id || (len(ref) >= 12 && strings.HasPrefix(id, ref)) {
				slices.Sort(names)
				c.SharedWith = names
				cs[id] = c
			}
		}
	}
}

// sharedBy reports whether a container of ours lists name (or id) in
// SharedWith.
func (t *Table) sharedBy(id, name string) bool {
	t.mu.RLock()
	defer t.mu.RUnlock()
	for _, c := range t.byID {
		for _, n := range c.SharedWith {
			if n == name || n == shortID(id) {
				return true
			}
		}
	}
	return false
}

// inspect returns the container as a table entry, ok=false when it is gone,
// not running, or not attached to the network.
func (t *Table) inspect(ctx context.Context, id string) (Container, bool, error) {
	c, ok, _, err := t.inspectJoin(ctx, id)
	return c, ok, err
}

// inspectJoin is inspect that also reports a running container in another
// container's network namespace (joins; its Name is filled).
func (t *Table) inspectJoin(ctx context.Context, id string) (_ Container, ok, joins bool, _ error) {
	ins, err := t.opts.Docker.ContainerInspect(ctx, id)
	if cerrdefs.IsNotFound(err) {
		return Container{}, false, false, nil
	}
	if err != nil {
		return Container{}, false, false, fmt.Errorf("inspecting container %s: %w", shortID(id), err)
	}
	if ins.ContainerJSONBase == nil {
		return Container{}, false, false, nil
	}
	name := strings.TrimPrefix(ins.Name, "/")
	if ins.State == nil || !ins.State.Running || ins.NetworkSettings == nil {
		return Container{Name: name}, false, false, nil
	}
	if ins.HostConfig != nil && ins.HostConfig.NetworkMode.IsContainer() {
		return Container{Name: name}, false, true, nil
	}
	ep, ok := ins.NetworkSettings.Networks[t.opts.Network]
	if !ok || ep == nil {
		return Container{Name: name}, false, false, nil
	}
	ip, err := netip.ParseAddr(ep.IPAddress)
	if err != nil {
		return Container{Name: name}, false, false, nil // attached but no address yet: the connect event follows
	}
	c := Container{ID: ins.ID, Name: strings.TrimPrefix(ins.Name, "/"), IP: ip, MAC: ep.MacAddress, Pid: ins.State.Pid,
		OtherNetworks: otherNetworks(ins, t.opts.Network)}
	if ins.Config != nil {
		c.Labels = maps.Clone(ins.Config.Labels)
	}
	c.Profile, c.Labelled = c.Labels[t.opts.ProfileLabel]
	c.HostVeth = t.resolveVeth(c)
	return c, true, false, nil
}

// otherNetworks lists the ways out of the container besides our network:
// its other networks, and a host or container: network mode.
func otherNetworks(ins container.InspectResponse, ours string) []string {
	var out []string
	for name := range ins.NetworkSettings.Networks {
		if name != ours {
			out = append(out, name)
		}
	}
	slices.Sort(out)
	if ins.HostConfig != nil {
		if m := ins.HostConfig.NetworkMode; m.IsHost() || m.IsContainer() {
			out = append(out, "network mode "+string(m))
		}
	}
	return out
}

// resolveVeth asks the resolver, retrying briefly: right after "start" the
// endpoint may still be moving into the container's namespace.
func (t *Table) resolveVeth(c Container) string {
	if t.opts.Veth == nil || c.Pid == 0 {
		return ""
	}
	var err error
	for i := range 5 {
		var name string
		if name, err = t.opts.Veth(c.Pid, c.IP); err == nil {
			return name
		}
		time.Sleep(time.Duration(i+1) * 20 * time.Millisecond)
	}
	t.log.Warn("cannot find host veth; the container's traffic stays blocked by anti-spoofing",
		"container", c.Name, "ip", c.IP, "err", err)
	return ""
}
