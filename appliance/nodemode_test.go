package appliance

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/clauderon/clauderond/appliance/api"
	"github.com/clauderon/clauderond/appliance/config"
	"github.com/clauderon/clauderond/appliance/identity"
	"github.com/clauderon/clauderond/appliance/internal/testutil"
	"github.com/clauderon/clauderond/appliance/kubepods"
	"github.com/clauderon/clauderond/dnsredir"
	"github.com/clauderon/clauderond/injector"
	"github.com/clauderon/clauderond/netfilter"
	"github.com/clauderon/clauderond/tlsmitm"
	"github.com/clauderon/clauderond/tlsmitm/localca"
)

func nodeConfig(t *testing.T) *config.Config {
	t.Helper()
	cfg := testConfig(t)
	cfg.Mode = config.ModeKubernetes
	cfg.Network.Bridge, cfg.Network.Subnet = "cni0", config.Subnet{Prefix: netip.MustParsePrefix("10.244.1.0/24")}
	cfg.Kubernetes.Node = "node-1"
	cfg.Kubernetes.PodCIDRs = []string{"10.244.0.0/16"}
	cfg.Kubernetes.ServiceCIDRs = []string{"10.96.0.0/12"}
	cfg.Kubernetes.APIServerEndpoints = []string{"192.0.2.5:6443"}
	cfg.Kubernetes.ClusterDNS = "10.96.0.10"
	cfg.Profiles.Access = []config.ProfileAccess{
		{Profile: "team-a", Namespaces: []string{"team-a"}},
		{Profile: "ci", ServiceAccounts: []string{"build/runner"}},
		{Profile: "hosts", Users: []string{"alice"}},
		{Profile: "default", Namespaces: []string{"ci"}},
	}
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	return cfg
}

func pod(ns, name, sa, profile string) identity.Container {
	return identity.Container{ID: "uid-" + name, Name: ns + "/" + name, Namespace: ns, ServiceAccount: sa,
		Profile: profile, Labelled: profile != "", IP: netip.MustParseAddr("10.244.1.7")}
}

func TestPodProfile_BoundToNamespaceOrServiceAccount(t *testing.T) {
	access := nodeConfig(t).Profiles.Access
	for _, tc := range []struct {
		name        string
		pod         identity.Container
		wantProfile string
		wantReason  string
	}{
		{"unlabelled, in a namespace the default is bound to", pod("ci", "p", "default", ""), "", ""},
		{"unlabelled elsewhere gets nothing", pod("team-b", "p", "default", ""), "", "asks for profile default, but that profile is bound to namespaces [ci]"},
		{"its namespace", pod("team-a", "p", "default", "team-a"), "team-a", ""},
		{"another namespace's profile", pod("team-b", "p", "default", "team-a"), "", "bound to namespaces [team-a]"},
		{"its service account", pod("build", "p", "runner", "ci"), "ci", ""},
		{"another account in that namespace", pod("build", "p", "default", "ci"), "", "service account default"},
		{"a profile bound to host users only", pod("team-a", "p", "default", "hosts"), "", "bound to no namespace or service account"},
		{"an unknown profile", pod("team-a", "p", "default", "nope"), "", "a label alone selects no profile"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p, reason := podProfile(access, tc.pod)
			if p != tc.wantProfile || (tc.wantReason == "") != (reason == "") || !strings.Contains(reason, tc.wantReason) {
				t.Errorf("podProfile = %q, %q; want %q and a reason containing %q", p, reason, tc.wantProfile, tc.wantReason)
			}
		})
	}
}

// TestInjectorAdapter_PodGetsOnlyItsBoundProfile goes through the adapter
// the terminator calls: the pod's binding decides, whatever its label says.
func TestInjectorAdapter_PodGetsOnlyItsBoundProfile(t *testing.T) {
	cfg := nodeConfig(t)
	st := newStore(t, "CLAUDE_CODE_OAUTH_TOKEN="+unitToken, "CLAUDERON_PROFILE_TEAM_A_CLAUDE_CODE_OAUTH_TOKEN="+unitToken+"-team-a")
	p, err := buildParts(cfg, st, netip.MustParseAddr("10.244.1.1"), discard())
	if err != nil {
		t.Fatal(err)
	}
	var w workloads
	thief, owner := pod("team-b", "thief", "default", "team-a"), pod("team-a", "owner", "default", "team-a")
	w.set([]identity.Container{thief, owner})
	p.injector.pod = w.get
	apply := func(c identity.Container) (*http.Request, error) {
		req, _ := http.NewRequest("POST", "https://api.anthropic.com/v1/messages", nil)
		req.Header.Set("Authorization", "Bearer "+injector.PlaceholderAnthropicOAuth)
		_, _, err := p.injector.Apply(req, "api.anthropic.com", tlsmitm.Client{ID: c.ID, Name: c.Name, Profile: c.Profile, Known: true})
		return req, err
	}
	req, err := apply(thief)
	if !errors.Is(err, tlsmitm.ErrForbidden) || !strings.Contains(err.Error(), "bound to namespaces [team-a]") {
		t.Errorf("thief: err = %v, want 403 naming the binding", err)
	}
	if strings.Contains(req.Header.Get("Authorization"), unitToken) {
		t.Fatal("the thief's request carries a credential")
	}
	if req, err := apply(owner); err != nil || req.Header.Get("Authorization") != "Bearer "+unitToken+"-team-a" {
		t.Errorf("owner: err = %v, authorization %q; want team-a's token", err, req.Header.Get("Authorization"))
	}
}

type fakeResolver struct{ name string }

func (f fakeResolver) LookupNetIP(_ context.Context, _, host string) ([]netip.Addr, error) {
	if f.name == "cluster" {
		return []netip.Addr{netip.MustParseAddr("10.96.0.7")}, nil
	}
	return []netip.Addr{netip.MustParseAddr("192.0.2.80")}, nil
}

func TestClusterDNS_DomainGoesToTheClusterServer(t *testing.T) {
	cfg := nodeConfig(t)
	p, err := buildParts(cfg, newStore(t), netip.MustParseAddr("10.244.1.1"), discard())
	if err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]dnsredir.Decision{
		"web.team-a.svc.cluster.local": dnsredir.Allow, "CLUSTER.LOCAL.": dnsredir.Allow,
		"api.anthropic.com": dnsredir.Intercept, "evil.example": dnsredir.Deny, "notcluster.local": dnsredir.Deny,
	} {
		if got, _ := p.policy.Decide(name); got != want {
			t.Errorf("Decide(%q) = %s, want %s", name, got, want)
		}
	}
	r := clusterDNS{domain: "cluster.local", cluster: fakeResolver{"cluster"}, base: fakeResolver{"base"}}
	if a, _ := r.LookupNetIP(context.Background(), "ip4", "web.team-a.svc.cluster.local."); a[0].String() != "10.96.0.7" {
		t.Errorf("cluster name resolved to %v, want the cluster DNS's answer", a)
	}
	if a, _ := r.LookupNetIP(context.Background(), "ip4", "pypi.org"); a[0].String() != "192.0.2.80" {
		t.Errorf("other name resolved to %v, want the base resolver's answer", a)
	}
	// Without cluster_dns the cluster domain is denied like any name.
	cfg.Kubernetes.ClusterDNS = ""
	p, _ = buildParts(cfg, newStore(t), netip.MustParseAddr("10.244.1.1"), discard())
	if got, _ := p.policy.Decide("web.team-a.svc.cluster.local"); got != dnsredir.Deny {
		t.Errorf("without cluster_dns: Decide = %s, want deny", got)
	}
}

func TestNetfilterSpec_NodeModeCarriesTheCluster(t *testing.T) {
	cfg := nodeConfig(t)
	s, err := netfilterSpec(cfg, "t", "cni0", netip.MustParsePrefix("10.244.1.0/24"), netip.MustParseAddr("10.244.1.1"))
	if err != nil {
		t.Fatal(err)
	}
	if !s.AllowIntraBridge || !s.Cluster.HostToPods || len(s.Cluster.PodCIDRs) != 1 || len(s.Cluster.ServiceCIDRs) != 1 ||
		s.Cluster.APIServer[0].String() != "192.0.2.5:6443" {
		t.Errorf("node spec = %+v", s)
	}
	s, err = netfilterSpec(testConfig(t), "t", "clauderon0", netip.MustParsePrefix("10.213.0.0/24"), netip.MustParseAddr("10.213.0.1"))
	if err != nil || s.AllowIntraBridge || s.Cluster.HostToPods || len(s.Cluster.PodCIDRs) != 0 {
		t.Errorf("docker-mode spec carries cluster exceptions: %+v %v", s, err)
	}
}

func TestInstallCA_SharedRootReplacesTheNodesOwn(t *testing.T) {
	cfg := nodeConfig(t)
	shared := filepath.Join(t.TempDir(), "shared")
	if _, err := InitCA(cfg, shared); err != nil {
		t.Fatal(err)
	}
	if _, err := InitCA(cfg, shared); err == nil {
		t.Error("InitCA over an existing CA succeeded")
	}
	// A Secret volume: files are symlinks into a ..data directory.
	mount := t.TempDir()
	data := filepath.Join(mount, "..2026_data")
	os.Mkdir(data, 0o755)
	for _, f := range []string{localca.CertFile, localca.KeyFile} {
		b, _ := os.ReadFile(filepath.Join(shared, f))
		os.WriteFile(filepath.Join(data, f), b, 0o400)
		os.Symlink(filepath.Join("..2026_data", f), filepath.Join(mount, f))
	}
	// The node already made its own CA.
	own, err := localca.LoadOrCreate(cfg.StateDir)
	if err != nil {
		t.Fatal(err)
	}
	msg, err := InstallCA(cfg, mount)
	if err != nil || !strings.Contains(msg, "installed") {
		t.Fatalf("InstallCA = %q, %v", msg, err)
	}
	ca, err := localca.Load(cfg.StateDir)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := localca.Load(shared)
	if ca.Fingerprint() != want.Fingerprint() || ca.Fingerprint() == own.Fingerprint() {
		t.Errorf("state dir root %s, want the shared %s", ca.Fingerprint(), want.Fingerprint())
	}
	if st, err := os.Lstat(filepath.Join(cfg.StateDir, localca.KeyFile)); err != nil || !st.Mode().IsRegular() || st.Mode().Perm() != 0o600 {
		t.Errorf("installed key: %v %v, want a regular 0600 file", st.Mode(), err)
	}
	if msg, err := InstallCA(cfg, mount); err != nil || !strings.Contains(msg, "already installed") {
		t.Errorf("second InstallCA = %q, %v", msg, err)
	}
	if msg, err := InstallCA(cfg, t.TempDir()); err != nil || !strings.Contains(msg, "keeps its own") {
		t.Errorf("InstallCA from an empty Secret = %q, %v", msg, err)
	}
	// A broken pair is refused and the installed CA stays.
	other := filepath.Join(t.TempDir(), "other")
	if _, err := InitCA(cfg, other); err != nil {
		t.Fatal(err)
	}
	bad := t.TempDir()
	b, _ := os.ReadFile(filepath.Join(other, localca.CertFile))
	os.WriteFile(filepath.Join(bad, localca.CertFile), b, 0o644)
	os.WriteFile(filepath.Join(bad, localca.KeyFile), []byte("not a key"), 0o600)
	if _, err := InstallCA(cfg, bad); err == nil {
		t.Error("a CA with a bad key was installed")
	}
	if ca, _ := localca.Load(cfg.StateDir); ca == nil || ca.Fingerprint() != want.Fingerprint() {
		t.Error("a refused install changed the state dir's CA")
	}
}

func TestServeMetrics_HealthAndReadiness(t *testing.T) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	why := "enforcement degraded: [drift]"
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- serveMetrics(ctx, ln, newMetrics(statsSource{}), func() string { return why }, discard())
	}()
	get := func(path string) (int, string) {
		resp, err := http.Get("http://" + ln.Addr().String() + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		b, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(b)
	}
	if code, _ := get("/healthz"); code != 200 {
		t.Errorf("/healthz = %d", code)
	}
	if code, body := get("/readyz"); code != 503 || !strings.Contains(body, "drift") {
		t.Errorf("/readyz while degraded = %d %q", code, body)
	}
	why = ""
	if code, _ := get("/readyz"); code != 200 {
		t.Errorf("/readyz when ready = %d", code)
	}
	cancel()
	if err := <-done; err != nil {
		t.Errorf("serveMetrics: %v", err)
	}
}

// fakeKubeAPI serves one node's pod list and a watch that stays open;
// the first failLists lists answer 503.
func fakeKubeAPI(t *testing.T, podsJSON string, failLists int) *httptest.Server {
	t.Helper()
	var mu sync.Mutex
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.URL.Path != "/api/v1/pods" || r.URL.Query().Get("fieldSelector") != "spec.nodeName=node-1" {
			http.Error(w, `{"kind":"Status","code":404}`, http.StatusNotFound)
			return
		}
		mu.Lock()
		fail := failLists > 0
		failLists--
		mu.Unlock()
		if fail {
			http.Error(w, `{"kind":"Status","code":503,"message":"etcd is away"}`, http.StatusServiceUnavailable)
			return
		}
		if r.URL.Query().Get("watch") == "" {
			fmt.Fprintf(w, `{"metadata":{"resourceVersion":"10"},"items":[%s]}`, podsJSON)
			return
		}
		w.(http.Flusher).Flush()
		<-r.Context().Done()
	}))
	t.Cleanup(srv.Close)
	return srv
}

// TestRun_NodeModeWithFakes starts the daemon in node mode against a fake
// API server and the netfilter Fake: the pods become the identity table,
// their veths the anti-spoofing ports, the ruleset carries the cluster's
// exceptions, and status names the pods and their bindings. The API server
// fails the first lists: the rules go in anyway, closed, and the pods come
// in when a list succeeds.
func TestRun_NodeModeWithFakes(t *testing.T) {
	cfg := nodeConfig(t)
	cfg.Network.Bridge = "clrt-nocni0" // absent: the CNI has not made it yet
	cfg.Listen.TLSPort, cfg.Listen.DNSPort = freePort(t), freePort(t)
	cfg.Metrics.Address = fmt.Sprintf("127.0.0.1:%d", freePort(t))
	kube := fakeKubeAPI(t, `{"metadata":{"name":"agent","namespace":"team-a","uid":"u-1","labels":{"clauderon.profile":"team-a"}},`+
		`"spec":{"nodeName":"node-1","serviceAccountName":"runner"},"status":{"phase":"Running","podIP":"10.244.1.7"}},`+
		`{"metadata":{"name":"thief","namespace":"team-b","uid":"u-2","labels":{"clauderon.profile":"team-a"}},`+
		`"spec":{"nodeName":"node-1"},"status":{"phase":"Running","podIP":"10.244.1.8"}}`, 2)
	nft := &netfilter.Fake{}
	ready := make(chan struct{})
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() {
		done <- Run(ctx, cfg, slog.New(slog.NewTextHandler(testWriter{t}, nil)), WithNetfilter(nft), WithTable("clrtnode"),
			withListenAddr("127.0.0.1"), WithOnReady(func() { close(ready) }),
			WithKubernetes(kubepods.NewClientForTest(kube.URL, kube.Client()), func(ip netip.Addr, _ string) (string, error) {
				return "veth" + strings.ReplaceAll(ip.String(), ".", ""), nil
			}))
	}()
	select {
	case <-ready:
	case err := <-done:
		t.Fatalf("Run returned before ready: %v", err)
	case <-time.After(30 * time.Second):
		t.Fatal("not ready in 30s")
	}
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run = %v after cancel", err)
		}
	}()
	spec, ok := nft.Applied()
	if !ok || spec.Bridge != "clrt-nocni0" || spec.Gateway != netip.MustParseAddr("10.244.1.1") || !spec.Cluster.HostToPods {
		t.Fatalf("applied spec = %+v (%t)", spec, ok)
	}
	testutil.WaitFor(t, "both pods' ports", func() bool { spec, _ = nft.Applied(); return len(spec.Ports) >= 2 })
	if len(spec.Ports) != 2 || spec.Ports[0].IfName != "veth1024417" || spec.Ports[0].Addr != netip.MustParseAddr("10.244.1.7") {
		t.Errorf("ports = %v, want both pods' veths", spec.Ports)
	}
	st, err := api.NewClient(cfg.SocketPath()).Status(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, c := range st.Containers {
		got[c.Name] = c.Profile + "|" + c.NoCredential
	}
	if got["team-a/agent"] != "team-a|" || !strings.Contains(got["team-b/thief"], "bound to namespaces [team-a]") {
		t.Errorf("status containers = %v", got)
	}
	// Pods, but no bridge of that name: the rules confine nothing there,
	// so the DaemonSet's readiness says so.
	resp, err := http.Get("http://" + cfg.Metrics.Address + "/readyz")
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != http.StatusServiceUnavailable || !strings.Contains(string(body), "no bridge clrt-nocni0") {
		t.Errorf("/readyz = %d %q, want 503 naming the missing bridge", resp.StatusCode, body)
	}
}

func TestPodProfile_UnboundDefaultGoesToNoPod(t *testing.T) {
	if p, reason := podProfile(nil, pod("ci", "p", "default", "")); p != "" || !strings.Contains(reason, "default profile is bound to no namespace") {
		t.Errorf("podProfile = %q, %q; want a refusal naming the default profile's binding", p, reason)
	}
}

func TestInjectorAdapter_PodGoneFromTheTableGetsNothing(t *testing.T) {
	cfg := nodeConfig(t)
	cfg.Profiles.TrustLabels = true // a label alone must still not count in node mode
	p, err := buildParts(cfg, newStore(t, "CLAUDERON_PROFILE_TEAM_A_CLAUDE_CODE_OAUTH_TOKEN="+unitToken), netip.MustParseAddr("10.244.1.1"), discard())
	if err != nil {
		t.Fatal(err)
	}
	var w workloads
	w.set(nil)
	p.injector.pod = w.get
	req, _ := http.NewRequest("POST", "https://api.anthropic.com/v1/messages", nil)
	_, _, err = p.injector.Apply(req, "api.anthropic.com", tlsmitm.Client{ID: "uid-gone", Name: "team-a/gone", Profile: "team-a", Known: true})
	if !errors.Is(err, tlsmitm.ErrForbidden) || !strings.Contains(err.Error(), "no longer on this node's list") || req.Header.Get("Authorization") != "" {
		t.Errorf("a pod gone from the table: err = %v, authorization %q", err, req.Header.Get("Authorization"))
	}
}

type oneWorkload struct{ c identity.Container }

func (o oneWorkload) Sync(context.Context) error                   { return nil }
func (o oneWorkload) Run(context.Context) error                    { return nil }
func (o oneWorkload) List() []identity.Container                   { return []identity.Container{o.c} }
func (o oneWorkload) Lookup(netip.Addr) (identity.Container, bool) { return o.c, true }
func (o oneWorkload) StreamDown() bool                             { return false }

// TestIdentityAdapter_PodProfileIsTheBoundOne: the audit's profile is what
// the binding gave, not the label a pod chose.
func TestIdentityAdapter_PodProfileIsTheBoundOne(t *testing.T) {
	cfg := nodeConfig(t)
	d := &daemon{}
	for _, tc := range []struct {
		pod  identity.Container
		want string
	}{
		{pod("team-a", "owner", "default", "team-a"), "team-a"},
		{pod("team-b", "thief", "default", "team-a"), ""},
	} {
		d.table = oneWorkload{tc.pod}
		c, ok := d.identityFor(cfg).Lookup(tc.pod.IP)
		if !ok || c.Profile != tc.want {
			t.Errorf("%s: Lookup = %+v, %v; want profile %q", tc.pod.Name, c, ok, tc.want)
		}
	}
}

type downSource struct{ oneWorkload }

func (downSource) StreamDown() bool { return true }

// TestPodBridgeMissing_PodListNotInIsNotReady: while the pod list is not
// in, every pod is refused; readiness says so, so a rollout with broken
// RBAC stops at the first node.
func TestPodBridgeMissing_PodListNotInIsNotReady(t *testing.T) {
	d := &daemon{table: downSource{}}
	if why := d.podBridgeMissing(); !strings.Contains(why, "pod list is not in") {
		t.Errorf("podBridgeMissing = %q, want the pod list named", why)
	}
}

// TestPortsOf_AVethWithTwoAddressesGetsNone: a veth the table gives two
// addresses lets neither through; the same address twice (containers
// sharing a namespace) stays one port.
func TestPortsOf_AVethWithTwoAddressesGetsNone(t *testing.T) {
	c := func(name, veth, ip string) identity.Container {
		return identity.Container{ID: name, Name: name, HostVeth: veth, IP: netip.MustParseAddr(ip)}
	}
	got := portsOf([]identity.Container{c("a", "veth1", "10.244.1.2"), c("b", "veth1", "10.244.1.3"),
		c("c", "veth2", "10.244.1.4"), c("d", "veth3", "10.244.1.5"), c("e", "veth3", "10.244.1.5")}, discard())
	want := []netfilter.Port{{IfName: "veth2", Addr: netip.MustParseAddr("10.244.1.4")},
		{IfName: "veth3", Addr: netip.MustParseAddr("10.244.1.5")}, {IfName: "veth3", Addr: netip.MustParseAddr("10.244.1.5")}}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("portsOf = %v, want %v", got, want)
	}
}
