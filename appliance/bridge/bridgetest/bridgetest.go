// Package bridgetest holds test-only helpers for tests that create Docker
// networks on a real daemon. Production code must never import it (the root
// deps test enforces it).
package bridgetest

import (
	"context"
	"crypto/rand"
	"net/netip"
	"slices"
	"testing"

	"github.com/docker/docker/api/types/network"
	"github.com/docker/docker/client"
)

// FreeSubnet returns a 10.213.X.0/24, X in [lo, hi), that no docker network
// overlaps (a network a crashed run left behind, say). Packages whose tests
// go test may run at the same time draw from disjoint ranges so they cannot
// pick the same one.
func FreeSubnet(t testing.TB, d *client.Client, lo, hi int) netip.Prefix {
	t.Helper()
	nets, err := d.NetworkList(context.Background(), network.ListOptions{})
	if err != nil {
		t.Fatalf("listing docker networks: %v", err)
	}
	var used []netip.Prefix
	for _, n := range nets {
		for _, c := range n.IPAM.Config {
			if p, err := netip.ParsePrefix(c.Subnet); err == nil {
				used = append(used, p)
			}
		}
	}
	b := make([]byte, 1)
	rand.Read(b)
	for i := range hi - lo {
		p := netip.PrefixFrom(netip.AddrFrom4([4]byte{10, 213, byte(lo + (int(b[0])+i)%(hi-lo)), 0}), 24)
		if !slices.ContainsFunc(used, p.Overlaps) {
			return p
		}
	}
	t.Fatalf("no free subnet in 10.213.%d-%d.0/24", lo, hi-1)
	return netip.Prefix{}
}
