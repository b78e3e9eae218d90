package identity

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/clauderon/clauderond/appliance/internal/dockertest"
	"github.com/clauderon/clauderond/appliance/internal/testutil"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/events"
	"github.com/docker/docker/api/types/network"
)

const testNet = "clauderon"

// fakeDocker is dockerd in memory (appliance/internal/dockertest) driven
// by the tests' scripts: they change containers behind the event stream
// (put, putJoiner, del, attach, detach) and write the events and stream
// errors dockerd would send themselves. Each Events subscription is handed
// to the test as a pair of channels on streams and errStreams.
type fakeDocker struct {
	*dockertest.Docker
	streams    chan chan<- events.Message
	errStreams chan chan<- error
}

func newFake() *fakeDocker {
	f := &fakeDocker{Docker: dockertest.New(),
		streams: make(chan chan<- events.Message, 4), errStreams: make(chan chan<- error, 4)}
	f.OnSubscribe(f.handOver)
	return f
}

// handOver gives the test the channels that feed subscription s. Once the
// subscriber is cancelled the hand-over gives up: a test that stopped
// taking them (a failure, or more reconnects than the buffer holds) must
// not leave Run stuck here and the Cleanup waiting for Run forever.
func (f *fakeDocker) handOver(ctx context.Context, s *dockertest.Subscriber) {
	msgs, errs := make(chan events.Message), make(chan error, 1)
	select {
	case f.streams <- msgs:
	case <-ctx.Done():
	}
	select {
	case f.errStreams <- errs:
	case <-ctx.Done():
	}
	go relayTestStream(ctx, s, msgs, errs)
}

// relayTestStream passes what the test writes on to its subscription until
// the test fails the stream or the subscriber goes away.
func relayTestStream(ctx context.Context, s *dockertest.Subscriber, msgs <-chan events.Message, errs <-chan error) {
	for {
		select {
		case m := <-msgs:
			s.Send(m)
		case err := <-errs:
			s.Fail(err)
			return
		case <-ctx.Done():
			return
		}
	}
}

// put installs a container on testNet behind the event stream.
func (f *fakeDocker) put(id, name, ip string, running bool, labels map[string]string) {
	c := dockertest.Container{ID: id, Name: name, Status: "exited", Config: &container.Config{Labels: labels},
		Networks: map[string]*network.EndpointSettings{testNet: {IPAddress: ip, MacAddress: "02:42:0a:00:00:02"}}}
	if running {
		c.Status, c.Pid = "running", 4242
	}
	f.Put(c)
}

// del removes a container behind the event stream.
func (f *fakeDocker) del(id string) { _ = f.Forget(id) }

// putJoiner adds a running container in target's network namespace
// (--network container:<target>): on no network of its own.
func (f *fakeDocker) putJoiner(id, name, target string) {
	f.Put(dockertest.Container{ID: id, Name: name, Pid: 4343,
		HostConfig: &container.HostConfig{NetworkMode: container.NetworkMode("container:" + target)}})
}

func (f *fakeDocker) subs() int { return f.Calls("Events") }

// recorder collects OnChange snapshots.
type recorder struct {
	mu    sync.Mutex
	snaps [][]Container
	ch    chan struct{}
}

func newRecorder() *recorder { return &recorder{ch: make(chan struct{}, 100)} }

func (r *recorder) onChange(_ context.Context, cs []Container) {
	r.mu.Lock()
	r.snaps = append(r.snaps, cs)
	r.mu.Unlock()
	r.ch <- struct{}{}
}

func (r *recorder) wait(t *testing.T) []Container {
	t.Helper()
	select {
	case <-r.ch:
	case <-time.After(5 * time.Second):
		t.Fatal("no OnChange within 5s")
	}
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.snaps[len(r.snaps)-1]
}

func containerEvent(action events.Action, id string) events.Message {
	return events.Message{Type: events.ContainerEventType, Action: action, Actor: events.Actor{ID: id}}
}

func networkEvent(action events.Action, containerID string) events.Message {
	return events.Message{Type: events.NetworkEventType, Action: action,
		Actor: events.Actor{ID: "netid", Attributes: map[string]string{"name": testNet, "container": containerID}}}
}

func startTable(t *testing.T, f *fakeDocker, opts Config) (*Table, *recorder, chan<- events.Message, chan<- error) {
	t.Helper()
	rec := newRecorder()
	opts.Docker, opts.Network, opts.OnChange, opts.MissRefresh = f, testNet, rec.onChange, -1
	opts.Veth = func(pid int, ip netip.Addr) (string, error) { return "veth-" + ip.String(), nil }
	tb := New(opts)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- tb.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run = %v, want nil after cancel", err)
		}
	})
	msgs, errs := <-f.streams, <-f.errStreams
	rec.wait(t) // initial sync
	return tb, rec, msgs, errs
}

func TestTable_InitialListThenEvents(t *testing.T) {
	f := newFake()
	f.put("c1", "agent-1", "10.213.0.2", true, map[string]string{DefaultProfileLabel: "team-a"})
	f.put("c0", "stopped", "10.213.0.9", false, nil)
	tb, rec, msgs, _ := startTable(t, f, Config{})

	c, ok := tb.Lookup(netip.MustParseAddr("10.213.0.2"))
	if !ok || c.Name != "agent-1" || c.Profile != "team-a" || !c.Labelled || c.HostVeth != "veth-10.213.0.2" {
		t.Fatalf("Lookup(10.213.0.2) = %+v, %v; want agent-1, profile team-a, veth resolved", c, ok)
	}
	if _, ok := tb.Lookup(netip.MustParseAddr("10.213.0.9")); ok {
		t.Error("a stopped container is in the table")
	}

	f.put("c2", "ci-job", "10.213.0.3", true, nil)
	msgs <- containerEvent(events.ActionStart, "c2")
	if snap := rec.wait(t); len(snap) != 2 || snap[1].Name != "ci-job" || snap[1].Labelled {
		t.Fatalf("after start: %+v, want agent-1 and unlabelled ci-job", snap)
	}

	f.del("c1")
	msgs <- containerEvent(events.ActionDie, "c1")
	if snap := rec.wait(t); len(snap) != 1 || snap[0].ID != "c2" {
		t.Fatalf("after die: %+v, want only c2", snap)
	}
	if _, ok := tb.Lookup(netip.MustParseAddr("10.213.0.2")); ok {
		t.Error("a dead container still answers Lookup")
	}
}

func TestTable_NetworkDisconnectRemovesAndNotifies(t *testing.T) {
	f := newFake()
	f.put("c1", "agent-1", "10.213.0.2", true, nil)
	var netEvents []string
	var mu sync.Mutex
	_, rec, msgs, _ := startTable(t, f, Config{OnNetwork: func(a string) { mu.Lock(); netEvents = append(netEvents, a); mu.Unlock() }})

	f.detach("c1", testNet)
	msgs <- networkEvent(events.ActionDisconnect, "c1")
	if snap := rec.wait(t); len(snap) != 0 {
		t.Fatalf("after disconnect: %+v, want empty", snap)
	}
	// An event for another network is ignored entirely.
	msgs <- events.Message{Type: events.NetworkEventType, Action: events.ActionConnect,
		Actor: events.Actor{Attributes: map[string]string{"name": "bridge", "container": "c1"}}}
	f.put("c3", "late", "10.213.0.4", true, nil)
	msgs <- networkEvent(events.ActionConnect, "c3")
	if snap := rec.wait(t); len(snap) != 1 || snap[0].ID != "c3" {
		t.Fatalf("after connect: %+v, want c3", snap)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(netEvents) != 2 || netEvents[0] != "disconnect" || netEvents[1] != "connect" {
		t.Errorf("OnNetwork saw %v, want [disconnect connect]", netEvents)
	}
}

func TestTable_StreamErrorReconnectsAndResyncs(t *testing.T) {
	f := newFake()
	tb, rec, _, errs := startTable(t, f, Config{})
	// While the stream is down a container starts; the resync must find it.
	f.put("c9", "missed", "10.213.0.9", true, nil)
	errs <- errors.New("unexpected EOF")
	<-f.streams
	<-f.errStreams
	if snap := rec.wait(t); len(snap) != 1 || snap[0].Name != "missed" {
		t.Fatalf("after reconnect: %+v, want the container started while disconnected", snap)
	}
	if f.subs() != 2 {
		t.Errorf("subscriptions = %d, want 2", f.subs())
	}
	if _, ok := tb.Lookup(netip.MustParseAddr("10.213.0.9")); !ok {
		t.Error("Lookup misses the container found by resync")
	}
}

func TestTable_AddressReuseEvictsStaleEntry(t *testing.T) {
	f := newFake()
	f.put("old", "old", "10.213.0.2", true, nil)
	tb, rec, msgs, _ := startTable(t, f, Config{})
	// Docker reassigns the address before we saw "die" of the old container.
	f.del("old")
	f.put("new", "new", "10.213.0.2", true, nil)
	msgs <- containerEvent(events.ActionStart, "new")
	rec.wait(t)
	if c, _ := tb.Lookup(netip.MustParseAddr("10.213.0.2")); c.ID != "new" {
		t.Errorf("Lookup = %q, want the new container", c.ID)
	}
	if n := len(tb.List()); n != 1 {
		t.Errorf("List has %d entries, want 1", n)
	}
}

func TestTable_LookupMissResyncsAtMostOncePerInterval(t *testing.T) {
	f := newFake()
	tb := New(Config{Docker: f, Network: testNet, MissRefresh: time.Hour})
	f.put("c1", "fast", "10.213.0.5", true, nil)
	if c, ok := tb.Lookup(netip.MustParseAddr("10.213.0.5")); !ok || c.Name != "fast" {
		t.Fatalf("Lookup before any event = %+v, %v; want the miss to resync and find it", c, ok)
	}
	if _, ok := tb.Lookup(netip.MustParseAddr("10.213.0.77")); ok {
		t.Fatal("unknown address found")
	}
	if n := f.Calls("ContainerList"); n != 1 {
		t.Errorf("ContainerList calls = %d, want 1 (second miss within the interval must not resync)", n)
	}
}

// attach adds network name to container id behind the event stream.
func (f *fakeDocker) attach(id, name string) {
	_ = f.Update(id, func(c *dockertest.Container) { c.Networks[name] = &network.EndpointSettings{IPAddress: "172.17.0.9"} })
}

func (f *fakeDocker) detach(id, name string) {
	_ = f.Update(id, func(c *dockertest.Container) { delete(c.Networks, name) })
}

// waitLists waits until ContainerList has been called n times in all.
func (f *fakeDocker) waitLists(t *testing.T, n int) {
	t.Helper()
	testutil.WaitFor(t, fmt.Sprintf("%d ContainerList calls", n), func() bool { return f.Calls("ContainerList") >= n })
}

func (f *fakeDocker) setListErr(err error) { f.Fail("ContainerList", err) }

func otherNetEvent(action events.Action, netName, containerID string) events.Message {
	return events.Message{Type: events.NetworkEventType, Action: action,
		Actor: events.Actor{ID: "otherid", Attributes: map[string]string{"name": netName, "container": containerID}}}
}

// TestCredentials_ContainerOnAnotherNetworkIsRefused: a container that also
// has another network (unrestricted egress there) or the host's network is
// not vouched for, from the start or once `docker network connect` adds
// one; it stays listed with OtherNetworks, and regains trust on disconnect.
func TestCredentials_ContainerOnAnotherNetworkIsRefused(t *testing.T) {
	f := newFake()
	f.put("dual", "dual", "10.213.0.2", true, nil)
	f.attach("dual", "bridge")
	f.put("hostmode", "hostmode", "10.213.0.3", true, nil)
	_ = f.Update("hostmode", func(c *dockertest.Container) { c.HostConfig = &container.HostConfig{NetworkMode: "host"} })
	f.put("solo", "solo", "10.213.0.4", true, nil)
	tb, rec, msgs, _ := startTable(t, f, Config{})

	dual, ok := tb.Lookup(netip.MustParseAddr("10.213.0.2"))
	if ok {
		t.Fatal("Lookup vouches for a container also attached to bridge")
	}
	want := "container dual is also attached to network bridge; credentials are only given to containers on the clauderon network alone"
	if got := dual.Refusal(testNet); got != want {
		t.Errorf("Refusal = %q, want %q", got, want)
	}
	if _, ok := tb.Lookup(netip.MustParseAddr("10.213.0.3")); ok {
		t.Error("Lookup vouches for a container with network mode host")
	}
	if _, ok := tb.Lookup(netip.MustParseAddr("10.213.0.4")); !ok {
		t.Fatal("Lookup refuses a container on the clauderon network alone")
	}
	listed := map[string][]string{}
	for _, c := range tb.List() {
		listed[c.Name] = c.OtherNetworks
	}
	if got := fmt.Sprint(listed); got != "map[dual:[bridge] hostmode:[network mode host] solo:[]]" {
		t.Errorf("List OtherNetworks = %s", got)
	}

	// docker network connect bridge solo
	f.attach("solo", "bridge")
	msgs <- otherNetEvent(events.ActionConnect, "bridge", "solo")
	rec.wait(t)
	if _, ok := tb.Lookup(netip.MustParseAddr("10.213.0.4")); ok {
		t.Error("Lookup still vouches for solo after it was connected to bridge")
	}
	// docker network disconnect bridge solo
	f.detach("solo", "bridge")
	msgs <- otherNetEvent(events.ActionDisconnect, "bridge", "solo")
	rec.wait(t)
	if _, ok := tb.Lookup(netip.MustParseAddr("10.213.0.4")); !ok {
		t.Error("Lookup refuses solo after it left bridge")
	}
}

// TestCredentials_FailClosedWhileEventsStreamIsDown: after the stream breaks
// a container's address may be reused by a new one we have not seen, so
// nobody is vouched for until the resync after reconnecting; then the new
// holder of the address is found, not the old one.
func TestCredentials_FailClosedWhileEventsStreamIsDown(t *testing.T) {
	f := newFake()
	f.put("old", "old", "10.213.0.2", true, map[string]string{"clauderon.profile": "low"})
	tb, rec, _, errs := startTable(t, f, Config{})
	addr := netip.MustParseAddr("10.213.0.2")
	if c, ok := tb.Lookup(addr); !ok || c.ID != "old" {
		t.Fatalf("Lookup = %+v, %v; want old", c, ok)
	}
	f.setListErr(errors.New("dockerd restarting"))
	f.del("old")
	f.put("new", "new", "10.213.0.2", true, map[string]string{"clauderon.profile": "prod"})
	errs <- errors.New("unexpected EOF")
	<-f.streams // resubscribed, but the resync fails
	<-f.errStreams
	f.waitLists(t, 2) // the failing resync has happened, not just the subscription
	testutil.WaitFor(t, "the stream reported down", tb.StreamDown)
	if c, ok := tb.Lookup(addr); ok {
		t.Fatalf("Lookup while the stream is down = %q, want refused", c.ID)
	}
	f.setListErr(nil)
	<-f.streams // next attempt succeeds
	<-f.errStreams
	rec.wait(t)
	if c, ok := tb.Lookup(addr); !ok || c.ID != "new" {
		t.Errorf("Lookup after resync = %q, %v; want new", c.ID, ok)
	}
}

// TestCredentials_DieRemovesAtOnce: "die" drops the entry without asking
// Docker, whose view may lag or fail.
func TestCredentials_DieRemovesAtOnce(t *testing.T) {
	f := newFake()
	f.put("c1", "agent", "10.213.0.2", true, nil)
	tb, rec, msgs, _ := startTable(t, f, Config{})
	before := f.Calls("ContainerInspect")
	// Docker still reports it running (inspect would keep it).
	msgs <- containerEvent(events.ActionDie, "c1")
	if snap := rec.wait(t); len(snap) != 0 {
		t.Fatalf("after die: %+v, want empty", snap)
	}
	if _, ok := tb.Lookup(netip.MustParseAddr("10.213.0.2")); ok {
		t.Error("Lookup finds a container after its die event")
	}
	if n := f.Calls("ContainerInspect"); n != before {
		t.Errorf("die caused %d inspects, want 0", n-before)
	}
}

// TestLookupMiss_OnlyBridgeAddressesResync: misses from outside the bridge
// subnet never reach Docker.
func TestLookupMiss_OnlyBridgeAddressesResync(t *testing.T) {
	f := newFake()
	tb := New(Config{Docker: f, Network: testNet, MissRefresh: time.Nanosecond, Subnet: netip.MustParsePrefix("10.213.0.0/24")})
	for _, a := range []string{"127.0.0.1", "192.0.2.7", "10.213.1.5", "::1"} {
		if _, ok := tb.Lookup(netip.MustParseAddr(a)); ok {
			t.Fatalf("Lookup(%s) found something", a)
		}
	}
	if n := f.Calls("ContainerList"); n != 0 {
		t.Errorf("misses outside the subnet caused %d ContainerList calls, want 0", n)
	}
	time.Sleep(time.Millisecond)
	tb.Lookup(netip.MustParseAddr("10.213.0.9"))
	if n := f.Calls("ContainerList"); n != 1 {
		t.Errorf("a miss inside the subnet caused %d ContainerList calls, want 1", n)
	}
}
