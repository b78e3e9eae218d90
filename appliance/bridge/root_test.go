package bridge

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"net/netip"
	"os"
	"testing"
	"time"

	"github.com/docker/docker/client"
)

func requireRoot(t *testing.T) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv("CLAUDERON_REQUIRE_ROOT_TESTS") == "1" {
		t.Fatal("test needs root and CLAUDERON_REQUIRE_ROOT_TESTS=1")
	}
	t.Skip("needs root (set CLAUDERON_REQUIRE_ROOT_TESTS=1 to make this a failure)")
}

func TestReal_EnsureAdoptWatchRemove(t *testing.T) {
	requireRoot(t)
	d, err := client.NewClientWithOpts(client.FromEnv, client.WithAPIVersionNegotiation())
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()
	b := make([]byte, 3)
	rand.Read(b)
	s := Spec{Name: "clrt-" + hex.EncodeToString(b), Bridge: "clrt" + hex.EncodeToString(b),
		Subnet: netip.MustParsePrefix(fmt.Sprintf("10.213.%d.0/24", 100+int(b[0])%150))}
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
	time.Sleep(200 * time.Millisecond) // let the subscription start
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
