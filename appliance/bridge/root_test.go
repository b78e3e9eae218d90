package bridge

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"testing"
	"time"

	"github.com/docker/docker/client"
	"github.com/vishvananda/netlink"

	"github.com/clauderon/clauderond/appliance/bridge/bridgetest"
	"github.com/clauderon/clauderond/netfilter/nftest"
)

func TestReal_EnsureAdoptWatchRemove(t *testing.T) {
	nftest.RequireRoot(t)
	d, err := client.NewClientWithOpts(client.FromEnv, client.WithAPIVersionNegotiation())
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	b := make([]byte, 3)
	rand.Read(b)
	s := Spec{Name: "clrt-" + hex.EncodeToString(b), Bridge: "clrt" + hex.EncodeToString(b),
		Subnet: bridgetest.FreeSubnet(t, d, 100, 150)}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	t.Cleanup(func() { _ = Remove(context.Background(), d, s.Name) })

	n, err := Ensure(ctx, d, s)
	if err != nil {
		t.Fatalf("Ensure: %v", err)
	}
	if _, err := WaitGateway(ctx, s.Bridge, n.Gateway, 5*time.Second); err != nil {
		t.Fatalf("WaitGateway: %v", err)
	}
	n2, err := Ensure(ctx, d, s)
	if err != nil || n2.Created || n2.ID != n.ID {
		t.Fatalf("Ensure again = %+v, %v; want adopted %s", n2, err, n.ID)
	}
	wrong := s
	wrong.AllowIntraBridge = true
	if _, err := Ensure(ctx, d, wrong); err == nil {
		t.Fatal("Ensure with allow_intra_bridge flipped adopted the network, want a mismatch error")
	}

	events := make(chan LinkEvent, 16)
	wctx, wcancel := context.WithCancel(ctx)
	werr := make(chan error, 1)
	go func() { werr <- WatchLink(wctx, s.Bridge, func(e LinkEvent) { events <- e }, nil) }()
	// WatchLink gives no sign of having subscribed: change the link's alias
	// until an event for it arrives, so the removal cannot happen before.
	link, err := netlink.LinkByName(s.Bridge)
	if err != nil {
		t.Fatal(err)
	}
	for i, deadline := 0, time.Now().Add(10*time.Second); ; i++ {
		if err := netlink.LinkSetAlias(link, fmt.Sprintf("clrt-watch-%d", i)); err != nil {
			t.Fatalf("setting the bridge's alias: %v", err)
		}
		select {
		case <-events:
		case err := <-werr:
			t.Fatalf("WatchLink = %v before any event", err)
		case <-time.After(100 * time.Millisecond):
			if time.Now().After(deadline) {
				t.Fatal("no link event within 10s of changing the bridge's alias")
			}
			continue
		}
		break
	}
	if err := Remove(ctx, d, s.Name); err != nil {
		t.Fatalf("Remove: %v", err)
	}
	deadline := time.After(5 * time.Second)
	for deleted := false; !deleted; {
		select {
		case e := <-events:
			deleted = e.Deleted
		case <-deadline:
			t.Fatal("no link deletion event within 5s of removing the network")
		}
	}
	wcancel()
	if err := <-werr; err != nil {
		t.Errorf("WatchLink = %v, want nil on cancel", err)
	}
}
