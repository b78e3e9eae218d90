// Package identity answers "which container is 10.x.y.z on our bridge?": it
// keeps a table of the running containers attached to the clauderon Docker
// network (id, name, labels, profile, MAC, host-side veth), built from an
// initial ContainerList and kept current from the Docker events stream.
//
// It refuses to enforce anything itself: it never touches nftables, TLS or
// credentials. It reports changes through a callback so that package
// appliance can keep the netfilter anti-spoofing port set and the metrics in
// step. A container it does not know is simply unknown; callers fail closed.
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
	"time"

	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/events"
	"github.com/docker/docker/api/types/filters"
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
}

// VethResolver finds the host-side interface of a container's endpoint.
type VethResolver func(pid int, ip netip.Addr) (string, error)

// Options configure a Table.
type Options struct {
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
	Logger      *slog.Logger
}

// Table maps bridge addresses to containers. It is safe for concurrent use.
type Table struct {
	opts Options
	log  *slog.Logger

	syncMu   sync.Mutex // serializes mutations and OnChange calls
	mu       sync.RWMutex
	byID     map[string]Container
	byIP     map[netip.Addr]string
	lastMiss time.Time
	missMu   sync.Mutex
}

// New returns an empty Table; call Sync or Run to fill it.
func New(opts Options) *Table {
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

// Lookup returns the container holding addr. On a miss it resyncs with Docker
// (at most once per MissRefresh) so a container that talks before its start
// event is processed is still recognised.
func (t *Table) Lookup(addr netip.Addr) (Container, bool) {
	if c, ok := t.lookup(addr); ok {
		return c, true
	}
	if !t.missAllowed() {
		return Container{}, false
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := t.Sync(ctx); err != nil {
		t.log.Warn("resync after lookup miss failed", "addr", addr, "err", err)
	}
	return t.lookup(addr)
}

func (t *Table) lookup(addr netip.Addr) (Container, bool) {
	t.mu.RLock()
	defer t.mu.RUnlock()
	id, ok := t.byIP[addr.Unmap()]
	if !ok {
		return Container{}, false
	}
	return t.byID[id], true
}

func (t *Table) missAllowed() bool {
	if t.opts.MissRefresh < 0 || t.opts.Docker == nil {
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
func (t *Table) Sync(ctx context.Context) error {
	t.syncMu.Lock()
	defer t.syncMu.Unlock()
	list, err := t.opts.Docker.ContainerList(ctx, container.ListOptions{
		Filters: filters.NewArgs(filters.Arg("network", t.opts.Network)),
	})
	if err != nil {
		return fmt.Errorf("listing containers on network %q: %w", t.opts.Network, err)
	}
	next := map[string]Container{}
	for _, s := range list {
		c, ok, err := t.inspect(ctx, s.ID)
		if err != nil {
			return err
		}
		if ok {
			next[c.ID] = c
		}
	}
	t.replace(next)
	t.notify(ctx)
	return nil
}

// refresh re-reads one container after an event and updates the table.
func (t *Table) refresh(ctx context.Context, id string) error {
	t.syncMu.Lock()
	defer t.syncMu.Unlock()
	c, ok, err := t.inspect(ctx, id)
	if err != nil {
		return err
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
	if had || ok {
		t.notify(ctx)
	}
	return nil
}

// inspect returns the container as a table entry, ok=false when it is gone,
// not running, or not attached to the network.
func (t *Table) inspect(ctx context.Context, id string) (Container, bool, error) {
	ins, err := t.opts.Docker.ContainerInspect(ctx, id)
	if cerrdefs.IsNotFound(err) {
		return Container{}, false, nil
	}
	if err != nil {
		return Container{}, false, fmt.Errorf("inspecting container %s: %w", shortID(id), err)
	}
	if ins.ContainerJSONBase == nil || ins.State == nil || !ins.State.Running || ins.NetworkSettings == nil {
		return Container{}, false, nil
	}
	ep, ok := ins.NetworkSettings.Networks[t.opts.Network]
	if !ok || ep == nil {
		return Container{}, false, nil
	}
	ip, err := netip.ParseAddr(ep.IPAddress)
	if err != nil {
		return Container{}, false, nil // attached but no address yet: the connect event follows
	}
	c := Container{ID: ins.ID, Name: strings.TrimPrefix(ins.Name, "/"), IP: ip, MAC: ep.MacAddress, Pid: ins.State.Pid}
	if ins.Config != nil {
		c.Labels = maps.Clone(ins.Config.Labels)
	}
	c.Profile, c.Labelled = c.Labels[t.opts.ProfileLabel]
	c.HostVeth = t.resolveVeth(c)
	return c, true, nil
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

func (t *Table) replace(next map[string]Container) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.byID = map[string]Container{}
	t.byIP = map[netip.Addr]string{}
	for _, c := range next {
		t.add(c)
	}
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
