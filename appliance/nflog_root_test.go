package appliance

import (
	"context"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/clauderon/clauderond/netfilter/nftest"
)

// TestReal_NFLOGWouldDenyReachesAudit logs a packet with our prefix in a
// throwaway network namespace and checks the listener turns it into a
// would-deny record.
func TestReal_NFLOGWouldDenyReachesAudit(t *testing.T) {
	nftest.RequireRoot(t)
	ns := "clrtnflog" + nftest.Suffix()
	run := func(args ...string) { t.Helper(); nftest.MustRun(t, args...) }
	run("ip", "netns", "add", ns)
	t.Cleanup(func() { exec.Command("ip", "netns", "del", ns).Run() })
	run("ip", "-n", ns, "link", "set", "lo", "up")
	run("ip", "netns", "exec", ns, "nft", "add table inet t; add chain inet t out { type filter hook output priority 0; }; "+
		`add rule inet t out ip daddr 127.0.0.1 udp dport 5999 log group 7 prefix "clauderon would-deny: " accept`)

	f, err := os.Open("/run/netns/" + ns)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	ctx, cancel := context.WithCancel(context.Background())
	got := make(chan record, 4)
	done := make(chan error, 1)
	go func() { done <- watchWouldDenyIn(ctx, int(f.Fd()), 7, func(r record) { got <- r }) }()
	deadline := time.After(10 * time.Second)
	for {
		// Send until the listener has bound (the first datagrams may go unlogged).
		exec.Command("ip", "netns", "exec", ns, "bash", "-c", "echo x > /dev/udp/127.0.0.1/5999").Run()
		select {
		case r := <-got:
			if r.Decision != "would-deny" || r.SrcIP != "127.0.0.1" || r.OrigDst != "127.0.0.1:5999" || r.Rule != "forward-udp" {
				t.Errorf("record = %+v", r)
			}
			cancel()
			if err := <-done; err != nil {
				t.Errorf("watchWouldDenyIn = %v, want nil after cancel", err)
			}
			return
		case err := <-done:
			cancel()
			t.Fatalf("listener stopped: %v", err)
		case <-deadline:
			cancel()
			t.Fatal("no would-deny record within 10s")
		case <-time.After(200 * time.Millisecond):
		}
	}
}
