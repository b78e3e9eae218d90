package netfilter

import (
	"context"
	"errors"
	"math/rand/v2"
	"net"
	"net/netip"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"

	"github.com/clauderon/clauderond/netfilter/nftest"
)

// stateNames returns the golden state names in a random (seeded, logged)
// order, each visited twice so that every state is also re-applied over
// itself.
func shuffledStates(t *testing.T) []string {
	seed := rand.Uint64()
	t.Logf("transition order seed %d", seed)
	rng := rand.New(rand.NewPCG(seed, seed))
	var names []string
	for name := range allFlagSpecs() {
		names = append(names, name, name)
	}
	slices.Sort(names)
	rng.Shuffle(len(names), func(i, j int) { names[i], names[j] = names[j], names[i] })
	return names
}

// TestTransitions visits every flag combination in random order against
// the Fake: each Apply leaves exactly that state's ruleset, whatever came
// before, and Verify sees it intact.
func TestTransitions(t *testing.T) {
	ctx := context.Background()
	specs := allFlagSpecs()
	var f Fake
	for _, name := range shuffledStates(t) {
		s := specs[name]
		if err := f.Apply(ctx, s); err != nil {
			t.Fatalf("%s: Apply: %v", name, err)
		}
		d, err := f.Verify(ctx, s)
		if err != nil || !d.Intact() {
			t.Fatalf("%s: Verify = %v, %v; want intact", name, d, err)
		}
		for other, os := range specs {
			if other == name {
				continue
			}
			if d, _ := f.Verify(ctx, os); d.Intact() {
				t.Errorf("after applying %s, Verify(%s) is intact; states must differ", name, other)
			}
		}
	}
}

// TestKernel_Transitions does the same against the kernel, in a netns
// whose bridge and port names match the goldens, and compares `nft -s
// list table` with testdata/kernel goldens after each step.
func TestKernel_Transitions(t *testing.T) {
	host, restore := nftest.InNetNS(t)
	defer restore()
	makeGoldenLinks(t, host)
	k, err := NewKernel(KernelConfig{NetNS: host, Logger: testLogger(t)})
	if err != nil {
		t.Fatal(err)
	}
	ctx := context.Background()
	specs := allFlagSpecs()
	const table = "cl_transitions" // not a word of any comment: NFTList rewrites it
	for _, name := range shuffledStates(t) {
		s := specs[name]
		s.Table = table
		if err := k.Apply(ctx, s); err != nil {
			t.Fatalf("%s: Apply: %v", name, err)
		}
		if d, err := k.Verify(ctx, s); err != nil || !d.Intact() {
			t.Fatalf("%s: Verify = %v, %v; want intact", name, d, err)
		}
		got := nftest.NFTList(t, host, "inet", table) + "\n" + nftest.NFTList(t, host, "bridge", table) + "\n" + nftest.NFTList(t, host, "arp", table)
		checkGolden(t, filepath.Join("testdata", "kernel", strings.TrimPrefix(goldenPath(name), filepath.Join("testdata", "build")+"/")), got)
		checkIsolation(t, host, s)
	}
	if err := k.Teardown(ctx); err != nil {
		t.Fatalf("Teardown: %v", err)
	}
	checkIsolation(t, host, Spec{AllowIntraBridge: true, Ports: testPorts})
	if err := k.Teardown(ctx); !errors.Is(err, ErrNotApplied) {
		t.Fatalf("second Teardown = %v, want ErrNotApplied", err)
	}
}

// makeGoldenLinks creates bridge clauderon0 with ports vetha1 and vethb2
// (the names the goldens use) in ns.
func makeGoldenLinks(t *testing.T, ns netns.NsHandle) {
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: baseSpec().Bridge}}
	if err := h.LinkAdd(br); err != nil {
		t.Fatalf("adding bridge: %v", err)
	}
	for _, p := range testPorts {
		veth := &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: p.IfName, MasterIndex: br.Index}, PeerName: p.IfName + "p"}
		if err := h.LinkAdd(veth); err != nil {
			t.Fatalf("adding veth %s: %v", p.IfName, err)
		}
	}
	if err := h.AddrAdd(br, &netlink.Addr{IPNet: netipToNet(netip.PrefixFrom(baseSpec().Gateway, 24))}); err != nil {
		t.Fatal(err)
	}
}

// checkIsolation asserts the netlink isolation flag of the bridge's ports
// follows AllowIntraBridge, whether or not the spec lists them.
func checkIsolation(t *testing.T, ns netns.NsHandle, s Spec) {
	t.Helper()
	h, err := netlink.NewHandleAt(ns)
	if err != nil {
		t.Fatal(err)
	}
	defer h.Close()
	for _, p := range testPorts {
		l, err := h.LinkByName(p.IfName)
		if err != nil {
			t.Fatal(err)
		}
		pi, err := h.LinkGetProtinfo(l)
		if err != nil {
			t.Fatalf("protinfo %s: %v", p.IfName, err)
		}
		if pi.Isolated != !s.AllowIntraBridge {
			t.Errorf("port %s isolated = %v, want %v", p.IfName, pi.Isolated, !s.AllowIntraBridge)
		}
	}
}

func netipToNet(p netip.Prefix) *net.IPNet {
	return &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), p.Addr().BitLen())}
}
