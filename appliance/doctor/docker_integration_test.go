package doctor

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/tls"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/clauderon/clauderond/appliance/api"
	"github.com/clauderon/clauderond/netfilter/nftest"
	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/filters"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/client"
)

// testPKI is a CA and a leaf for one IP, as PEM files plus a tls config.
type testPKI struct {
	caPath string
	tlsCfg *tls.Config
}

func newPKI(t *testing.T, dir string, ip netip.Addr) testPKI {
	t.Helper()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "doctor itest CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), IsCA: true, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caCert, _ := x509.ParseCertificate(caDER)
	leafKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	leafTmpl := &x509.Certificate{SerialNumber: big.NewInt(2), Subject: pkix.Name{CommonName: ip.String()}, IPAddresses: []net.IP{ip.AsSlice()},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(time.Hour), ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}}
	leafDER, err := x509.CreateCertificate(rand.Reader, leafTmpl, caCert, &leafKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	caPath := filepath.Join(dir, "proxy-ca.pem")
	if err := os.WriteFile(caPath, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: caDER}), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "proxy-ca-key.pem"), []byte("k"), 0o600); err != nil {
		t.Fatal(err)
	}
	return testPKI{caPath: caPath, tlsCfg: &tls.Config{Certificates: []tls.Certificate{{Certificate: [][]byte{leafDER}, PrivateKey: leafKey}}}}
}

// buildDaemon compiles cmd/clauderond statically, as the probe image needs.
func buildDaemon(t *testing.T) string {
	t.Helper()
	out := filepath.Join(t.TempDir(), "clauderond")
	cmd := exec.Command("go", "build", "-trimpath", "-o", out, "../../cmd/clauderond")
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("building clauderond: %v\n%s", err, b)
	}
	return out
}

// TestDocker_ProbeImageRunsAndProvesInjection runs the real probe: the
// statically built daemon imported as an image, a container on a bridge,
// TLS to a server on the bridge gateway trusting only the mounted CA. The
// server plays the daemon's part and writes the audit line.
func TestDocker_ProbeImageRunsAndProvesInjection(t *testing.T) {
	nftest.RequireRoot(t)
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	dc, err := client.NewClientWithOpts(client.FromEnv, client.WithAPIVersionNegotiation())
	if err != nil {
		t.Fatal(err)
	}
	defer dc.Close()
	if _, err := dc.Ping(ctx); err != nil {
		t.Skipf("docker not reachable: %v", err)
	}
	exe := buildDaemon(t)
	netName, gw := createNetwork(ctx, t, dc)
	dir := t.TempDir()
	pki := newPKI(t, dir, gw)
	auditPath := filepath.Join(dir, "audit.jsonl")
	srvURL := serveGateway(ctx, t, dc, netName, gw, pki, auditPath)

	cj := filepath.Join(dir, "claude.json")
	if err := os.WriteFile(cj, []byte(`{"hasCompletedOnboarding": true}`), 0o600); err != nil {
		t.Fatal(err)
	}
	_ = os.Chown(cj, 1000, 1000)
	deps := Deps{
		Status: func(context.Context) (api.Status, error) { return goodStatus, nil },
		Docker: dc, Network: netName, CAPath: pki.caPath, AuditPath: auditPath, ClaudeJSON: cj, SessionUser: "1000:1000",
		Version: "itest", SelfExe: exe, ProbeURL: srvURL + "/api/hello", ProbeTimeout: 90 * time.Second,
	}
	var ref string
	t.Cleanup(func() {
		if ref != "" {
			_, _ = dc.ImageRemove(context.Background(), ref, image.RemoveOptions{Force: true})
		}
	})
	rep := Run(ctx, deps)
	for _, s := range rep.Steps {
		if s.Name == "probe image" {
			ref = s.Detail
		}
		if !s.OK {
			t.Errorf("step %q failed: %s (fix: %s)", s.Name, s.Detail, s.Fix)
		}
	}

	// A CA the server does not use: the probe must report a TLS failure.
	other := newPKI(t, t.TempDir(), gw)
	deps.CAPath = other.caPath
	rep = Run(ctx, deps)
	trust := stepByName(t, rep, "probe container trusts the CA")
	if trust.OK || !strings.Contains(trust.Detail, "tls verification failed") {
		t.Errorf("untrusted CA: step = %+v", trust)
	}

	// Only this test's probes (on its own network): another package's test
	// (the appliance root test runs the doctor too) may have a probe running
	// at this moment.
	left, err := dc.ContainerList(ctx, container.ListOptions{All: true, Filters: filters.NewArgs(
		filters.Arg("label", LabelDoctor), filters.Arg("network", netName))})
	if err != nil {
		t.Fatal(err)
	}
	if len(left) != 0 {
		t.Errorf("probe containers left behind: %d", len(left))
	}
}

func createNetwork(ctx context.Context, t *testing.T, dc *client.Client) (string, netip.Addr) {
	t.Helper()
	name := fmt.Sprintf("clauderon-doctest-%d", os.Getpid())
	for i := 0; i < 20; i++ {
		subnet := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 240, byte((os.Getpid() + i) % 250), 0}), 24)
		gw := subnet.Addr().Next()
		_, err := dc.NetworkCreate(ctx, name, network.CreateOptions{Driver: "bridge",
			IPAM: &network.IPAM{Config: []network.IPAMConfig{{Subnet: subnet.String(), Gateway: gw.String()}}}})
		if err == nil {
			t.Cleanup(func() { _ = dc.NetworkRemove(context.Background(), name) })
			return name, gw
		}
		if !strings.Contains(err.Error(), "overlap") {
			t.Fatalf("creating network: %v", err)
		}
	}
	t.Fatal("no free subnet for the test network")
	return "", netip.Addr{}
}

// serveGateway serves HTTPS on the bridge gateway; each request appends the
// audit line the daemon would write for the container that sent it.
func serveGateway(ctx context.Context, t *testing.T, dc *client.Client, netName string, gw netip.Addr, pki testPKI, auditPath string) string {
	t.Helper()
	var ln net.Listener
	var err error
	for i := 0; i < 50; i++ { // the bridge address appears shortly after create
		if ln, err = tls.Listen("tcp", netip.AddrPortFrom(gw, 0).String(), pki.tlsCfg); err == nil {
			break
		}
		time.Sleep(100 * time.Millisecond)
	}
	if err != nil {
		t.Fatalf("listening on the gateway: %v", err)
	}
	var mu sync.Mutex
	srv := &http.Server{ReadHeaderTimeout: 5 * time.Second, Handler: http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		src, _ := netip.ParseAddrPort(r.RemoteAddr)
		name := containerByIP(ctx, dc, netName, src.Addr())
		line, _ := json.Marshal(map[string]any{"ts": time.Now(), "container": name, "src_ip": src.Addr().String(), "sni": gw.String(), "host": gw.String(),
			"method": r.Method, "path": r.URL.Path, "status": 200, "decision": "intercept", "rule": "itest", "auth_injected": true, "duration_ms": 1, "error": ""})
		mu.Lock()
		f, err := os.OpenFile(auditPath, os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o600)
		if err == nil {
			fmt.Fprintf(f, "%s\n", line)
			f.Close()
		}
		mu.Unlock()
		w.WriteHeader(http.StatusOK)
	})}
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close(); <-done })
	return "https://" + ln.Addr().String()
}

func containerByIP(ctx context.Context, dc *client.Client, netName string, ip netip.Addr) string {
	nw, err := dc.NetworkInspect(ctx, netName, network.InspectOptions{})
	if err != nil {
		return ""
	}
	for _, c := range nw.Containers {
		if p, err := netip.ParsePrefix(c.IPv4Address); err == nil && p.Addr() == ip {
			return c.Name
		}
	}
	return ""
}
