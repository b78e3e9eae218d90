//go:build e2e

// Package install plays an operator's first day on a host, end to end, with
// the files scripts/install.sh really installs: `install.sh --no-start`;
// the installed clauderond started with /etc/clauderon/config.yaml under
// exactly the capability bounding set of scripts/clauderond.service (read
// from the unit, applied with setpriv, no new privileges); a non-root member
// of the clauderon group running `clauderon status` with no flags and no
// environment; an unchanged container on the network getting its answer
// from a fake api.anthropic.com with the injected token; the operator
// changing the token in /etc/clauderon/credentials.env and reloading, with
// no restart. Everything it installs is removed afterwards.
//
// It runs as its own `go test` invocation (scripts/test.sh), never beside
// the main e2e suite: both daemons would own the nft table "clauderon".
package install

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/clauderon/clauderond/scripts/e2e/e2eutil"
	"github.com/clauderon/clauderond/scripts/fakeapi"
)

const (
	opUser  = "clauderon-e2e-op" // the non-root operator the test creates
	marker  = "/etc/clauderon/.installed-by-clauderon-e2e"
	etcDir  = "/etc/clauderon"
	state   = "/var/lib/clauderon"
	unit    = "/etc/systemd/system/clauderond.service"
	network = "clauderon"
	placeID = "sk-ant-oat01-clauderon-proxy-placeholder"
)

func TestOperatorsDay_InstalledUnderTheUnitsCapabilities(t *testing.T) {
	image := e2eutil.RootAndImage(t, "CLAUDERON_E2E_DEBIAN_IMAGE")
	root := e2eutil.RepoRoot(t)
	refuseRealInstall(t)
	t.Cleanup(uninstall)

	// 1. install.sh --no-start, as the README says.
	e2eutil.MustRun(t, 10*time.Minute, "", nil, "bash", filepath.Join(root, "scripts/install.sh"), "--no-start")
	if err := os.WriteFile(marker, nil, 0o600); err != nil {
		t.Fatal(err)
	}
	for _, f := range []string{"/usr/local/bin/clauderond", "/usr/local/bin/clauderon", etcDir + "/config.yaml", etcDir + "/credentials.env", unit} {
		if _, err := os.Stat(f); err != nil {
			t.Fatalf("install.sh did not install %s: %v", f, err)
		}
	}
	if fi, _ := os.Stat(etcDir + "/credentials.env"); fi == nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("credentials.env mode %v, want 0600", fi.Mode())
	}
	if _, err := user.LookupGroup("clauderon"); err != nil {
		t.Fatalf("install.sh created no clauderon group: %v", err)
	}

	// 2. The operator points api.anthropic.com at a fake (an air-gapped
	// site's upstreams override) and writes the token in credentials.env.
	first, second := "sk-ant-oat01-e2e-FIRST-"+e2eutil.RandomHex(12), "sk-ant-oat01-e2e-SECOND-"+e2eutil.RandomHex(12)
	tk := fakeapi.NewTokens(map[string]string{"first": first, "second": second})
	ca, err := fakeapi.NewCA("clauderon e2e install upstream CA")
	if err != nil {
		t.Fatal(err)
	}
	tlsCfg, err := ca.ServerTLS(false, "api.anthropic.com")
	if err != nil {
		t.Fatal(err)
	}
	srv, err := fakeapi.Serve(tk, tlsCfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	if err := ca.WriteFile(etcDir + "/upstream-ca.pem"); err != nil {
		t.Fatal(err)
	}
	editConfig(t, fmt.Sprintf("upstreams:\n  - {host: api.anthropic.com, address: %q, ca_file: %s}\n", srv.Addr, etcDir+"/upstream-ca.pem"))
	writeCredentials(t, first)

	// 3. The installed daemon under the unit's capabilities. Its environment
	// has no credential: it must read credentials.env itself.
	d := startDaemon(t, root)

	// 4. A non-root member of the group: `clauderon status`, no flags, no env.
	addOperator(t)
	out := asOperator(t, "/usr/local/bin/clauderon", "status")
	t.Logf("clauderon status as %s, no flags, no env:\n%s", opUser, out)
	if !strings.Contains(out, ": READY") {
		t.Errorf("clauderon status as %s:\n%s", opUser, out)
	}

	// 5. An unchanged container on the network, holding the placeholder.
	if got := curl(t, image); !strings.Contains(got, "token=first") {
		t.Fatalf("container got %q, want the fake's answer to the injected token (daemon log:\n%s)", got, d.Tail(40))
	}
	for _, args := range [][]string{{"list"}, {"audit", "-n", "5", "--host", "api.anthropic.com"}, {"doctor", "--help"}} {
		got := asOperator(t, append([]string{"/usr/local/bin/clauderon"}, args...)...)
		if args[0] == "audit" && !strings.Contains(got, "api.anthropic.com") {
			t.Errorf("clauderon audit as %s shows no request to api.anthropic.com:\n%s", opUser, got)
		}
	}
	fpBefore := fingerprint(t)
	t.Logf("the container got the fake's answer to the first token; fingerprint %s", fpBefore)

	// 6. The operator rotates the token: edit the file, reload. No restart.
	writeCredentials(t, second)
	if err := d.Cmd.Process.Signal(syscall.SIGHUP); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(20 * time.Second)
	for fingerprint(t) == fpBefore {
		if time.Now().After(deadline) {
			t.Fatalf("the credential's fingerprint did not change within 20s of the reload; log:\n%s", d.Tail(40))
		}
		time.Sleep(200 * time.Millisecond)
	}
	t.Logf("after SIGHUP the fingerprint is %s", fingerprint(t))
	if got := curl(t, image); !strings.Contains(got, "token=second") {
		t.Fatalf("after the reload the container got %q, want the new token injected", got)
	}
	if d.Exited() {
		t.Fatal("the daemon exited; a reload must not restart it")
	}

	// 7. Still no way around it under the reduced capabilities: a host
	// service is refused, and the daemon's log never shows a token.
	if got := dockerRun(t, image, "sh", "-c", "curl -sS -m 5 http://10.213.0.1:22/ 2>&1; echo rc=$?"); !strings.Contains(got, "rc=7") {
		t.Errorf("a container reached a host service: %s", got)
	}
	for _, tok := range []string{first, second} {
		if strings.Contains(d.Log(), tok) {
			t.Error("the daemon log shows a real token")
		}
	}
	for _, s := range tk.Seen() {
		if s == "placeholder" {
			t.Error("the fake upstream received the placeholder")
		}
	}
}

// refuseRealInstall fails when an installation the test did not make is on
// the host: the test removes what it installs and must never remove
// someone's real configuration.
func refuseRealInstall(t *testing.T) {
	t.Helper()
	if _, err := os.Stat(marker); err == nil {
		uninstall() // a crashed earlier run of this test
	}
	for _, p := range []string{etcDir, state, unit, "/usr/local/bin/clauderond"} {
		if _, err := os.Stat(p); err == nil {
			t.Fatalf("%s exists: clauderond looks installed on this host; this test installs and removes it, so it refuses to run here", p)
		}
	}
}

// uninstall removes everything install.sh and the test created, by name.
func uninstall() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if _, err := os.Stat("/usr/local/bin/clauderond"); err == nil {
		exec.CommandContext(ctx, "/usr/local/bin/clauderond", "--config", etcDir+"/config.yaml", "teardown").Run()
	}
	exec.CommandContext(ctx, "docker", "network", "rm", network).Run()
	exec.CommandContext(ctx, "userdel", opUser).Run()
	exec.CommandContext(ctx, "groupdel", "clauderon").Run()
	for _, p := range []string{"/usr/local/bin/clauderond", "/usr/local/bin/clauderon", unit, etcDir, state,
		"/run/clauderon", "/usr/local/share/doc/clauderon"} {
		os.RemoveAll(p)
	}
}

func editConfig(t *testing.T, upstreams string) {
	t.Helper()
	p := etcDir + "/config.yaml"
	data, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	var out []string
	for _, l := range strings.Split(string(data), "\n") {
		if strings.HasPrefix(l, "upstreams:") {
			l = strings.TrimSuffix(upstreams, "\n")
		}
		out = append(out, l)
	}
	if err := os.WriteFile(p, []byte(strings.Join(out, "\n")), 0o644); err != nil {
		t.Fatal(err)
	}
}

// writeCredentials replaces the file the way an editor does (new file,
// rename), keeping it 0600.
func writeCredentials(t *testing.T, token string) {
	t.Helper()
	p := etcDir + "/credentials.env"
	tmp := p + ".new"
	if err := os.WriteFile(tmp, []byte("# test\nCLAUDE_CODE_OAUTH_TOKEN="+token+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, p); err != nil {
		t.Fatal(err)
	}
}

// startDaemon runs the installed clauderond under the unit's
// CapabilityBoundingSet with no new privileges, as systemd would.
func startDaemon(t *testing.T, root string) *e2eutil.Daemon {
	t.Helper()
	caps, err := unitBoundingSet(filepath.Join(root, "scripts/clauderond.service"))
	if err != nil {
		t.Fatal(err)
	}
	argv := []string{"setpriv", "--bounding-set", "-all," + caps, "--inh-caps", "-all", "--no-new-privs", "--",
		"/usr/local/bin/clauderond", "--config", etcDir + "/config.yaml"}
	env := []string{"PATH=/usr/local/bin:/usr/bin:/bin:/usr/sbin:/sbin", "HOME=/root"}
	d := e2eutil.StartDaemon(t, argv, env, func() bool { return exec.Command("/usr/local/bin/clauderon", "status").Run() == nil })
	if strings.Contains(d.Log(), "cannot find host veth") {
		t.Errorf("the daemon could not resolve a host veth under the unit's capabilities (%s):\n%s", caps, d.Tail(40))
	}
	return d
}

// unitBoundingSet reads CapabilityBoundingSet from the unit in setpriv's
// form ("+net_admin,+net_raw").
func unitBoundingSet(path string) (string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	for _, line := range strings.Split(string(data), "\n") {
		if v, ok := strings.CutPrefix(strings.TrimSpace(line), "CapabilityBoundingSet="); ok {
			var caps []string
			for _, c := range strings.Fields(v) {
				caps = append(caps, "+"+strings.ToLower(strings.TrimPrefix(c, "CAP_")))
			}
			return strings.Join(caps, ","), nil
		}
	}
	return "", errors.New(path + " has no CapabilityBoundingSet")
}

func addOperator(t *testing.T) {
	t.Helper()
	e2eutil.MustRun(t, time.Minute, "", nil, "useradd", "--system", "--no-create-home", "--shell", "/usr/sbin/nologin", "-G", "clauderon", opUser)
}

// asOperator runs a command as the group member with an empty environment.
func asOperator(t *testing.T, args ...string) string {
	t.Helper()
	out, err := e2eutil.AsUser(t, opUser, args...)
	if err != nil {
		t.Fatalf("%v as %s: %v\n%s", args, opUser, err, out)
	}
	return out
}

func fingerprint(t *testing.T) string {
	t.Helper()
	out := asOperator(t, "/usr/local/bin/clauderon", "status", "--json")
	var st struct {
		Credentials []struct {
			Profile, Name, Fingerprint string
			Present                    bool
		} `json:"credentials"`
	}
	if err := json.Unmarshal([]byte(out), &st); err != nil {
		t.Fatalf("status --json: %v\n%s", err, out)
	}
	for _, c := range st.Credentials {
		if c.Name == "anthropic" && c.Present {
			return c.Fingerprint
		}
	}
	t.Fatalf("status shows no anthropic credential:\n%s", out)
	return ""
}

func dockerRun(t *testing.T, image string, cmd ...string) string {
	t.Helper()
	args := append([]string{"run", "--rm", "--network", network, "-v", state + "/proxy-ca.pem:/etc/clauderon/proxy-ca.pem:ro",
		"-e", "CLAUDE_CODE_OAUTH_TOKEN=" + placeID, image}, cmd...)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, _ := exec.CommandContext(ctx, "docker", args...).CombinedOutput()
	return string(out)
}

func curl(t *testing.T, image string) string {
	t.Helper()
	return dockerRun(t, image, "sh", "-c",
		`curl -sS --cacert /etc/clauderon/proxy-ca.pem -H "Authorization: Bearer $CLAUDE_CODE_OAUTH_TOKEN" https://api.anthropic.com/v1/messages -d '{}'`)
}
