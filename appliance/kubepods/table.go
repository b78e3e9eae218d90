package kubepods

import (
	"cmp"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"net/netip"
	"net/url"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"github.com/clauderon/clauderond/appliance/identity"
)

// maxListBytes caps the body of the pod list.
const maxListBytes = 64 << 20

// Config configures a Table.
type Config struct {
	Client *Client
	Node   string // spec.nodeName of the pods to follow (required)
	// Subnet is this node's pod subnet on the bridge; pods outside it are
	// ignored (required).
	Subnet       netip.Prefix
	ProfileLabel string // default identity.DefaultProfileLabel
	// Veth finds the host-side veth of the pod (podUID) holding ip, for
	// the anti-spoofing set. Default: CNIResults(DefaultCNIResultsDir, "").
	Veth func(ip netip.Addr, podUID string) (string, error)
	// OnChange receives the full list (List) after every change to the
	// table. It runs on the goroutine that made the change, one call at a
	// time, and must not call back into Sync. May be nil.
	OnChange func(ctx context.Context, cs []identity.Container)
	Logger   *slog.Logger
	Now      func() time.Time // default time.Now
}

// Table maps pod addresses on this node to pods. It is safe for concurrent
// use.
type Table struct {
	opts Config
	log  *slog.Logger

	syncMu sync.Mutex // serializes mutations, Veth calls and OnChange
	rv     string     // resourceVersion of the last list or event (syncMu)
	// Warnings already logged (syncMu): a pod's veth not found, an address
	// claimed by several pods. Cleared when the condition ends.
	vethWarned     map[string]bool
	conflictWarned map[netip.Addr]bool
	vethRounds     int // resolveVeths calls (syncMu)

	mu    sync.RWMutex
	byUID map[string]identity.Container
	byIP  map[netip.Addr][]string // address → uids claiming it

	// streamDown is set until the first list and from a watch failure until
	// the relist after it; while set, Lookup knows no one.
	streamDown atomic.Bool
	running    atomic.Bool // Run owns the watch (and streamDown)

	// Knobs that tests shrink.
	maxEvent, maxList      int64
	backoffMin, backoffMax time.Duration
	vethEvery              time.Duration
	recheckEvery           int // one veth round in this many asks again for every pod
	watchTimeout           func() time.Duration
}

// New returns an empty Table that refuses every address until Sync or Run
// has listed the node's pods.
func New(o Config) *Table {
	if o.ProfileLabel == "" {
		o.ProfileLabel = identity.DefaultProfileLabel
	}
	if o.Veth == nil {
		o.Veth = CNIResults(DefaultCNIResultsDir, "")
	}
	if o.Now == nil {
		o.Now = time.Now
	}
	log := o.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	t := &Table{opts: o, log: log.With("component", "kubepods"),
		vethWarned: map[string]bool{}, conflictWarned: map[netip.Addr]bool{},
		byUID: map[string]identity.Container{}, byIP: map[netip.Addr][]string{},
		maxEvent: maxEventBytes, maxList: maxListBytes,
		backoffMin: 200 * time.Millisecond, backoffMax: 5 * time.Second,
		vethEvery: time.Second, recheckEvery: 10, watchTimeout: jitteredWatchTimeout}
	t.streamDown.Store(true)
	return t
}

func (t *Table) check() error {
	switch {
	case t.opts.Client == nil:
		return errors.New("kubepods: no API client")
	case t.opts.Node == "":
		return errors.New("kubepods: no node name (spec.nodeName of the pods to follow)")
	case !t.opts.Subnet.IsValid() || !t.opts.Subnet.Addr().Is4():
		return fmt.Errorf("kubepods: pod subnet %v is not an IPv4 prefix", t.opts.Subnet)
	}
	return nil
}

// Lookup returns the pod holding addr, ok only when the table can vouch
// for it: never while the watch is down (StreamDown), never for an address
// two pods claim, never for an unknown address.
func (t *Table) Lookup(addr netip.Addr) (identity.Container, bool) {
	if t.streamDown.Load() {
		return identity.Container{}, false
	}
	t.mu.RLock()
	uids := t.byIP[addr.Unmap()]
	var c identity.Container
	if len(uids) == 1 {
		c = t.byUID[uids[0]]
	}
	t.mu.RUnlock()
	if len(uids) != 1 || t.streamDown.Load() {
		return identity.Container{}, false
	}
	return c, true
}

// StreamDown reports whether the table is waiting for the watch (Lookup
// refuses everyone meanwhile): before the first list, and from a watch
// failure until the relist after it.
func (t *Table) StreamDown() bool { return t.streamDown.Load() }

// List returns the pods sorted by Name, those that share an address
// included.
func (t *Table) List() []identity.Container {
	t.mu.RLock()
	out := slices.Collect(maps.Values(t.byUID))
	t.mu.RUnlock()
	slices.SortFunc(out, func(a, b identity.Container) int {
		return cmp.Or(cmp.Compare(a.Name, b.Name), cmp.Compare(a.ID, b.ID))
	})
	return out
}

// Sync replaces the table with the API server's list of the node's pods.
// Before Run, it also ends the initial fail-closed state and gives Run the
// resource version to watch from; while Run is running, the watch owns
// that state and Sync only refreshes the entries.
func (t *Table) Sync(ctx context.Context) error {
	if err := t.check(); err != nil {
		return err
	}
	_, err := t.relist(ctx, !t.running.Load())
	return err
}

// relist lists the node's pods and replaces the table. With owner set it
// records the resource version and clears streamDown, after the table is
// replaced and before anyone is told.
func (t *Table) relist(ctx context.Context, owner bool) (string, error) {
	list, err := t.listPods(ctx)
	if err != nil {
		return "", err
	}
	t.syncMu.Lock()
	defer t.syncMu.Unlock()
	prev := t.byUID // only syncMu holders write it
	next := map[string]identity.Container{}
	for i := range list.Items {
		if c, ok := t.container(&list.Items[i], prev); ok {
			next[c.ID] = c
		}
	}
	t.replace(next)
	if owner {
		t.rv = list.Metadata.ResourceVersion
		if t.streamDown.Swap(false) {
			t.log.Info("pod list in; the table vouches for addresses again", "pods", len(next))
		}
	}
	t.notify(ctx)
	return list.Metadata.ResourceVersion, nil
}

// listPods GETs the node's pods, the body bounded by maxList.
func (t *Table) listPods(ctx context.Context) (*podList, error) {
	ctx, cancel := context.WithTimeout(ctx, time.Minute)
	defer cancel()
	resp, err := t.opts.Client.get(ctx, "/api/v1/pods", t.query())
	if err != nil {
		return nil, fmt.Errorf("listing the pods of node %s: %w", t.opts.Node, err)
	}
	defer resp.Body.Close()
	var list podList
	body := &cappedReader{r: resp.Body, n: t.maxList, what: "pod list"}
	if err := json.NewDecoder(body).Decode(&list); err != nil {
		return nil, fmt.Errorf("decoding the pods of node %s: %w", t.opts.Node, err)
	}
	if list.Metadata.ResourceVersion == "" {
		return nil, fmt.Errorf("pod list of node %s has no resourceVersion", t.opts.Node)
	}
	return &list, nil
}

func (t *Table) query() url.Values {
	return url.Values{"fieldSelector": {"spec.nodeName=" + t.opts.Node}}
}

// container converts p, reusing the veth of prev's entry for the same pod
// and address, else asking Veth. The caller holds syncMu.
func (t *Table) container(p *pod, prev map[string]identity.Container) (identity.Container, bool) {
	c, ok := podContainer(p, t.opts.Node, t.opts.Subnet, t.opts.ProfileLabel)
	if !ok {
		return c, false
	}
	if old, had := prev[c.ID]; had && old.IP == c.IP && old.HostVeth != "" {
		c.HostVeth = old.HostVeth
		return c, true
	}
	c.HostVeth = t.veth(c)
	return c, true
}

// veth asks Veth for c's host veth; "" (warned once per pod) on failure.
func (t *Table) veth(c identity.Container) string {
	v, err := t.opts.Veth(c.IP, c.ID)
	if err != nil || v == "" {
		if !t.vethWarned[c.ID] {
			t.vethWarned[c.ID] = true
			t.log.Warn("host veth of pod not found; its traffic stays dropped until it is", "pod", c.Name, "ip", c.IP, "err", err)
		}
		return ""
	}
	delete(t.vethWarned, c.ID)
	return v
}

// apply applies one pod event. The caller holds syncMu.
func (t *Table) apply(ctx context.Context, ev event) {
	t.mu.RLock()
	old, had := t.byUID[ev.Pod.Metadata.UID]
	t.mu.RUnlock()
	c, ok := identity.Container{}, false
	if ev.Type != eventDeleted {
		c, ok = t.container(ev.Pod, map[string]identity.Container{old.ID: old})
	}
	switch {
	case ok && had && sameContainer(c, old):
		return
	case ok:
		t.mu.Lock()
		t.unindex(old.ID, old.IP)
		t.byUID[c.ID] = c
		t.byIP[c.IP] = append(t.byIP[c.IP], c.ID)
		t.mu.Unlock()
	case had:
		t.mu.Lock()
		t.unindex(old.ID, old.IP)
		t.mu.Unlock()
		delete(t.vethWarned, old.ID)
	default:
		return
	}
	t.warnConflicts()
	t.notify(ctx)
}

// unindex drops uid (which held ip) from both maps; the caller holds mu.
func (t *Table) unindex(uid string, ip netip.Addr) {
	if uid == "" {
		return
	}
	delete(t.byUID, uid)
	rest := slices.DeleteFunc(slices.Clone(t.byIP[ip]), func(u string) bool { return u == uid })
	if len(rest) == 0 {
		delete(t.byIP, ip)
	} else {
		t.byIP[ip] = rest
	}
}

// replace swaps in next as the whole table; the caller holds syncMu.
func (t *Table) replace(next map[string]identity.Container) {
	byIP := map[netip.Addr][]string{}
	for _, c := range next {
		byIP[c.IP] = append(byIP[c.IP], c.ID)
	}
	for _, uids := range byIP {
		slices.Sort(uids)
	}
	t.mu.Lock()
	t.byUID, t.byIP = next, byIP
	t.mu.Unlock()
	for uid := range t.vethWarned {
		if _, ok := next[uid]; !ok {
			delete(t.vethWarned, uid)
		}
	}
	t.warnConflicts()
}

// warnConflicts logs each address claimed by several pods once while the
// conflict lasts. The caller holds syncMu.
func (t *Table) warnConflicts() {
	t.mu.RLock()
	defer t.mu.RUnlock()
	for ip := range t.conflictWarned {
		if len(t.byIP[ip]) < 2 {
			delete(t.conflictWarned, ip)
		}
	}
	for ip, uids := range t.byIP {
		if len(uids) < 2 || t.conflictWarned[ip] {
			continue
		}
		t.conflictWarned[ip] = true
		var names []string
		for _, u := range uids {
			names = append(names, t.byUID[u].Name)
		}
		t.log.Warn("several pods claim one address; it belongs to no one until one remains", "ip", ip, "pods", names)
	}
}

// sameContainer reports whether a and b carry the same information.
func sameContainer(a, b identity.Container) bool {
	return a.ID == b.ID && a.Name == b.Name && a.IP == b.IP && a.Profile == b.Profile &&
		a.Labelled == b.Labelled && a.HostVeth == b.HostVeth && a.Namespace == b.Namespace &&
		a.ServiceAccount == b.ServiceAccount && maps.Equal(a.Labels, b.Labels)
}

func (t *Table) notify(ctx context.Context) {
	if t.opts.OnChange != nil {
		t.opts.OnChange(ctx, t.List())
	}
}

// resolveVeths retries Veth for the pods without a host veth (Run calls it
// once per vethEvery) and tells OnChange when one is found.
//
// Every recheckEvery-th round (10: every 10 s) it asks again for every pod: a sandbox
// re-created with the same address (its pause container died, containerd
// restarted) has a new host veth, and the old name would keep dropping
// the pod's traffic.
func (t *Table) resolveVeths(ctx context.Context) {
	t.syncMu.Lock()
	defer t.syncMu.Unlock()
	all := t.vethRounds%t.recheckEvery == 0
	t.vethRounds++
	t.mu.RLock()
	var todo []identity.Container
	for _, c := range t.byUID {
		if all || c.HostVeth == "" {
			todo = append(todo, c)
		}
	}
	t.mu.RUnlock()
	found := false
	for _, c := range todo {
		if v := t.veth(c); v != "" && v != c.HostVeth {
			t.mu.Lock()
			if cur, ok := t.byUID[c.ID]; ok && cur.IP == c.IP && cur.HostVeth == c.HostVeth {
				cur.HostVeth = v
				t.byUID[c.ID] = cur
				found = true
			}
			t.mu.Unlock()
		}
	}
	if found {
		t.notify(ctx)
	}
}
