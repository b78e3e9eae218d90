package appliance

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/clauderon/clauderond/appliance/api"
	"github.com/clauderon/clauderond/appliance/config"
	"github.com/clauderon/clauderond/netfilter"
	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/events"
	"github.com/docker/docker/api/types/network"
)

// fakeDocker is the Docker API in memory: one network, containers, events.
type fakeDocker struct {
	mu         sync.Mutex
	nets       map[string]network.Inspect
	containers map[string]container.InspectResponse
	events     chan events.Message
	creates    int
}

func newFakeDocker() *fakeDocker {
	return &fakeDocker{nets: map[string]network.Inspect{}, containers: map[string]container.InspectResponse{},
		events: make(chan events.Message, 16)}
}

func (f *fakeDocker) NetworkInspect(_ context.Context, id string, _ network.InspectOptions) (network.Inspect, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, n := range f.nets {
		if n.Name == id || n.ID == id {
			return n, nil
		}
	}
	return network.Inspect{}, fmt.Errorf("network %s: %w", id, cerrdefs.ErrNotFound)
}

func (f *fakeDocker) NetworkCreate(_ context.Context, name string, o network.CreateOptions) (network.CreateResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.creates++
	f.nets[name] = network.Inspect{Name: name, ID: "net-" + name, Driver: o.Driver, IPAM: *o.IPAM, Options: o.Options}
	return network.CreateResponse{ID: "net-" + name}, nil
}

func (f *fakeDocker) NetworkRemove(_ context.Context, id string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	delete(f.nets, id)
	return nil
}

func (f *fakeDocker) ContainerList(context.Context, container.ListOptions) ([]container.Summary, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var out []container.Summary
	for id := range f.containers {
		out = append(out, container.Summary{ID: id})
	}
	return out, nil
}

func (f *fakeDocker) ContainerInspect(_ context.Context, id string) (container.InspectResponse, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	c, ok := f.containers[id]
	if !ok {
		return c, fmt.Errorf("container %s: %w", id, cerrdefs.ErrNotFound)
	}
	return c, nil
}

func (f *fakeDocker) Events(ctx context.Context, _ events.ListOptions) (<-chan events.Message, <-chan error) {
	return f.events, make(chan error)
}

func (f *fakeDocker) addContainer(id, name, ip string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.containers[id] = container.InspectResponse{
		ContainerJSONBase: &container.ContainerJSONBase{ID: id, Name: "/" + name, State: &container.State{Running: true, Pid: 7}},
		Config:            &container.Config{},
		NetworkSettings: &container.NetworkSettings{Networks: map[string]*network.EndpointSettings{
			"clauderon": {IPAddress: ip}}},
	}
}

func freePort(t *testing.T) int {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().(*net.TCPAddr).Port
}

// fakeRun runs the appliance against fakes: no root, no kernel, no dockerd.
type fakeRun struct {
	cfg     *config.Config
	docker  *fakeDocker
	nft     *netfilter.Fake
	cancel  context.CancelFunc
	done    chan error
	reload  chan struct{}
	loadMu  sync.Mutex
	next    *config.Config
	nextErr error
}

func startFake(t *testing.T) *fakeRun {
	t.Helper()
	cfg := testConfig(t)
	cfg.Listen.TLSPort, cfg.Listen.DNSPort = freePort(t), freePort(t)
	cfg.Metrics.Address = fmt.Sprintf("127.0.0.1:%d", freePort(t))
	r := &fakeRun{cfg: cfg, docker: newFakeDocker(), nft: &netfilter.Fake{}, done: make(chan error, 1),
		reload: make(chan struct{})}
	r.docker.addContainer("c1", "agent-1", "10.213.0.2")
	ready := make(chan struct{})
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	load := func() (*config.Config, error) {
		r.loadMu.Lock()
		defer r.loadMu.Unlock()
		return r.next, r.nextErr
	}
	go func() {
		r.done <- Run(ctx, cfg, slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug})), WithDocker(r.docker), WithNetfilter(r.nft), WithTable("clrtunit"),
			withGatewayWait(func(string, string) error { return nil }), withListenAddr("127.0.0.1"),
			withVeth(func(pid int, ip netip.Addr) (string, error) { return "veth" + ip.String()[9:], nil }),
			WithVerifyInterval(50*time.Millisecond), WithReload(load, r.reload), WithOnReady(func() { close(ready) }))
	}()
	select {
	case <-ready:
	case err := <-r.done:
		t.Fatalf("Run returned before ready: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("not ready in 30s")
	}
	t.Cleanup(func() {
		cancel()
		if err := <-r.done; err != nil {
			t.Errorf("Run = %v after cancel, want nil", err)
		}
	})
	return r
}

func (r *fakeRun) status(t *testing.T) api.Status {
	t.Helper()
	st, err := api.NewClient(r.cfg.SocketPath()).Status(context.Background())
	if err != nil {
		t.Fatalf("status: %v", err)
	}
	return st
}

func TestRun_StartupWithFakes(t *testing.T) {
	r := startFake(t)
	spec, ok := r.nft.Applied()
	if !ok {
		t.Fatal("no ruleset applied")
	}
	if spec.Table != "clrtunit" || spec.Bridge != "clauderon0" || spec.Gateway != netip.MustParseAddr("10.213.0.1") ||
		int(spec.TLSPort) != r.cfg.Listen.TLSPort {
		t.Errorf("applied spec = %+v", spec)
	}
	// The container running at start-up is in the very first Apply.
	if len(spec.Ports) != 1 || spec.Ports[0].IfName != "veth2" || spec.Ports[0].Addr != netip.MustParseAddr("10.213.0.2") {
		t.Errorf("applied ports = %v, want the running container's veth", spec.Ports)
	}
	if calls := r.nft.Calls(); len(calls) == 0 || calls[0] != "apply" {
		t.Errorf("netfilter calls = %v, want apply first", calls)
	}
	opts := r.docker.nets["clauderon"].Options
	if opts["com.docker.network.bridge.enable_icc"] != "false" || opts["com.docker.network.bridge.enable_ip_masquerade"] != "false" {
		t.Errorf("network options = %v", opts)
	}
	st := r.status(t)
	if !st.Ready || st.Enforcement != api.EnforcementIntact || len(st.Containers) != 1 || st.Containers[0].Name != "agent-1" {
		t.Errorf("status = ready %t, enforcement %s, containers %v", st.Ready, st.Enforcement, st.Containers)
	}
}

func TestRun_DriftIsReapplied(t *testing.T) {
	r := startFake(t)
	if !r.nft.RemoveKey(findKey(t, r.nft, "redirect-443")) {
		t.Fatal("could not remove the redirect key")
	}
	waitFor(t, "re-apply after drift", func() bool {
		return countCalls(r.nft, "apply") >= 2
	})
	waitFor(t, "enforcement intact again", func() bool { return r.status(t).Enforcement == api.EnforcementIntact })
}

func TestRun_NewContainerUpdatesPorts(t *testing.T) {
	r := startFake(t)
	r.docker.addContainer("c2", "agent-2", "10.213.0.3")
	r.docker.events <- events.Message{Type: events.ContainerEventType, Action: events.ActionStart, Actor: events.Actor{ID: "c2"}}
	waitFor(t, "second port", func() bool {
		spec, _ := r.nft.Applied()
		return len(spec.Ports) == 2
	})
}

func TestRun_ReloadBadConfigKeepsOld_GoodConfigSwaps(t *testing.T) {
	r := startFake(t)
	// A bad file: the loader fails; nothing changes.
	r.loadMu.Lock()
	r.nextErr = errors.New(`egress.mode: "sometimes" is not enforce or audit`)
	r.loadMu.Unlock()
	err := api.NewClient(r.cfg.SocketPath()).Reload(context.Background())
	if err == nil || !strings.Contains(err.Error(), "egress.mode") {
		t.Fatalf("reload with a bad file = %v, want the loader's error", err)
	}
	if st := r.status(t); st.Mode != "enforce" {
		t.Errorf("mode after a bad reload = %s, want enforce", st.Mode)
	}
	// A good file with audit mode: the ruleset is re-applied in audit mode.
	good := *r.cfg
	good.Egress.Mode = "audit"
	r.loadMu.Lock()
	r.next, r.nextErr = &good, nil
	r.loadMu.Unlock()
	r.reload <- struct{}{}
	waitFor(t, "audit mode applied", func() bool {
		spec, _ := r.nft.Applied()
		return spec.AuditMode && r.status(t).Mode == "audit"
	})
}

func findKey(t *testing.T, f *netfilter.Fake, comment string) string {
	t.Helper()
	spec, _ := f.Applied()
	rs, err := netfilter.Build(spec)
	if err != nil {
		t.Fatal(err)
	}
	for _, k := range rs.Keys() {
		if strings.Contains(k, comment) {
			return k
		}
	}
	t.Fatalf("no rule with %q", comment)
	return ""
}

func countCalls(f *netfilter.Fake, op string) int {
	n := 0
	for _, c := range f.Calls() {
		if c == op {
			n++
		}
	}
	return n
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestRun_MismatchedNetworkFailsBeforeTouchingRules(t *testing.T) {
	cfg := testConfig(t)
	d := newFakeDocker()
	d.nets["clauderon"] = network.Inspect{Name: "clauderon", ID: "other", Driver: "bridge",
		IPAM:    network.IPAM{Config: []network.IPAMConfig{{Subnet: "172.30.0.0/16"}}},
		Options: map[string]string{"com.docker.network.bridge.name": "br-other"}}
	nft := &netfilter.Fake{}
	err := Run(context.Background(), cfg, discard(), WithDocker(d), WithNetfilter(nft),
		withGatewayWait(func(string, string) error { return nil }), withListenAddr("127.0.0.1"))
	if err == nil {
		t.Fatal("Run adopted a network with other settings")
	}
	for _, want := range []string{`start-up step "bridge network"`, "subnet is [172.30.0.0/16]", "clauderond teardown"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
	if calls := nft.Calls(); len(calls) != 0 {
		t.Errorf("netfilter was called (%v) although start-up failed before the rules step", calls)
	}
	if _, err := os.Stat(cfg.SocketPath()); err == nil {
		t.Error("the API socket exists after a failed start")
	}
}

func TestRun_LooseSecretsDirFailsFirst(t *testing.T) {
	cfg := testConfig(t)
	if err := os.MkdirAll(filepath.Join(cfg.StateDir, "secrets"), 0o755); err != nil {
		t.Fatal(err)
	}
	os.Chmod(filepath.Join(cfg.StateDir, "secrets"), 0o755)
	d := newFakeDocker()
	err := Run(context.Background(), cfg, discard(), WithDocker(d), WithNetfilter(&netfilter.Fake{}))
	if err == nil || !strings.Contains(err.Error(), `start-up step "state dir"`) || !strings.Contains(err.Error(), "chmod 700") {
		t.Errorf("Run = %v, want the state dir step to refuse with the chmod", err)
	}
	if d.creates != 0 {
		t.Error("the network was created although the state dir was refused")
	}
}

func TestTeardown_RefusesWhileRunning_ThenRemoves(t *testing.T) {
	r := startFake(t)
	err := Teardown(context.Background(), r.cfg, discard(), WithDocker(r.docker), WithNetfilter(r.nft))
	if err == nil || !strings.Contains(err.Error(), "stop it first") {
		t.Fatalf("Teardown while running = %v, want a refusal", err)
	}
	if _, ok := r.nft.Applied(); !ok {
		t.Fatal("rules removed although teardown refused")
	}
	r.cancel()
	if err := <-r.done; err != nil {
		t.Fatalf("Run = %v", err)
	}
	r.done <- nil // for the cleanup
	if err := Teardown(context.Background(), r.cfg, discard(), WithDocker(r.docker), WithNetfilter(r.nft)); err != nil {
		t.Fatalf("Teardown after stop: %v", err)
	}
	if _, ok := r.nft.Applied(); ok {
		t.Error("rules still applied after Teardown")
	}
	if len(r.docker.nets) != 0 {
		t.Errorf("networks after Teardown: %v", r.docker.nets)
	}
	// A second teardown finds nothing and is fine.
	if err := Teardown(context.Background(), r.cfg, discard(), WithDocker(r.docker), WithNetfilter(r.nft)); err != nil {
		t.Errorf("second Teardown: %v", err)
	}
}

func TestRun_NoGoroutineLeaks(t *testing.T) {
	before := runtime.NumGoroutine()
	r := startFake(t)
	r.status(t)
	r.cancel()
	if err := <-r.done; err != nil {
		t.Fatalf("Run = %v", err)
	}
	r.done <- nil // for the cleanup
	http.DefaultClient.CloseIdleConnections()
	deadline := time.Now().Add(10 * time.Second)
	for runtime.NumGoroutine() > before+2 { // the test's own helpers may linger briefly
		if time.Now().After(deadline) {
			buf := make([]byte, 1<<20)
			t.Fatalf("goroutines: %d before Run, %d after it returned:\n%s", before, runtime.NumGoroutine(), buf[:runtime.Stack(buf, true)])
		}
		time.Sleep(50 * time.Millisecond)
	}
}
