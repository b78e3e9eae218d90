package appliance

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/clauderon/clauderond/appliance/api"
	"github.com/clauderon/clauderond/appliance/config"
	"github.com/clauderon/clauderond/appliance/internal/dockertest"
	"github.com/clauderon/clauderond/appliance/internal/testutil"
	"github.com/clauderon/clauderond/netfilter"
	cerrdefs "github.com/containerd/errdefs"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/network"

	"go.uber.org/goleak"
)

// agentImage is the image the fake dockerd has locally.
const agentImage = "clauderon-agent:latest"

// newFakeDocker is dockerd in memory (appliance/internal/dockertest).
func newFakeDocker() *dockertest.Docker {
	d := dockertest.New()
	d.AddImage(agentImage)
	return d
}

// addContainer puts a running container on the clauderon network, as if
// it had been started before the daemon (no events).
func addContainer(d *dockertest.Docker, id, name, ip string) {
	d.Put(dockertest.Container{ID: id, Name: name,
		Networks: map[string]*network.EndpointSettings{"clauderon": {IPAddress: ip}}})
}

// runContainer is `docker run --network clauderon --ip ip`: every Events
// subscriber sees create, network connect and start.
func runContainer(t *testing.T, d *dockertest.Docker, name, ip string) {
	t.Helper()
	ctx := context.Background()
	created, err := d.ContainerCreate(ctx, &container.Config{Image: agentImage}, &container.HostConfig{NetworkMode: "clauderon"},
		&network.NetworkingConfig{EndpointsConfig: map[string]*network.EndpointSettings{
			"clauderon": {IPAMConfig: &network.EndpointIPAMConfig{IPv4Address: ip}}}}, nil, name)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.ContainerStart(ctx, created.ID, container.StartOptions{}); err != nil {
		t.Fatal(err)
	}
}

// networkGone reports whether the fake dockerd has no network name.
func networkGone(d *dockertest.Docker, name string) bool {
	_, err := d.NetworkInspect(context.Background(), name, network.InspectOptions{})
	return cerrdefs.IsNotFound(err)
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
	docker  *dockertest.Docker
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
	return startFakeLogging(t, testWriter{t})
}

// startFakeLogging is startFake with the daemon's log (debug level) going to w.
func startFakeLogging(t *testing.T, w io.Writer) *fakeRun {
	t.Helper()
	cfg := testConfig(t)
	cfg.Listen.TLSPort, cfg.Listen.DNSPort = freePort(t), freePort(t)
	cfg.Metrics.Address = fmt.Sprintf("127.0.0.1:%d", freePort(t))
	r := &fakeRun{cfg: cfg, docker: newFakeDocker(), nft: &netfilter.Fake{}, done: make(chan error, 1),
		reload: make(chan struct{})}
	addContainer(r.docker, "c1", "agent-1", "10.213.0.2")
	ready := make(chan struct{})
	ctx, cancel := context.WithCancel(context.Background())
	r.cancel = cancel
	load := func() (*config.Config, error) {
		r.loadMu.Lock()
		defer r.loadMu.Unlock()
		return r.next, r.nextErr
	}
	go func() {
		r.done <- Run(ctx, cfg, slog.New(slog.NewTextHandler(w, &slog.HandlerOptions{Level: slog.LevelDebug})), WithDocker(r.docker), WithNetfilter(r.nft), WithTable("clrtunit"),
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
	net, err := r.docker.NetworkInspect(context.Background(), "clauderon", network.InspectOptions{})
	if err != nil {
		t.Fatal(err)
	}
	opts := net.Options
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
	testutil.WaitFor(t, "re-apply after drift", func() bool {
		return countCalls(r.nft, "apply") >= 2
	})
	testutil.WaitFor(t, "enforcement intact again", func() bool { return r.status(t).Enforcement == api.EnforcementIntact })
}

func TestRun_NewContainerUpdatesPorts(t *testing.T) {
	r := startFake(t)
	runContainer(t, r.docker, "agent-2", "10.213.0.3")
	testutil.WaitFor(t, "second port", func() bool {
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
	testutil.WaitFor(t, "audit mode applied", func() bool {
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

func TestRun_MismatchedNetworkFailsBeforeTouchingRules(t *testing.T) {
	cfg := testConfig(t)
	d := newFakeDocker()
	if _, err := d.NetworkCreate(context.Background(), "clauderon", network.CreateOptions{Driver: "bridge",
		IPAM:    &network.IPAM{Config: []network.IPAMConfig{{Subnet: "172.30.0.0/16"}}},
		Options: map[string]string{"com.docker.network.bridge.name": "br-other"}}); err != nil {
		t.Fatal(err)
	}
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
	if d.Calls("NetworkCreate") != 0 {
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
	// dockerd refuses to remove a network with running endpoints: the
	// operator removes the agent first.
	if err := r.docker.ContainerRemove(context.Background(), "c1", container.RemoveOptions{Force: true}); err != nil {
		t.Fatal(err)
	}
	if err := Teardown(context.Background(), r.cfg, discard(), WithDocker(r.docker), WithNetfilter(r.nft)); err != nil {
		t.Fatalf("Teardown after stop: %v", err)
	}
	if _, ok := r.nft.Applied(); ok {
		t.Error("rules still applied after Teardown")
	}
	if !networkGone(r.docker, "clauderon") {
		t.Error("the clauderon network still exists after Teardown")
	}
	// A second teardown finds nothing and is fine.
	if err := Teardown(context.Background(), r.cfg, discard(), WithDocker(r.docker), WithNetfilter(r.nft)); err != nil {
		t.Errorf("second Teardown: %v", err)
	}
}

func TestRun_NoGoroutineLeaks(t *testing.T) {
	before := goleak.IgnoreCurrent()
	r := startFake(t)
	r.status(t)
	r.cancel()
	if err := <-r.done; err != nil {
		t.Fatalf("Run = %v", err)
	}
	r.done <- nil // for the cleanup
	http.DefaultClient.CloseIdleConnections()
	testutil.NoLeaks(t, before)
}
