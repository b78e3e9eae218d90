package identity

import (
	"context"
	"net/netip"
	"strings"
	"testing"

	"github.com/docker/docker/api/types/events"

	"github.com/clauderon/clauderond/appliance/internal/testutil"
)

// TestSharedNamespace_BothRefused: a container started with
// --network container:<victim> speaks with the victim's address, so the
// victim gets no credential while it is there, and again once it leaves.
func TestSharedNamespace_BothRefused(t *testing.T) {
	f := newFake()
	f.put("victimid000000000000", "victim", "10.213.0.5", true, nil)
	tb := New(Config{Docker: f, Network: testNet, MissRefresh: -1})
	if err := tb.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	addr := netip.MustParseAddr("10.213.0.5")
	if _, ok := tb.Lookup(addr); !ok {
		t.Fatal("victim alone is not vouched for")
	}

	// By name, through a full sync.
	f.putJoiner("joinerid00000000000", "sidecar", "victim")
	if err := tb.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	c, ok := tb.Lookup(addr)
	if ok || !strings.Contains(c.Refusal(testNet), "sidecar") {
		t.Fatalf("victim with a namespace sharer: ok=%v refusal %q", ok, c.Refusal(testNet))
	}
	f.del("joinerid00000000000")
	if err := tb.Sync(context.Background()); err != nil {
		t.Fatal(err)
	}
	if _, ok := tb.Lookup(addr); !ok {
		t.Fatal("victim still refused after the sharer left")
	}

	// By ID, through the events stream: start, then die.
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- tb.Run(ctx) }()
	defer func() { cancel(); <-done }()
	stream := <-f.streams
	<-f.errStreams
	testutil.WaitFor(t, "stream back", func() bool { return !tb.StreamDown() })
	f.putJoiner("joiner2id0000000000", "debugger", "victimid000000000000")
	stream <- events.Message{Type: events.ContainerEventType, Action: events.ActionStart, Actor: events.Actor{ID: "joiner2id0000000000", Attributes: map[string]string{"name": "debugger"}}}
	testutil.WaitFor(t, "victim refused after the sharer's start event", func() bool { _, ok := tb.Lookup(addr); return !ok })
	f.del("joiner2id0000000000")
	stream <- events.Message{Type: events.ContainerEventType, Action: events.ActionDie, Actor: events.Actor{ID: "joiner2id0000000000", Attributes: map[string]string{"name": "debugger"}}}
	testutil.WaitFor(t, "victim vouched for after the sharer's die event", func() bool { _, ok := tb.Lookup(addr); return ok })
}
