package identity

import (
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"strings"
	"testing"
	"time"

	"github.com/clauderon/clauderond/netfilter/nftest"
)

// TestReal_BridgeVethFollowsThePeerNamespace builds what Docker builds — a
// bridge, and per container a veth pair with one end inside a process's
// network namespace — plus decoys (another namespace on the same bridge, a
// veth from the container's namespace to a host end on no bridge), and
// checks BridgeVeth finds the container's host end from its pid alone.
func TestReal_BridgeVethFollowsThePeerNamespace(t *testing.T) {
	nftest.RequireRoot(t)
	br, pid, want, other := vethFixture(t)
	got, err := BridgeVeth(br)(pid, netip.Addr{})
	if err != nil {
		t.Fatalf("BridgeVeth: %v", err)
	}
	if got != want {
		t.Errorf("BridgeVeth = %q, want %q", got, want)
	}
	if got, err := BridgeVeth(br)(other, netip.Addr{}); err != nil || got == want {
		t.Errorf("BridgeVeth for the other namespace = %q, %v; want its own veth", got, err)
	}
	if got, err := BridgeVeth(br)(os.Getpid(), netip.Addr{}); err == nil {
		t.Errorf("BridgeVeth for a process in the host namespace = %q, want an error", got)
	}
}

// TestReal_BridgeVethUnderTheUnitsCapabilities: the installed daemon runs
// with exactly the unit's CapabilityBoundingSet and NoNewPrivileges, which
// do not allow entering a container's namespace. The resolver must work
// there all the same. The resolution runs in a child process started under
// those limits (setpriv), with the set read from scripts/clauderond.service.
func TestReal_BridgeVethUnderTheUnitsCapabilities(t *testing.T) {
	if os.Getenv("CLAUDERON_VETH_CHILD") != "" {
		vethChild()
		return
	}
	nftest.RequireRoot(t)
	setpriv, err := exec.LookPath("setpriv")
	if err != nil {
		t.Fatalf("setpriv (util-linux) is needed: %v", err)
	}
	caps, err := unitBoundingSet("../../scripts/clauderond.service")
	if err != nil {
		t.Fatal(err)
	}
	br, pid, want, _ := vethFixture(t)
	cmd := exec.Command(setpriv, "--bounding-set", "-all,"+caps, "--inh-caps", "-all", "--no-new-privs", "--",
		os.Args[0], "-test.run=^TestReal_BridgeVethUnderTheUnitsCapabilities$")
	cmd.Env = append(os.Environ(), "CLAUDERON_VETH_CHILD=1", fmt.Sprintf("CLAUDERON_VETH_ARGS=%s %d", br, pid))
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("child under the unit's capabilities (%s): %v\n%s", caps, err, out)
	}
	if !strings.Contains(string(out), "veth="+want+"\n") {
		t.Errorf("child under the unit's capabilities said:\n%s\nwant veth=%s", out, want)
	}
	if !strings.Contains(string(out), "netns-open=denied") {
		t.Errorf("the child could open the container's namespace, so this test proves nothing:\n%s", out)
	}
}

// vethChild runs in the child of TestReal_BridgeVethUnderTheUnitsCapabilities.
func vethChild() {
	var br string
	var pid int
	fmt.Sscanf(os.Getenv("CLAUDERON_VETH_ARGS"), "%s %d", &br, &pid)
	if f, err := os.Open(fmt.Sprintf("/proc/%d/ns/net", pid)); err != nil {
		fmt.Println("netns-open=denied")
	} else {
		f.Close()
		fmt.Println("netns-open=allowed")
	}
	got, err := BridgeVeth(br)(pid, netip.Addr{})
	if err != nil {
		fmt.Println("error:", err)
		os.Exit(1)
	}
	fmt.Printf("veth=%s\n", got)
}

// unitBoundingSet reads CapabilityBoundingSet from a systemd unit and
// returns it in setpriv's form ("+net_admin,+net_raw").
func unitBoundingSet(path string) (string, error) {
	data, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	for _, line := range strings.Split(string(data), "\n") {
		v, ok := strings.CutPrefix(strings.TrimSpace(line), "CapabilityBoundingSet=")
		if !ok {
			continue
		}
		var caps []string
		for _, c := range strings.Fields(v) {
			caps = append(caps, "+"+strings.ToLower(strings.TrimPrefix(c, "CAP_")))
		}
		return strings.Join(caps, ","), nil
	}
	return "", fmt.Errorf("%s has no CapabilityBoundingSet", path)
}

// vethFixture makes a bridge with two "containers" (processes in their own
// network namespaces, each with a veth on the bridge) and a veth from the
// first namespace to a host end on no bridge. It returns the bridge, the
// first container's pid, its host veth, and the second container's pid.
func vethFixture(t *testing.T) (bridge string, pid int, hostVeth string, otherPid int) {
	t.Helper()
	sfx := nftest.Suffix()
	bridge = "clrtb" + sfx
	run := func(args ...string) { t.Helper(); nftest.MustRun(t, args...) }
	run("ip", "link", "add", bridge, "type", "bridge")
	t.Cleanup(func() { exec.Command("ip", "link", "del", bridge).Run() })
	container := func(n string, onBridge bool) (pid int, host string) {
		ns, host, peer := "clrtid"+n+sfx, "clrth"+n+sfx, "clrtp"+n+sfx
		run("ip", "netns", "add", ns)
		t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
		run("ip", "link", "add", host, "type", "veth", "peer", "name", peer)
		t.Cleanup(func() { exec.Command("ip", "link", "del", host).Run() })
		run("ip", "link", "set", peer, "netns", ns)
		if onBridge {
			run("ip", "link", "set", host, "master", bridge)
		}
		sleeper := exec.Command("ip", "netns", "exec", ns, "sleep", "60")
		if err := sleeper.Start(); err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { sleeper.Process.Kill(); sleeper.Wait() })
		waitInNetns(t, sleeper.Process.Pid, ns)
		return sleeper.Process.Pid, host
	}
	pid, hostVeth = container("a", true)
	otherPid, _ = container("b", true)
	// A second veth out of a's namespace, not on the bridge: not a's port.
	decoyHost, decoyPeer := "clrthd"+sfx, "clrtpd"+sfx
	run("ip", "link", "add", decoyHost, "type", "veth", "peer", "name", decoyPeer)
	t.Cleanup(func() { exec.Command("ip", "link", "del", decoyHost).Run() })
	run("ip", "link", "set", decoyPeer, "netns", fmt.Sprint(pid))
	return bridge, pid, hostVeth, otherPid
}

// waitInNetns waits until pid has entered the named network namespace:
// `ip netns exec` switches namespaces some time after it was started.
func waitInNetns(t *testing.T, pid int, ns string) {
	t.Helper()
	want, err := os.Stat("/run/netns/" + ns)
	if err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); ; time.Sleep(5 * time.Millisecond) {
		if got, err := os.Stat(fmt.Sprintf("/proc/%d/ns/net", pid)); err == nil && os.SameFile(got, want) {
			return
		}
		if time.Now().After(deadline) {
			t.Fatalf("pid %d not in network namespace %s within 10s", pid, ns)
		}
	}
}
