package doctor

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"math/big"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/clauderon/clauderond/appliance/api"
	"github.com/clauderon/clauderond/appliance/internal/dockertest"
	"github.com/docker/docker/api/types/events"
	"github.com/docker/docker/api/types/network"
)

var _ Docker = (*dockertest.Docker)(nil)

// probe is what the probe container does in the fake dockerd: it appends
// the audit line the daemon would write (with the container's name),
// prints output and exits with exit.
type probe struct {
	output   string     // probe stdout
	exit     int        // probe exit code
	audit    *auditLine // appended on start, with the container's name
	auditLog string
}

func (p *probe) run(_ context.Context, c dockertest.Container, stdout, _ io.Writer) (int, error) {
	if p.audit != nil {
		l := *p.audit
		l.Container = c.Name
		b, _ := json.Marshal(l)
		fh, err := os.OpenFile(p.auditLog, os.O_APPEND|os.O_WRONLY|os.O_CREATE, 0o600)
		if err != nil {
			return 0, err
		}
		defer fh.Close()
		fmt.Fprintf(fh, "%s\n", b)
	}
	_, _ = io.WriteString(stdout, p.output)
	return p.exit, nil
}

// newProbeDocker is dockerd in memory with the clauderon network, whose
// containers run p.
func newProbeDocker(t *testing.T, p *probe) *dockertest.Docker {
	t.Helper()
	d := dockertest.New()
	if _, err := d.NetworkCreate(context.Background(), "clauderon", network.CreateOptions{Driver: "bridge",
		IPAM: &network.IPAM{Config: []network.IPAMConfig{{Subnet: "10.213.0.0/24"}}}}); err != nil {
		t.Fatal(err)
	}
	d.SetProgram(p.run)
	return d
}

// destroyed lists the IDs of the containers removed, in order.
func destroyed(d *dockertest.Docker) []string {
	var ids []string
	for _, m := range d.History() {
		if m.Type == events.ContainerEventType && m.Action == events.ActionDestroy {
			ids = append(ids, m.Actor.ID)
		}
	}
	return ids
}

// writeCA writes a CA certificate and key into dir.
func writeCA(t *testing.T, dir string, isCA bool, notAfter time.Time, keyMode os.FileMode) string {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	tmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "clauderon local CA"},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: notAfter, IsCA: isCA, BasicConstraintsValid: true, KeyUsage: x509.KeyUsageCertSign}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	if err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "proxy-ca.pem")
	if err := os.WriteFile(p, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "proxy-ca-key.pem"), []byte("key"), keyMode); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(filepath.Join(dir, "proxy-ca-key.pem"), keyMode); err != nil {
		t.Fatal(err)
	}
	return p
}

var goodStatus = api.Status{
	Ready: true, Version: "v1", Mode: "enforce", Enforcement: api.EnforcementIntact,
	Network:     api.Network{Name: "clauderon", Subnet: "10.213.0.0/24"},
	Listeners:   []api.Listener{{Name: "tls", Address: "10.213.0.1:8443", OK: true}, {Name: "dns", Address: "10.213.0.1:8053", OK: true}},
	Credentials: []api.Credential{{Profile: "default", Name: "anthropic", Source: "env:CLAUDE_CODE_OAUTH_TOKEN", Kind: "oauth", Fingerprint: "ab12", Present: true}},
}

type env struct {
	deps  Deps
	dock  *dockertest.Docker
	probe *probe
	dir   string
}

// setup builds Deps where everything passes; tests break one thing.
func setup(t *testing.T) *env {
	t.Helper()
	dir := t.TempDir()
	ca := writeCA(t, dir, true, time.Now().Add(24*time.Hour), 0o600)
	cj := filepath.Join(dir, "claude.json")
	if err := os.WriteFile(cj, []byte(`{"hasCompletedOnboarding": true}`), 0o666); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(cj, 0o666); err != nil {
		t.Fatal(err)
	}
	exe := "/bin/busybox" // static; the real daemon binary is too
	if _, err := os.Stat(exe); err != nil {
		t.Skip("needs a static executable (/bin/busybox from busybox-static)")
	}
	auditPath := filepath.Join(dir, "audit.jsonl")
	if err := os.WriteFile(auditPath, []byte("{\"container\":\"other\",\"host\":\"api.anthropic.com\",\"path\":\"/x\",\"auth_injected\":true}\nnot json\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	pr := &probe{
		output:   "probe: GET https://api.anthropic.com/api/hello\nprobe: tls verified, certificate issued by \"CN=clauderon local CA\"\nprobe: status 200\n",
		audit:    &auditLine{Host: "api.anthropic.com", SNI: "api.anthropic.com", Path: "/api/hello", Status: 200, Decision: "intercept", Rule: "api.anthropic.com", AuthInjected: true},
		auditLog: auditPath}
	dock := newProbeDocker(t, pr)
	st := goodStatus
	return &env{dir: dir, dock: dock, probe: pr, deps: Deps{
		Status: func(context.Context) (api.Status, error) { return st, nil },
		Docker: dock, Network: "clauderon", CAPath: ca, AuditPath: auditPath,
		ClaudeJSON: cj, SessionUser: "1000:1000", Version: "v1.2.3+dirty", SelfExe: exe, ProbeTimeout: 10 * time.Second, AuditWait: 300 * time.Millisecond,
	}}
}

func stepByName(t *testing.T, rep api.DoctorReport, name string) api.DoctorStep {
	t.Helper()
	for _, s := range rep.Steps {
		if s.Name == name {
			return s
		}
	}
	t.Fatalf("no step %q in %+v", name, rep.Steps)
	return api.DoctorStep{}
}

func TestRun_AllGood(t *testing.T) {
	e := setup(t)
	rep := Run(context.Background(), e.deps)
	for _, s := range rep.Steps {
		if !s.OK {
			t.Errorf("step %q failed: %s (fix: %s)", s.Name, s.Detail, s.Fix)
		}
		if s.OK && s.Fix != "" {
			t.Errorf("step %q passed but carries a fix", s.Name)
		}
	}
	if !rep.OK() {
		t.Fatal("report not OK")
	}
	wantNames := []string{"daemon ready", "firewall rules intact", "listeners up", "credentials present", "credential formats",
		"daemon capabilities", "credentials file",
		"CA certificate valid", "CA key private", "claude.json writable", "probe image", "probe container trusts the CA", "credential injected"}
	var got []string
	for _, s := range rep.Steps {
		got = append(got, s.Name)
	}
	if strings.Join(got, "|") != strings.Join(wantNames, "|") {
		t.Errorf("steps = %v, want %v", got, wantNames)
	}
	// The probe: our image, on the network, nobody, only the CA mounted, removed after.
	if e.dock.Calls("ImageImport") != 1 || len(e.dock.Created()) != 1 {
		t.Fatalf("imports=%d created=%d", e.dock.Calls("ImageImport"), len(e.dock.Created()))
	}
	for _, c := range e.dock.Created() {
		cfg, hc := c.Config, c.HostConfig
		if !strings.HasPrefix(cfg.Image, "clauderon-probe:v1.2.3_dirty-") || cfg.User != "65534:65534" || string(hc.NetworkMode) != "clauderon" {
			t.Errorf("probe config: image=%q user=%q network=%q", cfg.Image, cfg.User, hc.NetworkMode)
		}
		if strings.Join(cfg.Cmd, " ") != "/clauderond probe --timeout 20s https://api.anthropic.com/api/hello" {
			t.Errorf("probe cmd = %v", cfg.Cmd)
		}
		if len(hc.Mounts) != 1 || hc.Mounts[0].Source != e.deps.CAPath || !hc.Mounts[0].ReadOnly {
			t.Errorf("probe mounts = %+v, want only the CA certificate read-only", hc.Mounts)
		}
		for _, v := range cfg.Env {
			if !strings.HasPrefix(v, "SSL_CERT_FILE=") {
				t.Errorf("probe env has %q", v)
			}
		}
		if removed := destroyed(e.dock); len(removed) != 1 || removed[0] != c.ID {
			t.Errorf("removed = %v, want the probe container", removed)
		}
	}
	// A second run reuses the image.
	Run(context.Background(), e.deps)
	if n := e.dock.Calls("ImageImport"); n != 1 {
		t.Errorf("imports after second run = %d, want the image reused", n)
	}
}

// TestProbeImage_OldBuildsAreRemoved: every daemon build imports its own
// probe image; the doctor removes the others so they do not pile up.
func TestProbeImage_OldBuildsAreRemoved(t *testing.T) {
	e := setup(t)
	e.dock.AddImage("clauderon-probe:v1.2.2-0123456789ab")
	e.dock.AddImage("other:latest")
	ref, err := ensureProbeImage(context.Background(), e.deps)
	if err != nil {
		t.Fatal(err)
	}
	if !e.dock.HasImage(ref) {
		t.Errorf("the new probe image %s was removed", ref)
	}
	if e.dock.HasImage("clauderon-probe:v1.2.2-0123456789ab") {
		t.Error("an old probe image was kept")
	}
	if !e.dock.HasImage("other:latest") {
		t.Error("an unrelated image was removed")
	}
}

func TestRun_FailuresNameTheFix(t *testing.T) {
	tests := []struct {
		name     string
		breakIt  func(t *testing.T, e *env)
		step     string
		detail   string
		fix      string
		noProbes bool
	}{
		{"daemon_unreachable", func(t *testing.T, e *env) {
			e.deps.Status = func(context.Context) (api.Status, error) { return api.Status{}, errors.New("daemon unreachable") }
		}, "daemon ready", "daemon unreachable", "systemctl start clauderond", true},
		{"daemon_not_ready", func(t *testing.T, e *env) {
			e.deps.Status = func(context.Context) (api.Status, error) {
				return api.Status{Problems: []string{"bridge missing"}, Enforcement: api.EnforcementIntact}, nil
			}
		}, "daemon ready", "bridge missing", "journalctl", true},
		{"rules_drifted", func(t *testing.T, e *env) {
			st := goodStatus
			st.Enforcement, st.Drift = api.EnforcementDegraded, []string{"missing clauderon:redirect-443"}
			e.deps.Status = func(context.Context) (api.Status, error) { return st, nil }
		}, "firewall rules intact", "redirect-443", "systemctl reload clauderond", false},
		{"listener_down", func(t *testing.T, e *env) {
			st := goodStatus
			st.Listeners = []api.Listener{{Name: "dns", Address: "10.213.0.1:8053"}}
			e.deps.Status = func(context.Context) (api.Status, error) { return st, nil }
		}, "listeners up", "dns 10.213.0.1:8053", "ss -ltnup", false},
		{"no_anthropic_credential", func(t *testing.T, e *env) {
			st := goodStatus
			st.Credentials = []api.Credential{{Profile: "default", Name: "github", Kind: "github-token", Present: true}}
			e.deps.Status = func(context.Context) (api.Status, error) { return st, nil }
		}, "credentials present", "no anthropic credential", "secrets/anthropic", false},
		{"credential_wrong_format", func(t *testing.T, e *env) {
			st := goodStatus
			st.Credentials = []api.Credential{{Profile: "default", Name: "anthropic", Source: "file:secrets/anthropic", Kind: "token", Present: true}}
			e.deps.Status = func(context.Context) (api.Status, error) { return st, nil }
		}, "credential formats", `is a "token", expected sk-ant-oat01`, "replace the value", false},
		{"ca_missing", func(t *testing.T, e *env) { os.Remove(e.deps.CAPath) }, "CA certificate valid", "no such file", "restart", false},
		{"ca_not_ca", func(t *testing.T, e *env) { writeCA(t, e.dir, false, time.Now().Add(time.Hour), 0o600) }, "CA certificate valid", "not a CA", "move", false},
		{"ca_expired", func(t *testing.T, e *env) {
			e.deps.Now = func() time.Time { return time.Now().Add(48 * time.Hour) }
		}, "CA certificate valid", "not now", "host clock", false},
		{"ca_key_readable", func(t *testing.T, e *env) {
			os.Chmod(filepath.Join(e.dir, "proxy-ca-key.pem"), 0o644)
		}, "CA key private", "mode -rw-r--r--", "chmod 600", false},
		{"claude_json_missing", func(t *testing.T, e *env) { os.Remove(e.deps.ClaudeJSON) }, "claude.json writable", "no such file", "hasCompletedOnboarding", false},
		{"claude_json_not_json", func(t *testing.T, e *env) { os.WriteFile(e.deps.ClaudeJSON, []byte("{oops"), 0o666) }, "claude.json writable", "not a JSON object", "move it aside", false},
		{"claude_json_not_writable_by_session_user", func(t *testing.T, e *env) {
			os.Chmod(e.deps.ClaudeJSON, 0o600)
			e.deps.SessionUser = "4242:4242"
		}, "claude.json writable", "cannot write it", "chown 4242:4242", false},
		{"dynamic_executable", func(t *testing.T, e *env) { e.deps.SelfExe = dynamicExe(t) }, "probe image", "dynamically linked", "CGO_ENABLED=0", false},
		{"probe_tls_untrusted", func(t *testing.T, e *env) {
			e.probe.output, e.probe.exit, e.probe.audit = "probe: tls verification failed: x509: certificate signed by unknown authority\n", 1, nil
		}, "probe container trusts the CA", "unknown authority", "redirect", false},
		{"probe_unreachable", func(t *testing.T, e *env) {
			e.probe.output, e.probe.exit, e.probe.audit = "probe: failed: dial tcp: i/o timeout\n", 1, nil
		}, "probe container trusts the CA", "i/o timeout", "clauderon audit --container clauderon-doctor-", false},
		{"no_audit_line", func(t *testing.T, e *env) { e.probe.audit = nil }, "credential injected", "no audit line", "default_rules", false},
		{"not_injected", func(t *testing.T, e *env) { e.probe.audit.AuthInjected = false }, "credential injected", "no credential injected", "CLAUDE_CODE_OAUTH_TOKEN", false},
		{"upstream_401", func(t *testing.T, e *env) { e.probe.audit.Status = 401 }, "credential injected", "answered 401", "expired or revoked", false},
		{"no_docker", func(t *testing.T, e *env) { e.deps.Docker = nil }, "probe image", "no Docker client", "systemctl start docker", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			e := setup(t)
			tt.breakIt(t, e)
			rep := Run(context.Background(), e.deps)
			if rep.OK() {
				t.Fatal("report OK, want a failure")
			}
			s := stepByName(t, rep, tt.step)
			if s.OK {
				t.Fatalf("step %q OK, want failure", tt.step)
			}
			if !strings.Contains(s.Detail, tt.detail) {
				t.Errorf("detail = %q, want it to contain %q", s.Detail, tt.detail)
			}
			if !strings.Contains(s.Fix, tt.fix) {
				t.Errorf("fix = %q, want it to contain %q", s.Fix, tt.fix)
			}
			if tt.noProbes && len(e.dock.Created()) != 0 {
				t.Errorf("probe ran although the daemon is not ready")
			}
			for _, st := range rep.Steps {
				if !st.OK && st.Fix == "" {
					t.Errorf("failing step %q names no fix", st.Name)
				}
			}
			if created, removed := len(e.dock.Created()), len(destroyed(e.dock)); created != removed {
				t.Errorf("probe containers created %d, removed %d", created, removed)
			}
		})
	}
}

// dynamicExe returns a dynamically linked executable from the host.
func dynamicExe(t *testing.T) string {
	for _, p := range []string{"/usr/bin/env", "/bin/ls", "/usr/bin/true"} {
		data, err := os.ReadFile(p)
		if err == nil && checkStatic(data) != nil {
			return p
		}
	}
	t.Skip("no dynamically linked executable found")
	return ""
}

func TestTagSafe(t *testing.T) {
	for in, want := range map[string]string{"v1.2.3": "v1.2.3", "": "dev", "v1+dirty/x": "v1_dirty_x", "-x": "x"} {
		if got := tagSafe(in); got != want {
			t.Errorf("tagSafe(%q) = %q, want %q", in, got, want)
		}
	}
}
