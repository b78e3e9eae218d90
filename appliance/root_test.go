package appliance

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/hex"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/big"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/clauderon/clauderond/appliance/api"
	"github.com/clauderon/clauderond/appliance/bridge/bridgetest"
	"github.com/clauderon/clauderond/appliance/config"
	"github.com/clauderon/clauderond/netfilter"
	"github.com/clauderon/clauderond/netfilter/nftest"
	"github.com/docker/docker/api/types/build"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/api/types/mount"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/client"
	"github.com/docker/docker/pkg/stdcopy"
)

// The token the fake upstream expects; never a real credential.
const testToken = "sk-ant-oat01-integration-test-token-0123456789abcdef"

// rig is one integration environment: unique names, a fake api.anthropic.com
// on loopback, a client image, and cleanup of everything by name.
type rig struct {
	t        *testing.T
	docker   *client.Client
	suffix   string
	table    string
	cfg      *config.Config
	image    string
	upstream *httptest.Server
	hits     atomic.Int64
	injected atomic.Int64
}

func newRig(t *testing.T) *rig {
	t.Helper()
	nftest.RequireRoot(t)
	d, err := client.NewClientWithOpts(client.FromEnv, client.WithAPIVersionNegotiation())
	if err != nil {
		t.Fatal(err)
	}
	b := make([]byte, 3)
	rand.Read(b)
	r := &rig{t: t, docker: d, suffix: hex.EncodeToString(b)}
	r.table = "clrt" + r.suffix
	t.Cleanup(r.cleanup)

	state := t.TempDir()
	caFile := r.startUpstream(state)
	if err := os.MkdirAll(filepath.Join(state, "secrets"), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(state, "secrets", "anthropic"), []byte(testToken+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	cfg := config.Default()
	cfg.StateDir = state
	cfg.Log.Level = "debug"
	cfg.Network = config.NetworkConfig{Name: "clrt-" + r.suffix, Bridge: "clrt" + r.suffix,
		Subnet: config.Subnet{Prefix: bridgetest.FreeSubnet(t, d, 150, 250)}}
	cfg.Metrics.Address = freeAddr(t)
	cfg.Upstreams = []config.Upstream{{Host: "api.anthropic.com", Address: r.upstream.Listener.Addr().String(), CAFile: caFile}}
	cfg.DrainTimeout = 2 * time.Second
	if err := cfg.Validate(); err != nil {
		t.Fatalf("test config: %v", err)
	}
	r.cfg = cfg
	r.image = r.buildImage()
	return r
}

func freeAddr(t *testing.T) string {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	return ln.Addr().String()
}

// startUpstream serves a fake api.anthropic.com on 127.0.0.1 with its own CA
// (written to a file for upstreams[].ca_file). It answers "injected=true"
// only when the real test token arrives, and never echoes the header.
func (r *rig) startUpstream(dir string) string {
	t := r.t
	key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "upstream test CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true,
		BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	leafKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	leafDER, err := x509.CreateCertificate(rand.Reader, &x509.Certificate{SerialNumber: big.NewInt(2),
		DNSNames: []string{"api.anthropic.com"}, NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour),
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}, ca, &leafKey.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, req *http.Request) {
		r.hits.Add(1)
		ok := req.Header.Get("Authorization") == "Bearer "+testToken
		if ok {
			r.injected.Add(1)
		}
		fmt.Fprintf(w, "injected=%t", ok)
	}))
	srv.TLS = &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{leafDER}, PrivateKey: leafKey}}}
	srv.StartTLS()
	t.Cleanup(srv.Close)
	r.upstream = srv
	caFile := filepath.Join(dir, "upstream-ca.pem")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), 0o644); err != nil {
		t.Fatal(err)
	}
	return caFile
}

// buildImage builds a FROM scratch image holding the static test client.
func (r *rig) buildImage() string {
	t := r.t
	bin := filepath.Join(t.TempDir(), "client")
	cmd := exec.Command("go", "build", "-o", bin, "./testdata/client")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building the test client: %v\n%s", err, out)
	}
	exe, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, f := range []struct {
		name string
		mode int64
		data []byte
	}{{"Dockerfile", 0o644, []byte("FROM scratch\nCOPY client /client\nENTRYPOINT [\"/client\"]\n")}, {"client", 0o755, exe}} {
		tw.WriteHeader(&tar.Header{Name: f.name, Mode: f.mode, Size: int64(len(f.data))})
		tw.Write(f.data)
	}
	tw.Close()
	tag := "clauderon-appliance-test:" + r.suffix
	resp, err := r.docker.ImageBuild(context.Background(), &buf, build.ImageBuildOptions{Tags: []string{tag}, Remove: true,
		Labels: map[string]string{"clauderon.test": r.suffix}})
	if err != nil {
		t.Fatalf("building the test image: %v", err)
	}
	out, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if bytes.Contains(out, []byte(`"error"`)) {
		t.Fatalf("building the test image: %s", out)
	}
	return tag
}

// hostProcessGetsNoCredential dials the terminator on the gateway from the
// host (not from a container): the ruleset serves the listeners to the
// bridge only (and the listeners are bound to the bridge device), so the
// connection is refused outright and nothing is injected.
func (r *rig) hostProcessGetsNoCredential(gw string) {
	t := r.t
	addr := net.JoinHostPort(gw, fmt.Sprint(r.cfg.Listen.TLSPort))
	before := r.injected.Load()
	c, err := net.DialTimeout("tcp", addr, 5*time.Second)
	if err == nil {
		c.Close()
		t.Fatalf("a host process connected to the listener %s, want it refused", addr)
	}
	if !errors.Is(err, syscall.ECONNREFUSED) {
		t.Errorf("host dial %s = %v, want connection refused", addr, err)
	}
	if r.injected.Load() != before {
		t.Errorf("injections %d→%d after a host process dialled the listener, want none", before, r.injected.Load())
	}
}

// daemonBinary builds a static clauderond (the doctor's probe runs it).
func (r *rig) daemonBinary() string {
	bin := filepath.Join(r.t.TempDir(), "clauderond")
	cmd := exec.Command("go", "build", "-o", bin, "../cmd/clauderond")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if out, err := cmd.CombinedOutput(); err != nil {
		r.t.Fatalf("building clauderond: %v\n%s", err, out)
	}
	return bin
}

// runClient runs the client in a container on the network and returns its output.
func (r *rig) runClient(args ...string) string {
	t := r.t
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	created, err := r.docker.ContainerCreate(ctx, &container.Config{Image: r.image, Cmd: args,
		Labels: map[string]string{"clauderon.test": r.suffix}},
		&container.HostConfig{NetworkMode: container.NetworkMode(r.cfg.Network.Name),
			Mounts: []mount.Mount{{Type: mount.TypeBind, Source: filepath.Join(r.cfg.StateDir, "proxy-ca.pem"), Target: "/ca.pem", ReadOnly: true}}},
		nil, nil, "")
	if err != nil {
		t.Fatalf("creating container: %v", err)
	}
	if err := r.docker.ContainerStart(ctx, created.ID, container.StartOptions{}); err != nil {
		t.Fatalf("starting container: %v", err)
	}
	waitC, errC := r.docker.ContainerWait(ctx, created.ID, container.WaitConditionNotRunning)
	select {
	case <-waitC:
	case err := <-errC:
		t.Fatalf("waiting for container: %v", err)
	}
	logs, err := r.docker.ContainerLogs(ctx, created.ID, container.LogsOptions{ShowStdout: true, ShowStderr: true})
	if err != nil {
		t.Fatal(err)
	}
	defer logs.Close()
	var out bytes.Buffer
	stdcopy.StdCopy(&out, &out, logs)
	r.docker.ContainerRemove(ctx, created.ID, container.RemoveOptions{Force: true})
	return out.String()
}

// cleanup removes everything by name, whatever state the test left.
func (r *rig) cleanup() {
	ctx := context.Background()
	cs, _ := r.docker.ContainerList(ctx, container.ListOptions{All: true,
		Filters: filters.NewArgs(filters.Arg("label", "clauderon.test="+r.suffix))})
	for _, c := range cs {
		r.docker.ContainerRemove(ctx, c.ID, container.RemoveOptions{Force: true})
	}
	if r.cfg != nil {
		r.docker.NetworkRemove(ctx, r.cfg.Network.Name)
	}
	if r.image != "" {
		r.docker.ImageRemove(ctx, r.image, image.RemoveOptions{Force: true, PruneChildren: true})
	}
	for _, fam := range []string{"inet", "bridge", "arp"} {
		exec.Command("nft", "delete", "table", fam, r.table).Run()
	}
	r.docker.Close()
}

// start runs the appliance until the returned stop is called.
func (r *rig) start(opts ...Option) (stop func() error) {
	t := r.t
	ctx, cancel := context.WithCancel(context.Background())
	ready := make(chan struct{})
	done := make(chan error, 1)
	logger := slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	opts = append([]Option{WithTable(r.table), WithOnReady(func() { close(ready) }), WithVerifyInterval(time.Second)}, opts...)
	go func() { done <- Run(ctx, r.cfg, logger, opts...) }()
	select {
	case <-ready:
	case err := <-done:
		cancel()
		t.Fatalf("Run returned before ready: %v", err)
	case <-time.After(90 * time.Second):
		cancel()
		select { // do not leave it running past the test
		case <-done:
		case <-time.After(30 * time.Second):
		}
		t.Fatal("not ready within 90s")
	}
	stop = sync.OnceValue(func() error {
		cancel()
		select {
		case err := <-done:
			return err
		case <-time.After(30 * time.Second):
			return errors.New("Run did not return within 30s of cancel")
		}
	})
	// A test that fails before calling stop must not leave the daemon
	// running: it would log after the test ended (a panic that kills the
	// package's other tests) and recreate the network r.cleanup removes.
	t.Cleanup(func() {
		if err := stop(); err != nil && !t.Failed() {
			t.Errorf("Run after cancel = %v, want nil", err)
		}
	})
	return stop
}

var counterRE = regexp.MustCompile(`counter packets \d+ bytes \d+`)

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

// nftRules lists our inet table's rules without counters or handles.
func (r *rig) nftRules() string {
	out, err := exec.Command("nft", "list", "table", "inet", r.table).CombinedOutput()
	if err != nil {
		r.t.Fatalf("nft list table inet %s: %v\n%s", r.table, err, out)
	}
	return counterRE.ReplaceAllString(string(out), "counter")
}

// settledRules waits (bounded) until no container address is registered
// in our table, then returns the ruleset.
func (r *rig) settledRules() string {
	r.t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		rules := r.nftRules()
		if !strings.Contains(rules, "elements = {") {
			return rules
		}
		if time.Now().After(deadline) {
			r.t.Fatalf("container addresses still registered 15s after the clients exited:\n%s", rules)
		}
		time.Sleep(100 * time.Millisecond)
	}
}

func TestReal_ContainerGetsCredentialInjected_RestartAdopts_Teardown(t *testing.T) {
	r := newRig(t)
	stop := r.start(withDoctorExe(r.daemonBinary()))

	st, err := api.NewClient(r.cfg.SocketPath()).Status(context.Background())
	if err != nil {
		t.Fatalf("status over the socket: %v", err)
	}
	if !st.Ready || st.Enforcement != api.EnforcementIntact {
		t.Errorf("status ready=%t enforcement=%s drift=%v, want ready and intact", st.Ready, st.Enforcement, st.Drift)
	}

	ra, err := api.NewClient(r.cfg.SocketPath()).RunArgs(context.Background(), api.RunRequest{})
	if err != nil {
		t.Fatalf("run args over the socket: %v", err)
	}
	if args := strings.Join(ra.Args, " "); !strings.Contains(args, "--network "+r.cfg.Network.Name) &&
		!strings.Contains(args, "--network="+r.cfg.Network.Name) || strings.Contains(args, "secrets") {
		t.Errorf("run args %q: want --network %s and nothing from secrets/", args, r.cfg.Network.Name)
	}

	out := r.runClient()
	if !strings.Contains(out, "status=200 body=injected=true") {
		t.Fatalf("client output %q, want the request to reach the upstream with the injected token", out)
	}
	if strings.Contains(out, testToken) {
		t.Fatal("the container saw the real token")
	}
	checkAudit(t, r.cfg.StateDir)
	checkMetrics(t, r.cfg.Metrics.Address)
	r.hostProcessGetsNoCredential(st.Network.Gateway)
	rep, err := api.NewClient(r.cfg.SocketPath()).Doctor(context.Background())
	if err != nil {
		t.Fatalf("doctor over the socket: %v", err)
	}
	if !rep.OK() {
		t.Errorf("doctor report not OK: %+v", rep.Steps)
	}

	// Someone removes the (empty) network while the daemon runs: it is
	// recreated and containers work again.
	if err := r.docker.NetworkRemove(context.Background(), r.cfg.Network.Name); err != nil {
		t.Fatalf("docker network rm: %v", err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		if _, err := r.docker.NetworkInspect(context.Background(), r.cfg.Network.Name, networkInspectOpts); err == nil {
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("the removed network was not recreated within 20s")
		}
		time.Sleep(200 * time.Millisecond)
	}
	if out := r.runClient(); !strings.Contains(out, "status=200 body=injected=true") {
		t.Fatalf("after the network was recreated the client got %q, want injection", out)
	}

	// The clients above were --rm containers: once their exit is
	// processed no address is registered, and that is the ruleset a
	// restart must re-create (comparing earlier would race the exit).
	rulesBefore := r.settledRules()
	netBefore, err := r.docker.NetworkInspect(context.Background(), r.cfg.Network.Name, networkInspectOpts)
	if err != nil {
		t.Fatal(err)
	}
	if err := stop(); err != nil {
		t.Fatalf("Run after cancel = %v, want nil", err)
	}
	// Fail closed: rules and network outlive the daemon.
	if r.nftRules() != rulesBefore {
		t.Error("the ruleset changed when the daemon stopped")
	}
	if out := r.runClient(); strings.Contains(out, "status=200") {
		t.Errorf("with the daemon stopped the client got %q, want a failure", out)
	}

	reloads := make(chan struct{})
	var next atomic.Pointer[config.Config]
	next.Store(r.cfg)
	stop = r.start(WithReload(func() (*config.Config, error) { return next.Load(), nil }, reloads))
	netAfter, err := r.docker.NetworkInspect(context.Background(), r.cfg.Network.Name, networkInspectOpts)
	if err != nil || netAfter.ID != netBefore.ID {
		t.Errorf("after restart network id %s (%v), want the adopted %s", netAfter.ID, err, netBefore.ID)
	}
	if got := r.nftRules(); got != rulesBefore {
		t.Errorf("after restart the ruleset differs (duplicated?):\n--- before\n%s\n--- after\n%s", rulesBefore, got)
	}
	if out := r.runClient(); !strings.Contains(out, "status=200 body=injected=true") {
		t.Errorf("after restart client output %q, want injection", out)
	}

	// Drift: someone flushes our redirect chain; the daemon notices and
	// rewrites the table.
	if out, err := exec.Command("nft", "flush", "chain", "inet", r.table, "nat_pre").CombinedOutput(); err != nil {
		t.Fatalf("nft flush chain: %v\n%s", err, out)
	}
	deadline = time.Now().Add(15 * time.Second)
	for r.nftRules() != rulesBefore {
		if time.Now().After(deadline) {
			t.Fatalf("the flushed chain was not restored within 15s:\n%s", r.nftRules())
		}
		time.Sleep(200 * time.Millisecond)
	}

	// Reload (SIGHUP path) with profiles.require_label: the unlabelled
	// client container is now refused with a 403 that says why.
	strict := *r.cfg
	strict.Profiles.RequireLabel = true
	next.Store(&strict)
	reloads <- struct{}{}
	deadline = time.Now().Add(15 * time.Second)
	for {
		out := r.runClient()
		if strings.Contains(out, "status=403") && strings.Contains(out, "clauderon.profile") {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after reload with require_label the client got %q, want a 403 naming the label", out)
		}
		time.Sleep(200 * time.Millisecond)
	}
	if err := stop(); err != nil {
		t.Fatalf("second Run = %v", err)
	}

	// Teardown through a Kernel that knows our test table (a fresh Kernel
	// only knows the default table, which a test must never touch).
	k, err := netfilter.NewKernel(netfilter.KernelConfig{})
	if err != nil {
		t.Fatal(err)
	}
	spec, err := netfilterSpec(r.cfg, r.table, r.cfg.Network.Bridge, r.cfg.Subnet(), netip.MustParseAddr(netAfter.IPAM.Config[0].Gateway))
	if err != nil {
		t.Fatal(err)
	}
	if err := k.Apply(context.Background(), spec); err != nil {
		t.Fatal(err)
	}
	if err := Teardown(context.Background(), r.cfg, nil, WithTable(r.table), WithNetfilter(k)); err != nil {
		t.Fatalf("Teardown: %v", err)
	}
	if _, err := r.docker.NetworkInspect(context.Background(), r.cfg.Network.Name, networkInspectOpts); err == nil {
		t.Error("network still exists after Teardown")
	}
	if err := exec.Command("nft", "list", "table", "inet", r.table).Run(); err == nil {
		t.Error("table still exists after Teardown")
	}
}

// checkAudit waits (bounded) for the intercept line of the request the
// client just made: the terminator records an exchange when it ends, which
// can be just after the client has read the last byte of the answer.
func checkAudit(t *testing.T, state string) {
	t.Helper()
	var data []byte
	found := func() bool {
		var err error
		if data, err = os.ReadFile(filepath.Join(state, "audit.jsonl")); err != nil {
			t.Fatal(err)
		}
		if bytes.Contains(data, []byte(testToken)) {
			t.Fatal("audit.jsonl holds the token")
		}
		for _, line := range bytes.Split(bytes.TrimSpace(data), []byte("\n")) {
			var rec struct {
				Decision     string `json:"decision"`
				Host         string `json:"host"`
				AuthInjected bool   `json:"auth_injected"`
				Status       int    `json:"status"`
				Container    string `json:"container"`
			}
			if json.Unmarshal(line, &rec) == nil && rec.Decision == "intercept" && rec.AuthInjected && rec.Status == 200 {
				if rec.Container == "" {
					t.Errorf("audit line %s has no container name", line)
				}
				return true
			}
		}
		return false
	}
	deadline := time.Now().Add(15 * time.Second)
	for !found() {
		if time.Now().After(deadline) {
			t.Fatalf("no intercept line with auth_injected in audit.jsonl within 15s:\n%s", data)
		}
		time.Sleep(50 * time.Millisecond)
	}
}

func checkMetrics(t *testing.T, addr string) {
	t.Helper()
	resp, err := http.Get("http://" + addr + "/metrics")
	if err != nil {
		t.Fatalf("metrics: %v", err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	for _, want := range []string{"clauderon_ready 1", "clauderon_enforcement_intact 1", "clauderon_injections_total", "clauderon_nft_packets_total"} {
		if !bytes.Contains(body, []byte(want)) {
			t.Errorf("metrics lack %q", want)
		}
	}
}

var networkInspectOpts = network.InspectOptions{}
