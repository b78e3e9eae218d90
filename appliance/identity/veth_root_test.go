package identity

import (
	"fmt"
	"net/netip"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/clauderon/clauderond/netfilter/nftest"
)

// TestReal_HostVethFollowsThePeer builds what Docker builds — a veth pair
// with one end, carrying the container address, inside a process's network
// namespace — and checks HostVeth finds the host end from the pid.
func TestReal_HostVethFollowsThePeer(t *testing.T) {
	nftest.RequireRoot(t)
	sfx := nftest.Suffix()
	ns, host, peer := "clrtid"+sfx, "clrth"+sfx, "clrtp"+sfx
	run := func(args ...string) { t.Helper(); nftest.MustRun(t, args...) }
	run("ip", "netns", "add", ns)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
	run("ip", "link", "add", host, "type", "veth", "peer", "name", peer)
	t.Cleanup(func() { exec.Command("ip", "link", "del", host).Run() })
	run("ip", "link", "set", peer, "netns", ns)
	run("ip", "-n", ns, "link", "set", peer, "name", "eth0")
	run("ip", "-n", ns, "addr", "add", "10.213.250.2/24", "dev", "eth0")

	sleeper := exec.Command("ip", "netns", "exec", ns, "sleep", "30")
	if err := sleeper.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sleeper.Process.Kill(); sleeper.Wait() })
	waitInNetns(t, sleeper.Process.Pid, ns)

	got, err := HostVeth(sleeper.Process.Pid, netip.MustParseAddr("10.213.250.2"))
	if err != nil {
		t.Fatalf("HostVeth: %v", err)
	}
	if got != host {
		t.Errorf("HostVeth = %q, want %q", got, host)
	}
	if _, err := HostVeth(sleeper.Process.Pid, netip.MustParseAddr("10.213.250.99")); err == nil {
		t.Error("HostVeth found an interface for an address nobody holds")
	}
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
