//go:build e2e

// Package tenants plays two tenants on one build server against the real
// daemon and dockerd: Unix users tenant-a and tenant-b, each in the socket
// group, each with a profile bound to them (profiles.access), labels not
// trusted (profiles.trust_labels: false). Tenant A cannot create a session
// with B's profile, cannot see or remove B's session or its audit lines,
// and a container labelled with B's profile by hand gets no credential.
//
// It runs as its own `go test` invocation (scripts/test.sh): its daemon
// owns the nft table "clauderon" like the other suites' daemons.
package tenants

import (
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/clauderon/clauderond/appliance/api"
	"github.com/clauderon/clauderond/scripts/e2e/e2eutil"
	"github.com/clauderon/clauderond/scripts/fakeapi"
)

const (
	network = "clauderon-e2e-tn"
	bridge  = "clauderon-tn0"
	subnet  = "10.233.73.0/24"
	gateway = "10.233.73.1"
	group   = "clauderon-e2e-tn"
)

var tenants = []string{"clauderon-e2e-ta", "clauderon-e2e-tb"}

func TestTenants_ProfilesSessionsAndAuditStayApart(t *testing.T) {
	image := e2eutil.RootAndImage(t, "CLAUDERON_E2E_DEBIAN_IMAGE")
	tmp, err := os.MkdirTemp("", "clauderon-e2e-tn-")
	if err != nil {
		t.Fatal(err)
	}
	os.Chmod(tmp, 0o755) // the tenants reach the socket dir through it
	t.Cleanup(func() { os.RemoveAll(tmp) })
	bin := e2eutil.BuildBinaries(t, tmp)
	addUsers(t)

	tokA, tokB := "sk-ant-oat01-e2e-TEAM-A-"+e2eutil.RandomHex(10), "sk-ant-oat01-e2e-TEAM-B-"+e2eutil.RandomHex(10)
	tk := fakeapi.NewTokens(map[string]string{"team-a": tokA, "team-b": tokB})
	ca, err := fakeapi.NewCA("clauderon e2e tenants upstream CA")
	if err != nil {
		t.Fatal(err)
	}
	tlsCfg, _ := ca.ServerTLS(false, "api.anthropic.com")
	srv, err := fakeapi.Serve(tk, tlsCfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	caFile := filepath.Join(tmp, "upstream-ca.pem")
	ca.WriteFile(caFile)

	state := filepath.Join(tmp, "state")
	sockDir := filepath.Join(tmp, "run")
	cfg := fmt.Sprintf(`state_dir: %s
credentials_file: ""
socket: {path: %s, group: %s}
metrics: {address: ""}
network: {name: %s, bridge: %s, subnet: %s}
upstreams:
  - {host: api.anthropic.com, address: %q, ca_file: %s}
profiles:
  trust_labels: false
  access:
    - {profile: team-a, users: [%s]}
    - {profile: team-b, users: [%s]}
sessions: {workspaces_dir: %s}
drain_timeout: 2s
`, state, filepath.Join(sockDir, "d.sock"), group, network, bridge, subnet, srv.Addr, caFile, tenants[0], tenants[1], filepath.Join(tmp, "ws"))
	cfgPath := filepath.Join(tmp, "config.yaml")
	os.WriteFile(cfgPath, []byte(cfg), 0o600)
	env := []string{"CLAUDERON_PROFILE_TEAM_A_CLAUDE_CODE_OAUTH_TOKEN=" + tokA, "CLAUDERON_PROFILE_TEAM_B_CLAUDE_CODE_OAUTH_TOKEN=" + tokB}
	// Registered first, so it runs last: after the daemon stopped (a
	// running daemon refuses teardown).
	t.Cleanup(func() {
		e2eutil.Teardown(t, bin, cfgPath)
		exec.Command("docker", "network", "rm", network).Run()
	})
	sock := filepath.Join(sockDir, "d.sock")
	e2eutil.StartDaemon(t, []string{filepath.Join(bin, "clauderond"), "--config", cfgPath},
		append([]string{"PATH=" + os.Getenv("PATH"), "HOME=/root"}, env...),
		func() bool {
			return exec.Command(filepath.Join(bin, "clauderon"), "--socket", sock, "status").Run() == nil
		})
	cli := func(who string, args ...string) (string, error) {
		return e2eutil.AsUser(t, who, append([]string{filepath.Join(bin, "clauderon"), "--socket", sock}, args...)...)
	}

	// A cannot use B's profile.
	out, err := cli(tenants[0], "create", "--no-repo", "--name", "e2e-tn-steal", "--image", image, "--profile", "team-b", "--prompt", "hi")
	if err == nil || !strings.Contains(out, `profile "team-b" is for users `+tenants[1]) {
		t.Errorf("tenant A creating with B's profile: %v\n%s", err, out)
	}
	// Each creates a session with its own.
	for i, who := range tenants {
		name := fmt.Sprintf("e2e-tn-%d", i)
		t.Cleanup(func() { exec.Command("docker", "rm", "-f", "clauderon-"+name).Run() })
		if out, err := cli(who, "create", "--no-repo", "--name", name, "--image", image, "--profile", []string{"team-a", "team-b"}[i], "--prompt", "hi"); err != nil {
			t.Fatalf("%s creating a session with their own profile: %v\n%s", who, err, out)
		}
	}
	// A sees only its own session, and cannot stop or remove B's.
	out, err = cli(tenants[0], "list", "--json")
	var ss []api.Session
	if err != nil || json.Unmarshal([]byte(out), &ss) != nil || len(ss) != 1 || ss[0].Name != "e2e-tn-0" {
		t.Errorf("tenant A's list: %v %s", err, out)
	}
	for _, args := range [][]string{{"rm", "e2e-tn-1"}, {"stop", "e2e-tn-1"}, {"logs", "e2e-tn-1"}} {
		if out, err := cli(tenants[0], args...); err == nil || !strings.Contains(out, `e2e-tn-1`) {
			t.Errorf("tenant A: clauderon %v on B's session: %v %s", args, err, out)
		}
	}
	if out, _ := cli("root", "list"); !strings.Contains(out, "e2e-tn-0") || !strings.Contains(out, "e2e-tn-1") {
		t.Errorf("root sees every session:\n%s", out)
	}

	// B's session calls the API (from inside, as its agent would): B's
	// token is injected; A's audit shows none of it.
	curl := `curl -sS --cacert /etc/clauderon/proxy-ca.pem -H "Authorization: Bearer $CLAUDE_CODE_OAUTH_TOKEN" https://api.anthropic.com/v1/messages -d '{}'`
	if got, _ := exec.Command("docker", "exec", "clauderon-e2e-tn-1", "sh", "-c", curl).CombinedOutput(); !strings.Contains(string(got), "token=team-b") {
		t.Errorf("B's session got %q, want B's token injected", got)
	}
	e2eutil.WaitFor(t, "B's request in the audit", 15*time.Second, func() bool {
		out, _ := cli(tenants[1], "audit", "--json", "-n", "50")
		return strings.Contains(out, "clauderon-e2e-tn-1") && strings.Contains(out, `"owner":"`+tenants[1]+`"`)
	})
	if out, _ := cli(tenants[0], "audit", "--json", "-n", "1000"); strings.Contains(out, "clauderon-e2e-tn-1") {
		t.Errorf("tenant A's audit shows B's container:\n%s", out)
	}

	// A container labelled with B's profile by hand (not made by
	// clauderond) gets no credential: labels are not trusted.
	forged := "clauderon-e2e-tn-forged-" + e2eutil.RandomHex(3)
	got, _ := exec.Command("docker", "run", "--rm", "--name", forged, "--network", network, "--label", "clauderon.profile=team-b",
		"-v", filepath.Join(state, "proxy-ca.pem")+":/etc/clauderon/proxy-ca.pem:ro", "-e", "CLAUDE_CODE_OAUTH_TOKEN=sk-ant-oat01-clauderon-proxy-placeholder",
		image, "sh", "-c", curl+" -w ' status=%{http_code}'").CombinedOutput()
	if strings.Contains(string(got), "token=team-b") || !strings.Contains(string(got), "status=403") || !strings.Contains(string(got), "trust_labels") {
		t.Errorf("a hand-labelled container got %q, want 403 naming profiles.trust_labels and no token", got)
	}
	if out, _ := cli(tenants[1], "rm", "e2e-tn-1"); !strings.Contains(out, "removed") {
		t.Errorf("B removing its own session: %s", out)
	}
}

func addUsers(t *testing.T) {
	t.Helper()
	exec.Command("groupadd", "--system", group).Run()
	t.Cleanup(func() { exec.Command("groupdel", group).Run() })
	for _, u := range tenants {
		exec.Command("userdel", u).Run()
		if out, err := exec.Command("useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", "-G", group, u).CombinedOutput(); err != nil {
			t.Fatalf("useradd %s: %v %s", u, err, out)
		}
		t.Cleanup(func() { exec.Command("userdel", u).Run() })
	}
}
