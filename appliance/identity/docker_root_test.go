package identity

import (
	"archive/tar"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"io"
	"net/netip"
	"os"
	"slices"
	"testing"
	"time"

	"github.com/docker/docker/api/types/container"
	"github.com/docker/docker/api/types/image"
	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/client"

	"github.com/clauderon/clauderond/netfilter/nftest"
)

// sleeperImage imports a FROM-scratch image holding the host's static
// busybox (no registry).
func sleeperImage(t *testing.T, dc *client.Client, ref string) {
	t.Helper()
	bb, err := os.ReadFile("/bin/busybox")
	if err != nil {
		t.Fatalf("busybox-static not installed: %v", err)
	}
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, h := range []*tar.Header{
		{Typeflag: tar.TypeDir, Name: "bin/", Mode: 0o755},
		{Typeflag: tar.TypeReg, Name: "bin/busybox", Mode: 0o755, Size: int64(len(bb))},
		{Typeflag: tar.TypeSymlink, Name: "bin/sleep", Linkname: "busybox", Mode: 0o777},
	} {
		h.ModTime = time.Unix(0, 0)
		if err := tw.WriteHeader(h); err != nil {
			t.Fatal(err)
		}
		if h.Typeflag == tar.TypeReg {
			tw.Write(bb)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	rc, err := dc.ImageImport(context.Background(), image.ImportSource{Source: &buf, SourceName: "-"}, ref, image.ImportOptions{})
	if err != nil {
		t.Fatalf("importing test image: %v", err)
	}
	_, _ = io.Copy(io.Discard, rc)
	rc.Close()
	t.Cleanup(func() { dc.ImageRemove(context.Background(), ref, image.RemoveOptions{Force: true}) })
}

// TestReal_SecondNetworkRevokesTrust drives real Docker: a container on our
// (test) network is vouched for; `docker network connect` to another
// network revokes that within the event latency, `disconnect` restores it,
// and `docker kill` forgets it. Names are unique per run so a daemon using
// the real clauderon network is not disturbed.
func TestReal_SecondNetworkRevokesTrust(t *testing.T) {
	nftest.RequireRoot(t)
	dc, err := client.NewClientWithOpts(client.FromEnv, client.WithAPIVersionNegotiation())
	if err != nil {
		t.Fatal(err)
	}
	defer dc.Close()
	ctx := context.Background()
	b := make([]byte, 4)
	rand.Read(b)
	sfx := hex.EncodeToString(b)
	ours, other, img := "clrt-idn-"+sfx, "clrt-ido-"+sfx, "clauderon-idtest:"+sfx
	sleeperImage(t, dc, img)
	for _, n := range []string{ours, other} {
		if _, err := dc.NetworkCreate(ctx, n, network.CreateOptions{Driver: "bridge"}); err != nil {
			t.Fatalf("creating network %s: %v", n, err)
		}
		t.Cleanup(func() { dc.NetworkRemove(context.Background(), n) })
	}
	created, err := dc.ContainerCreate(ctx, &container.Config{Image: img, Cmd: []string{"sleep", "60"}},
		&container.HostConfig{NetworkMode: container.NetworkMode(ours)}, nil, nil, "clrt-idc-"+sfx)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		dc.ContainerRemove(context.Background(), created.ID, container.RemoveOptions{Force: true})
	})

	tb := New(Config{Docker: dc, Network: ours, MissRefresh: -1})
	rctx, cancel := context.WithCancel(ctx)
	done := make(chan error, 1)
	go func() { done <- tb.Run(rctx) }()
	defer func() { cancel(); <-done }()
	// No wait for the subscription: Run subscribes, then lists, so a start
	// before either is found by the list and one after by the event.

	if err := dc.ContainerStart(ctx, created.ID, container.StartOptions{}); err != nil {
		t.Fatal(err)
	}
	ins, err := dc.ContainerInspect(ctx, created.ID)
	if err != nil {
		t.Fatal(err)
	}
	ip := netip.MustParseAddr(ins.NetworkSettings.Networks[ours].IPAddress)
	eventually := func(what string, cond func() bool) {
		t.Helper()
		deadline := time.Now().Add(10 * time.Second)
		for !cond() {
			if time.Now().After(deadline) {
				t.Fatalf("%s: not within 10s; table: %+v", what, tb.List())
			}
			time.Sleep(20 * time.Millisecond)
		}
	}
	vouched := func() bool { _, ok := tb.Lookup(ip); return ok }
	eventually("started container vouched for", vouched)

	if err := dc.NetworkConnect(ctx, other, created.ID, nil); err != nil {
		t.Fatal(err)
	}
	eventually("trust revoked after network connect", func() bool { return !vouched() })
	c, _ := tb.Lookup(ip)
	if !slices.Equal(c.OtherNetworks, []string{other}) || c.Refusal(ours) == "" {
		t.Errorf("refused container = %+v, want OtherNetworks [%s] and a refusal", c, other)
	}

	if err := dc.NetworkDisconnect(ctx, other, created.ID, false); err != nil {
		t.Fatal(err)
	}
	eventually("trust restored after disconnect", vouched)

	if err := dc.ContainerKill(ctx, created.ID, "KILL"); err != nil {
		t.Fatal(err)
	}
	eventually("forgotten after kill", func() bool { return len(tb.List()) == 0 })
}
