package kubepods

import (
	"context"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/clauderon/clauderond/appliance/identity"
	"github.com/clauderon/clauderond/appliance/internal/testutil"
	"github.com/google/go-cmp/cmp"
)

func TestSync_ListsTheNodesPodsSortedByName(t *testing.T) {
	f := newFakeAPI(t)
	f.set(mkPod("web", "10.215.0.7"))
	f.set(mkPod("api", "10.215.0.5"))
	f.set(mkPod("hostnet", "192.168.1.10", func(p *pod) { p.Spec.HostNetwork = true }))
	f.set(mkPod("done", "10.215.0.9", func(p *pod) { p.Status.Phase = "Succeeded" }))
	tab := newTestTable(t, f, nil)

	if !tab.StreamDown() {
		t.Error("StreamDown before the first list = false, want true")
	}
	if _, ok := tab.Lookup(netip.MustParseAddr("10.215.0.5")); ok {
		t.Error("Lookup before the first list succeeded")
	}
	if err := tab.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	if got, want := listNames(tab), []string{"team/api", "team/web"}; !slices.Equal(got, want) {
		t.Errorf("List = %v, want %v", got, want)
	}
	if tab.StreamDown() {
		t.Error("StreamDown after Sync = true")
	}
	c, ok := tab.Lookup(netip.MustParseAddr("10.215.0.5"))
	if !ok || c.ID != "uid-api" || c.HostVeth != "veth5" {
		t.Errorf("Lookup(.5) = %+v, %v; want uid-api on veth5", c, ok)
	}
	if _, ok := tab.Lookup(netip.MustParseAddr("10.215.0.9")); ok {
		t.Error("Lookup succeeded for a finished pod's address")
	}
	if q := f.listQuery; q.Get("watch") != "" {
		t.Errorf("list query %v has watch set", q)
	}
}

func TestSync_APIErrorsSayWhatToDo(t *testing.T) {
	for _, tc := range []struct {
		name   string
		status int
		want   string
	}{
		{"401_token_rejected", 401, "rejected the token"},
		{"403_missing_rbac", 403, "the service account needs get/list/watch on pods (ClusterRole in scripts/kubernetes)"},
		{"500_passes_the_message", 500, "fake says 500"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeAPI(t)
			f.setStatus(tc.status, 0)
			err := newTestTable(t, f, nil).Sync(context.Background())
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Sync = %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

func TestSync_RefusesIncompleteOptions(t *testing.T) {
	f := newFakeAPI(t)
	for _, tc := range []struct {
		name string
		mod  func(*Config)
		want string
	}{
		{"no_client", func(o *Config) { o.Client = nil }, "no API client"},
		{"no_node", func(o *Config) { o.Node = "" }, "no node name"},
		{"no_subnet", func(o *Config) { o.Subnet = netip.Prefix{} }, "not an IPv4 prefix"},
		{"ipv6_subnet", func(o *Config) { o.Subnet = netip.MustParsePrefix("fd00::/64") }, "not an IPv4 prefix"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			tab := newTestTable(t, f, tc.mod)
			if err := tab.Sync(context.Background()); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Sync = %v, want %q", err, tc.want)
			}
			if err := tab.Run(context.Background()); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Run = %v, want %q", err, tc.want)
			}
		})
	}
}

func TestSync_ListBodyIsBounded(t *testing.T) {
	f := newFakeAPI(t)
	for i := range 20 {
		f.set(mkPod(fmt.Sprintf("p%d", i), fmt.Sprintf("10.215.0.%d", i+2)))
	}
	tab := newTestTable(t, f, nil)
	tab.maxList = 1024
	if err := tab.Sync(context.Background()); err == nil || !strings.Contains(err.Error(), "larger than the limit") {
		t.Errorf("Sync = %v, want a too-large error", err)
	}
	if !tab.StreamDown() {
		t.Error("StreamDown after a failed first list = false")
	}
}

func TestRun_FollowsTheWatch(t *testing.T) {
	f := newFakeAPI(t)
	f.set(mkPod("api", "10.215.0.5"))
	tab := newTestTable(t, f, nil)
	if err := tab.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	startRun(t, tab)
	f.waitWatches(t, 1)
	q := f.watchQuery()
	for k, want := range map[string]string{"resourceVersion": "101", "allowWatchBookmarks": "true", "timeoutSeconds": "300"} {
		if got := q.Get(k); got != want {
			t.Errorf("watch %s = %q, want %q", k, got, want)
		}
	}

	f.event(eventAdded, mkPod("web", "10.215.0.7"))
	testutil.WaitFor(t, "web added", func() bool { return lookupName(tab, "10.215.0.7") == "team/web" })

	f.event(eventModified, mkPod("web", "10.215.0.7", func(p *pod) {
		p.Metadata.Labels[identity.DefaultProfileLabel] = "github"
	}))
	testutil.WaitFor(t, "web profile", func() bool {
		c, _ := tab.Lookup(netip.MustParseAddr("10.215.0.7"))
		return c.Profile == "github" && c.Labelled
	})

	f.event(eventDeleted, mkPod("web", "10.215.0.7"))
	testutil.WaitFor(t, "web deleted", func() bool { return lookupName(tab, "10.215.0.7") == "" })

	// A bookmark moves the resource version; a clean end watches again
	// from it, without a relist and without failing closed.
	f.send(watchCmd{line: `{"type":"BOOKMARK","object":{"kind":"Pod","metadata":{"resourceVersion":"999"}}}`})
	f.send(watchCmd{end: true})
	f.waitWatches(t, 2)
	if got := f.watchQuery().Get("resourceVersion"); got != "999" {
		t.Errorf("second watch resourceVersion = %q, want the bookmark's 999", got)
	}
	if lists, _ := f.counts(); lists != 1 {
		t.Errorf("lists = %d after a clean end, want 1", lists)
	}
	if tab.StreamDown() || lookupName(tab, "10.215.0.5") != "team/api" {
		t.Error("a clean end of the watch made the table refuse")
	}
}

func TestRun_ListsFirstWithoutSync(t *testing.T) {
	f := newFakeAPI(t)
	f.set(mkPod("api", "10.215.0.5"))
	tab := newTestTable(t, f, nil)
	startRun(t, tab)
	f.waitWatches(t, 1)
	testutil.WaitFor(t, "api known", func() bool { return lookupName(tab, "10.215.0.5") == "team/api" })
}

func TestRun_ReturnsOnCancel(t *testing.T) {
	for _, tc := range []struct {
		name string
		down bool // cancel while the API server fails every list
	}{{"while_watching", false}, {"while_backing_off", true}} {
		t.Run(tc.name, func(t *testing.T) {
			f := newFakeAPI(t)
			tab := newTestTable(t, f, nil)
			if tc.down {
				f.setStatus(500, 0)
			}
			stop := startRun(t, tab)
			if tc.down {
				testutil.WaitFor(t, "a failed list", func() bool { l, _ := f.counts(); return l >= 2 })
			} else {
				f.waitWatches(t, 1)
			}
			stop() // fails the test unless Run returns nil within 10 s
		})
	}
}

// TestFailClosed_WatchDownRefusesEveryone: from a broken watch until the
// relist, a stale entry's address may be a new pod's.
func TestFailClosed_WatchDownRefusesEveryone(t *testing.T) {
	f := newFakeAPI(t)
	f.set(mkPod("api", "10.215.0.5"))
	tab := newTestTable(t, f, nil)
	if err := tab.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	startRun(t, tab)
	f.waitWatches(t, 1)

	f.setStatus(500, 0) // relists fail until the test allows them
	f.send(watchCmd{cut: true})
	testutil.WaitFor(t, "stream down", tab.StreamDown)
	testutil.WaitFor(t, "a failed relist", func() bool { l, _ := f.counts(); return l >= 2 })
	if c, ok := tab.Lookup(netip.MustParseAddr("10.215.0.5")); ok {
		t.Errorf("Lookup while the watch is down = %+v, ok", c)
	}
	if got := listNames(tab); !slices.Equal(got, []string{"team/api"}) {
		t.Errorf("List while down = %v, want the last known pods", got)
	}

	f.set(mkPod("web", "10.215.0.7")) // happened while nobody watched
	f.setStatus(0, 0)
	testutil.WaitFor(t, "stream back", func() bool { return !tab.StreamDown() })
	if lookupName(tab, "10.215.0.5") != "team/api" || lookupName(tab, "10.215.0.7") != "team/web" {
		t.Errorf("after the relist List = %v, want api and web", listNames(tab))
	}
}

// TestFailClosed_TwoPodsOneAddressRefused: a terminating pod keeps its
// address until it is gone; meanwhile its successor's is no one's.
func TestFailClosed_TwoPodsOneAddressRefused(t *testing.T) {
	f := newFakeAPI(t)
	old := f.set(mkPod("old", "10.215.0.5", terminating))
	tab := newTestTable(t, f, nil)
	if err := tab.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	if lookupName(tab, "10.215.0.5") != "team/old" {
		t.Fatal("a terminating pod lost its address before DELETED")
	}
	startRun(t, tab)
	f.waitWatches(t, 1)

	f.event(eventAdded, mkPod("new", "10.215.0.5"))
	testutil.WaitFor(t, "both listed", func() bool { return len(tab.List()) == 2 })
	if c, ok := tab.Lookup(netip.MustParseAddr("10.215.0.5")); ok {
		t.Errorf("Lookup of an address two pods claim = %s, ok", c.Name)
	}
	f.event(eventDeleted, old)
	testutil.WaitFor(t, "successor owns it", func() bool { return lookupName(tab, "10.215.0.5") == "team/new" })

	// The same through a relist, and an address that goes away.
	f.set(mkPod("old2", "10.215.0.6", terminating))
	f.set(mkPod("new2", "10.215.0.6"))
	if err := tab.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	if c, ok := tab.Lookup(netip.MustParseAddr("10.215.0.6")); ok {
		t.Errorf("after a relist, Lookup of a shared address = %s, ok", c.Name)
	}
	f.event(eventModified, mkPod("old2", "", terminating))
	testutil.WaitFor(t, "new2 owns it", func() bool { return lookupName(tab, "10.215.0.6") == "team/new2" })
}

func TestFailClosed_UnknownAddressRefused(t *testing.T) {
	f := newFakeAPI(t)
	f.set(mkPod("api", "10.215.0.5"))
	tab := newTestTable(t, f, nil)
	if err := tab.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	for _, a := range []netip.Addr{netip.MustParseAddr("10.215.0.99"), netip.MustParseAddr("192.168.0.5"),
		netip.MustParseAddr("fd00::5"), {}} {
		if c, ok := tab.Lookup(a); ok {
			t.Errorf("Lookup(%v) = %s, ok", a, c.Name)
		}
	}
	if lookupName(tab, "::ffff:10.215.0.5") != "team/api" {
		t.Error("Lookup of the IPv4-mapped form of a known address failed")
	}
}

// recorder keeps OnChange's lists.
type recorder struct {
	mu    sync.Mutex
	lists [][]identity.Container
}

func (r *recorder) onChange(_ context.Context, cs []identity.Container) {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.lists = append(r.lists, cs)
}

func (r *recorder) names() [][]string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out [][]string
	for _, l := range r.lists {
		var ns []string
		for _, c := range l {
			ns = append(ns, c.Name+"@"+c.HostVeth)
		}
		out = append(out, ns)
	}
	return out
}

func TestOnChange_GetsTheFullListAfterEveryChange(t *testing.T) {
	f := newFakeAPI(t)
	f.set(mkPod("a", "10.215.0.2"))
	var rec recorder
	tab := newTestTable(t, f, func(o *Config) { o.OnChange = rec.onChange })
	if err := tab.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	startRun(t, tab)
	f.waitWatches(t, 1)
	f.event(eventAdded, mkPod("b", "10.215.0.3"))
	f.event(eventModified, mkPod("b", "10.215.0.3")) // only the resource version moves
	f.event(eventModified, mkPod("x", ""))           // not ours before, not ours now
	f.event(eventAdded, mkPod("c", "10.215.0.4"))
	f.event(eventDeleted, mkPod("a", "10.215.0.2"))
	want := [][]string{
		{"team/a@veth2"},
		{"team/a@veth2", "team/b@veth3"},
		{"team/a@veth2", "team/b@veth3", "team/c@veth4"},
		{"team/b@veth3", "team/c@veth4"},
	}
	testutil.WaitFor(t, "four changes", func() bool { return len(rec.names()) >= len(want) })
	if diff := cmp.Diff(rec.names(), want); diff != "" {
		t.Errorf("OnChange lists (-got +want):\n%s", diff)
	}
}

func TestVeth_UnresolvedIsRetriedAndReported(t *testing.T) {
	f := newFakeAPI(t)
	f.set(mkPod("a", "10.215.0.2"))
	var (
		mu    sync.Mutex
		ready bool
		calls int
	)
	veth := func(ip netip.Addr, uid string) (string, error) {
		mu.Lock()
		defer mu.Unlock()
		calls++
		if !ready {
			return "", fmt.Errorf("no CNI result holds %s", ip)
		}
		return fakeVeth(ip, uid)
	}
	var rec recorder
	tab := newTestTable(t, f, func(o *Config) { o.Veth, o.OnChange = veth, rec.onChange })
	tab.recheckEvery = 1 << 30 // this test is about the first resolution; see TestVeth_RecreatedSandboxIsFollowed
	if err := tab.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	if c, ok := tab.Lookup(netip.MustParseAddr("10.215.0.2")); !ok || c.HostVeth != "" {
		t.Fatalf("Lookup = %+v, %v; want the pod with no veth", c, ok)
	}
	startRun(t, tab)
	testutil.WaitFor(t, "retries", func() bool { mu.Lock(); defer mu.Unlock(); return calls >= 3 })
	mu.Lock()
	ready = true
	mu.Unlock()
	testutil.WaitFor(t, "veth reported", func() bool {
		n := rec.names()
		return len(n) > 0 && slices.Equal(n[len(n)-1], []string{"team/a@veth2"})
	})
	mu.Lock()
	before := calls
	mu.Unlock()
	f.waitWatches(t, 1)
	f.event(eventModified, mkPod("a", "10.215.0.2", func(p *pod) { p.Metadata.Labels["x"] = "y" }))
	testutil.WaitFor(t, "label seen", func() bool { c, _ := tab.Lookup(netip.MustParseAddr("10.215.0.2")); return c.Labels["x"] == "y" })
	mu.Lock()
	defer mu.Unlock()
	if calls != before {
		t.Errorf("Veth called %d more times for a resolved pod whose address did not change", calls-before)
	}
}

// TestVeth_RecreatedSandboxIsFollowed: a pod's sandbox re-created with the
// same address gets a new host veth; the periodic recheck picks it up.
func TestVeth_RecreatedSandboxIsFollowed(t *testing.T) {
	f := newFakeAPI(t)
	f.set(mkPod("a", "10.215.0.2"))
	var (
		mu   sync.Mutex
		name = "vethold"
	)
	veth := func(netip.Addr, string) (string, error) { mu.Lock(); defer mu.Unlock(); return name, nil }
	var rec recorder
	tab := newTestTable(t, f, func(o *Config) { o.Veth, o.OnChange = veth, rec.onChange })
	tab.recheckEvery = 2
	if err := tab.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	startRun(t, tab)
	mu.Lock()
	name = "vethnew"
	mu.Unlock()
	testutil.WaitFor(t, "the new veth", func() bool {
		c, ok := tab.Lookup(netip.MustParseAddr("10.215.0.2"))
		return ok && c.HostVeth == "vethnew"
	})
	testutil.WaitFor(t, "OnChange told", func() bool {
		n := rec.names()
		return len(n) > 0 && slices.Equal(n[len(n)-1], []string{"team/a@vethnew"})
	})
}
