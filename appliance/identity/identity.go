// Package identity answers "which container is 10.x.y.z on our bridge?": it
// keeps a table of the running containers attached to the clauderon Docker
// network (id, name, labels, profile, MAC, host-side veth), built from an
// initial ContainerList and kept current from the Docker events stream.
//
// It refuses to enforce anything itself: it never touches nftables, TLS or
// credentials. It reports changes through a callback so that package
// appliance can keep the netfilter anti-spoofing port set and the metrics in
// step. A container it does not know is simply unknown; callers fail closed.
//
// Lookup also fails closed in two cases where the table cannot vouch for an
// address: while the Docker events stream is down (until the full resync
// after reconnecting, since a new container may have taken a stale entry's
// address), and for a container that is attached to any other network too
// (or runs with a host or container: network mode): it has a way out that
// bypasses the bridge, so it must not be handed credentials. Such a
// container stays in List, with OtherNetworks set, so status can show it.
package identity

import (
	"context"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/events"
)

// DefaultProfileLabel is the container label naming a credential profile.
const DefaultProfileLabel = "clauderon.profile"

// DockerAPI is the part of the Docker client this package uses.
// *client.Client satisfies it.
type DockerAPI interface {
	ContainerList(ctx context.Context, options container.ListOptions) ([]container.Summary, error)
	ContainerInspect(ctx context.Context, containerID string) (container.InspectResponse, error)
	Events(ctx context.Context, options events.ListOptions) (<-chan events.Message, <-chan error)
}

// Container is one running container on the bridge.
type Container struct {
	ID       string
	Name     string
	IP       netip.Addr
	MAC      string
	Labels   map[string]string
	Profile  string // value of the profile label, "" when absent
	Labelled bool   // the profile label is present
	Pid      int
	HostVeth string // host side of the container's veth, "" when unresolved
	// OtherNetworks names the container's other networks (sorted), or its
	// network mode ("network mode host") when that bypasses the bridge.
	// Lookup refuses a container with any: see Refusal.
	OtherNetworks []string
	// SharedWith names the containers that run in this container's network
	// namespace (`--network container:<this>`): they hold its address, so
	// Lookup refuses it.
	SharedWith []string
	// Namespace and ServiceAccount are a Kubernetes pod's (node mode);
	// empty for Docker containers. Name is then "<namespace>/<pod>" and ID
	// the pod's UID.
	Namespace      string
	ServiceAccount string
}

// Refusal says why Lookup refuses c although c holds the address on our
// network, in words fit for the client and the log; "" when it does not.
func (c Container) Refusal(network string) string {
	if len(c.SharedWith) > 0 {
		return fmt.Sprintf("container %s shares its network namespace with %s (--network container:%s), which then speak with its address; credentials are only given to a container that is alone in its namespace",
			c.Name, strings.Join(c.SharedWith, ", "), c.Name)
	}
	if len(c.OtherNetworks) == 0 {
		return ""
	}
	return fmt.Sprintf("container %s is also attached to network %s; credentials are only given to containers on the %s network alone",
		c.Name, strings.Join(c.OtherNetworks, ", "), network)
}

// VethResolver finds the host-side interface of a container's endpoint.
type VethResolver func(pid int, ip netip.Addr) (string, error)

// Config configures a Table.
type Config struct {
	Docker       DockerAPI
	Network      string // docker network name
	ProfileLabel string // default DefaultProfileLabel
	// Veth resolves host veths for the anti-spoofing set; nil leaves HostVeth empty.
	Veth VethResolver
	// OnChange receives a snapshot after every change to the table. It runs on
	// the goroutine that made the change and must not call back into Sync.
	OnChange func(ctx context.Context, cs []Container)
	// OnNetwork is called for every Docker event about the network itself
	// (connect, disconnect, destroy, create): a hint to re-verify rules.
	OnNetwork func(action string)
	// MissRefresh is the minimum interval between resyncs triggered by a
	// Lookup miss (a container that started before its event arrived).
	// 0 means 1s; negative disables.
	MissRefresh time.Duration
	// Subnet is the bridge subnet: only a miss for an address inside it
	// triggers a resync, so traffic from elsewhere cannot cause inspect
	// storms. The zero Prefix allows any address (set it in production).
	Subnet netip.Prefix
	Logger *slog.Logger
}

// Table maps bridge addresses to containers. It is safe for concurrent use.
type Table struct {
	opts Config
	log  *slog.Logger

	syncMu   sync.Mutex // serializes mutations and OnChange calls
	mu       sync.RWMutex
	byID     map[string]Container
	byIP     map[netip.Addr]string
	lastMiss time.Time
	missMu   sync.Mutex
	// streamDown is set when the events stream breaks and cleared by the
	// full resync after resubscribing; while set, Lookup knows no one.
	streamDown atomic.Bool
	warned     sync.Map // container ID → struct{}: refusal already logged
}

// New returns an empty Table; call Sync or Run to fill it.
func New(opts Config) *Table {
	if opts.ProfileLabel == "" {
		opts.ProfileLabel = DefaultProfileLabel
	}
	if opts.MissRefresh == 0 {
		opts.MissRefresh = time.Second
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Table{opts: opts, log: log.With("component", "identity"),
		byID: map[string]Container{}, byIP: map[netip.Addr]string{}}
}

// Lookup returns the container holding addr, ok only when it may be
// trusted with credentials. On a miss for an address in Config.Subnet it
// resyncs with Docker (at most once per MissRefresh) so a container that
// talks before its start event is processed is still recognised.
//
// It fails closed (ok false) while the events stream is down, and for a
// container with OtherNetworks; in that case the returned Container is
// filled so the caller can explain (Container.Refusal).
func (t *Table) Lookup(addr netip.Addr) (Container, bool) {
	if t.streamDown.Load() {
		return Container{}, false
	}
	c, ok := t.lookup(addr)
	if !ok && t.missAllowed(addr) {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		if err := t.Sync(ctx); err != nil {
			t.log.Warn("resync after lookup miss failed", "addr", addr, "err", err)
		}
		c, ok = t.lookup(addr)
	}
	if !ok || t.streamDown.Load() {
		return Container{}, false
	}
	if r := c.Refusal(t.opts.Network); r != "" {
		if _, seen := t.warned.LoadOrStore(c.ID, struct{}{}); !seen {
			t.log.Warn("refusing credentials to a container with another way out", "container", c.Name, "reason", r)
		}
		return c, false
	}
	return c, true
}

// StreamDown reports whether the table is waiting for the events stream
// (Lookup refuses everyone meanwhile).
func (t *Table) StreamDown() bool { return t.streamDown.Load() }

func (t *Table) lookup(addr netip.Addr) (Container, bool) {
	t.mu.RLock()
	defer t.mu.RUnlock()
	id, ok := t.byIP[addr.Unmap()]
	if !ok {
		return Container{}, false
	}
	return t.byID[id], true
}

func (t *Table) missAllowed(addr netip.Addr) bool {
	if t.opts.MissRefresh < 0 || t.opts.Docker == nil {
		return false
	}
	if t.opts.Subnet.IsValid() && !t.opts.Subnet.Contains(addr.Unmap()) {
		return false
	}
	t.missMu.Lock()
	defer t.missMu.Unlock()
	if time.Since(t.lastMiss) < t.opts.MissRefresh {
		return false
	}
	t.lastMiss = time.Now()
	return true
}

// List returns the containers sorted by IP.
func (t *Table) List() []Container {
	t.mu.RLock()
	defer t.mu.RUnlock()
	out := slices.Collect(maps.Values(t.byID))
	slices.SortFunc(out, func(a, b Container) int { return a.IP.Compare(b.IP) })
	return out
}

// Sync replaces the table with Docker's current view of the network.
func (t *Table) Sync(ctx context.Context) error { return t.syncThen(ctx, nil) }

// syncThen is Sync with a hook run after the table is replaced and before
// subscribers are notified, so that what they observe (Lookup included) is
// already in its final state.
func (t *Table) syncThen(ctx context.Context, afterReplace func()) error {
	t.syncMu.Lock()
	defer t.syncMu.Unlock()
	// Every running container, not only ours: a container in another's
	// network namespace (--network container:X) is on no network itself.
	list, err := t.opts.Docker.ContainerList(ctx, container.ListOptions{})
	if err != nil {
		return fmt.Errorf("listing running containers: %w", err)
	}
	next := map[string]Container{}
	joiners := map[string][]string{} // X of container:X → names of the containers in X's namespace
	for _, s := range list {
		if m := container.NetworkMode(s.HostConfig.NetworkMode); m.IsContainer() {
			joiners[m.ConnectedContainer()] = append(joiners[m.ConnectedContainer()], summaryName(s))
			continue
		}
		if s.NetworkSettings != nil && s.NetworkSettings.Networks[t.opts.Network] == nil {
			continue // inspect decides when the list says nothing
		}
		c, ok, err := t.inspect(ctx, s.ID)
		if err != nil {
			return err
		}
		if ok {
			next[c.ID] = c
		}
	}
	markShared(next, joiners)
	t.replace(next)
	if afterReplace != nil {
		afterReplace()
	}
	t.notify(ctx)
	return nil
}

// refresh re-reads one container after an event and updates the table. A
// container that starts in or leaves another's network namespace changes
// that other container's standing: that takes a full resync.
func (t *Table) refresh(ctx context.Context, id string) error {
	t.syncMu.Lock()
	c, ok, joins, err := t.inspectJoin(ctx, id)
	if err != nil {
		t.syncMu.Unlock()
		return err
	}
	if joins || (!ok && t.sharedBy(id, c.Name)) {
		t.syncMu.Unlock()
		return t.Sync(ctx)
	}
	defer t.syncMu.Unlock()
	if had, ok := t.get(id); ok && len(had.SharedWith) > 0 {
		c.SharedWith = had.SharedWith // only a resync clears it
	}
	t.mu.Lock()
	old, had := t.byID[id]
	if had {
		delete(t.byIP, old.IP)
		delete(t.byID, id)
	}
	if ok {
		t.add(c)
	}
	t.mu.Unlock()
	if !ok || len(c.OtherNetworks) == 0 {
		t.warned.Delete(id) // log a later refusal again
	}
	if had || ok {
		t.notify(ctx)
	}
	return nil
}

func (t *Table) get(id string) (Container, bool) {
	t.mu.RLock()
	defer t.mu.RUnlock()
	c, ok := t.byID[id]
	return c, ok
}

// remove drops the container without asking Docker: after die, destroy or
// a disconnect from our network it holds no address of ours any more.
func (t *Table) remove(ctx context.Context, id string) {
	t.syncMu.Lock()
	defer t.syncMu.Unlock()
	t.mu.Lock()
	old, had := t.byID[id]
	if had {
		if t.byIP[old.IP] == id {
			delete(t.byIP, old.IP)
		}
		delete(t.byID, id)
	}
	t.mu.Unlock()
	t.warned.Delete(id)
	if had {
		t.notify(ctx)
	}
}

// known reports whether the table holds the container.
func (t *Table) known(id string) bool {
	t.mu.RLock()
	defer t.mu.RUnlock()
	_, ok := t.byID[id]
	return ok
}

func (t *Table) replace(next map[string]Container) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.byID = map[string]Container{}
	t.byIP = map[netip.Addr]string{}
	for _, c := range next {
		t.add(c)
	}
	t.warned.Range(func(id, _ any) bool {
		if _, ok := next[id.(string)]; !ok {
			t.warned.Delete(id)
		}
		return true
	})
}

// add inserts c; the caller holds t.mu. An address reused by a newer
// container evicts the stale entry.
func (t *Table) add(c Container) {
	if prev, ok := t.byIP[c.IP]; ok && prev != c.ID {
		delete(t.byID, prev)
	}
	t.byID[c.ID] = c
	t.byIP[c.IP] = c.ID
}

func (t *Table) notify(ctx context.Context) {
	if t.opts.OnChange != nil {
		t.opts.OnChange(ctx, t.List())
	}
}

func shortID(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}
