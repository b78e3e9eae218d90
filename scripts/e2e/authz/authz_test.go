//go:build e2e

// Package authz tests clauderond's Docker authorization plugin against the
// real dockerd: the daemon serves the plugin, dockerd is told to use it
// (daemon.json "authorization-plugins", reloaded with SIGHUP), and plain
// `docker run` commands that would escape enforcement are refused with the
// reason while `docker run --network <ours>` still works. dockerd's
// configuration is restored afterwards, also on failure.
//
// It runs as its own `go test` invocation (scripts/test.sh), never beside
// the other e2e suites: while the plugin is on, every Docker request on
// the host goes through it.
package authz

import (
	"encoding/json"
	"errors"
	"fmt"
	"github.com/clauderon/clauderond/scripts/e2e/e2eutil"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"
)

const (
	network    = "clauderon-e2e-authz"
	bridge     = "clauderon-az0"
	subnet     = "10.233.72.0/24"
	pluginName = "clauderon-e2e"
	pluginSock = "/run/docker/plugins/" + pluginName + ".sock"
	daemonJSON = "/etc/docker/daemon.json"
)

func TestAuthz_RefusesEscapesAllowsTheNetwork(t *testing.T) {
	image := e2eutil.RootAndImage(t, "CLAUDERON_E2E_SCRATCH_IMAGE")
	tmp := t.TempDir()
	bin := e2eutil.BuildBinaries(t, tmp)
	state := filepath.Join(tmp, "state")
	cfgPath := filepath.Join(tmp, "config.yaml")
	cfg := fmt.Sprintf(`state_dir: %s
credentials_file: ""
socket: {path: %s}
metrics: {address: ""}
network: {name: %s, bridge: %s, subnet: %s}
authz: {enabled: true, socket: %s}
drain_timeout: 2s
`, state, filepath.Join(tmp, "d.sock"), network, bridge, subnet, pluginSock)
	if err := os.WriteFile(cfgPath, []byte(cfg), 0o600); err != nil {
		t.Fatal(err)
	}
	// Registered first, so it runs last: after the daemon stopped (a
	// running daemon refuses teardown).
	t.Cleanup(func() {
		e2eutil.Teardown(t, bin, cfgPath)
		exec.Command("docker", "network", "rm", network).Run()
	})
	e2eutil.StartDaemon(t, []string{filepath.Join(bin, "clauderond"), "--config", cfgPath}, []string{"PATH=" + os.Getenv("PATH"), "HOME=/root"},
		func() bool {
			return exec.Command(filepath.Join(bin, "clauderon"), "--socket", filepath.Join(tmp, "d.sock"), "status").Run() == nil
		})
	enablePlugin(t, image) // restored before the daemon stops (cleanups run last first)

	dockerOK := func(args ...string) string {
		t.Helper()
		out, err := exec.Command("docker", args...).CombinedOutput()
		if err != nil {
			t.Fatalf("docker %s was refused: %v\n%s", strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	name := "clauderon-e2e-authz-" + e2eutil.RandomHex(3)
	dockerOK("run", "-d", "--name", name, "--network", network, image, "sleep", "60")
	t.Cleanup(func() { exec.Command("docker", "rm", "-f", name).Run() })
	dockerOK("run", "--rm", "--network", network, image, "true")

	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--network", "host"}, "--network host"},
		{[]string{"--network", "container:" + name}, "share another container's address"},
		{[]string{"--network", network, "--privileged"}, "--privileged"},
		{[]string{"--network", network, "--cap-add", "NET_ADMIN"}, "NET_ADMIN"},
		{[]string{"--network", network, "-v", "/var/run/docker.sock:/var/run/docker.sock"}, "docker.sock"},
		{[]string{"--network", network, "-v", state + ":/state"}, state},
		{[]string{"--network", network, "--label", "clauderon.profile=team-b"}, "clauderon.profile is set by clauderond only"},
		{[]string{}, "add --network " + network},
	} {
		args := append(append([]string{"run", "--rm"}, tc.args...), image, "true")
		out, err := exec.Command("docker", args...).CombinedOutput()
		if err == nil || !strings.Contains(string(out), "clauderon: ") || !strings.Contains(string(out), tc.want) {
			t.Errorf("docker %s: err=%v output:\n%s\nwant a refusal naming %q", strings.Join(args, " "), err, out, tc.want)
		}
	}
	out, err := exec.Command("docker", "exec", "--privileged", name, "true").CombinedOutput()
	if err == nil || !strings.Contains(string(out), "--privileged") {
		t.Errorf("docker exec --privileged: %v %s", err, out)
	}
	// clauderond's own containers pass: a session (its labels and its
	// state-dir mounts carry a token), a `clauderon run` (the same), the
	// doctor's probe; a run's user cannot add a protected mount of its own.
	cli := func(args ...string) (string, error) {
		out, err := exec.Command(filepath.Join(bin, "clauderon"), append([]string{"--socket", filepath.Join(tmp, "d.sock")}, args...)...).CombinedOutput()
		return string(out), err
	}
	session := "e2e-authz-" + e2eutil.RandomHex(3)
	t.Cleanup(func() { cli("rm", "-f", session) })
	if out, err := cli("create", "--no-repo", "--name", session, "--image", os.Getenv("CLAUDERON_E2E_DEBIAN_IMAGE"), "--prompt", "hi"); err != nil {
		t.Errorf("a session under the plugin: %v\n%s", err, out)
	}
	if out, err := cli("run", "--rm", image, "true"); err != nil {
		t.Errorf("clauderon run under the plugin: %v\n%s", err, out)
	}
	if out, err := cli("run", "--rm", "-v", state+"/secrets:/s", image, "true"); err == nil || !strings.Contains(out, "clauderon: mounting") {
		t.Errorf("clauderon run with the secrets mounted: %v\n%s", err, out)
	}
	doc, _ := cli("doctor", "--json")
	var rep struct {
		Steps []struct {
			Name   string
			OK     bool
			Detail string
		}
	}
	json.Unmarshal([]byte(doc), &rep)
	// (This daemon has no upstream for api.anthropic.com, so the probe's
	// request itself fails offline; its container must not be refused.)
	sawPlugin := false
	for _, s := range rep.Steps {
		if s.Name == "docker authorization plugin" {
			sawPlugin = s.OK
		}
		if strings.Contains(s.Detail, "clauderon: ") {
			t.Errorf("doctor step %q was refused by the plugin: %s", s.Name, s.Detail)
		}
	}
	if !sawPlugin {
		t.Errorf("doctor does not see dockerd using the plugin:\n%s", doc)
	}
	// The refusals are audited.
	data, _ := os.ReadFile(filepath.Join(state, "audit.jsonl"))
	if n := strings.Count(string(data), `"rule":"authz:`); n < 8 {
		t.Errorf("%d authz refusals in the audit, want at least 8", n)
	}
}

// enablePlugin adds the plugin to dockerd's configuration and reloads it;
// the cleanup puts the file back as it was and reloads again.
func enablePlugin(t *testing.T, image string) {
	t.Helper()
	orig, readErr := os.ReadFile(daemonJSON)
	if readErr != nil && !errors.Is(readErr, os.ErrNotExist) {
		t.Fatal(readErr)
	}
	conf := map[string]any{}
	if len(orig) > 0 {
		if err := json.Unmarshal(orig, &conf); err != nil {
			t.Fatalf("%s: %v", daemonJSON, err)
		}
	}
	plugins, _ := conf["authorization-plugins"].([]any)
	conf["authorization-plugins"] = append(plugins, pluginName)
	data, _ := json.MarshalIndent(conf, "", "  ")
	os.MkdirAll(filepath.Dir(daemonJSON), 0o755)
	if err := os.WriteFile(daemonJSON, data, 0o644); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if errors.Is(readErr, os.ErrNotExist) {
			os.Remove(daemonJSON)
		} else {
			os.WriteFile(daemonJSON, orig, 0o644)
		}
		reloadDockerd(t)
		waitPlugin(t, image, false)
	})
	reloadDockerd(t)
	waitPlugin(t, image, true)
}

func reloadDockerd(t *testing.T) {
	t.Helper()
	b, err := os.ReadFile("/var/run/docker.pid")
	if err != nil {
		t.Fatalf("dockerd's pid: %v", err)
	}
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil {
		t.Fatal(err)
	}
	if err := syscall.Kill(pid, syscall.SIGHUP); err != nil {
		t.Fatalf("SIGHUP dockerd: %v", err)
	}
}

// waitPlugin waits until dockerd does (or no longer does) ask the plugin:
// probed with a request the plugin refuses (`docker info` does not list a
// plugin added by a reload). The probe runs `true` with --network host
// when the plugin is off.
func waitPlugin(t *testing.T, image string, on bool) {
	t.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		out, err := exec.Command("docker", "run", "--rm", "--network", "host", image, "true").CombinedOutput()
		refused := err != nil && strings.Contains(string(out), "clauderon: ")
		if refused == on {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("dockerd did not %s the plugin within 20s: %v %s", map[bool]string{true: "use", false: "drop"}[on], err, out)
		}
		time.Sleep(300 * time.Millisecond)
	}
}
