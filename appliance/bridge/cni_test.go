package bridge

import (
	"errors"
	"net"
	"net/netip"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
)

type fakeLinks struct {
	links []netlink.Link
	addrs map[string][]string
}

func (f fakeLinks) LinkList() ([]netlink.Link, error) { return f.links, nil }
func (f fakeLinks) AddrList(l netlink.Link, _ int) ([]netlink.Addr, error) {
	var out []netlink.Addr
	for _, s := range f.addrs[l.Attrs().Name] {
		p := netip.MustParsePrefix(s)
		out = append(out, netlink.Addr{IPNet: &net.IPNet{IP: p.Addr().AsSlice(), Mask: net.CIDRMask(p.Bits(), 32)}})
	}
	return out, nil
}

func TestAdoptCNI(t *testing.T) {
	subnet := netip.MustParsePrefix("10.244.1.0/24")
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "cni0"}}
	dummy := &netlink.Dummy{LinkAttrs: netlink.LinkAttrs{Name: "cni0"}}
	for _, tc := range []struct {
		name        string
		links       fakeLinks
		wantGW      string
		wantPending bool
		wantErr     string
	}{
		{"bridge with its gateway", fakeLinks{links: []netlink.Link{br}, addrs: map[string][]string{"cni0": {"10.244.1.1/24"}}}, "10.244.1.1", false, ""},
		{"gateway not first host", fakeLinks{links: []netlink.Link{br}, addrs: map[string][]string{"cni0": {"10.244.1.254/24"}}}, "10.244.1.254", false, ""},
		{"no bridge yet", fakeLinks{}, "10.244.1.1", true, ""},
		{"bridge without address yet", fakeLinks{links: []netlink.Link{br}}, "10.244.1.1", true, ""},
		{"wrong subnet", fakeLinks{links: []netlink.Link{br}, addrs: map[string][]string{"cni0": {"10.9.0.1/24"}}}, "", false, "none in network.subnet"},
		{"not a bridge", fakeLinks{links: []netlink.Link{dummy}}, "", false, "is a dummy link"},
		{"cilium", fakeLinks{links: []netlink.Link{&netlink.Dummy{LinkAttrs: netlink.LinkAttrs{Name: "cilium_host"}}}}, "", false, "Cilium"},
		{"ipvs", fakeLinks{links: []netlink.Link{br, &netlink.Dummy{LinkAttrs: netlink.LinkAttrs{Name: "kube-ipvs0"}}}}, "", false, "IPVS mode"},
		{"calico", fakeLinks{links: []netlink.Link{&netlink.Dummy{LinkAttrs: netlink.LinkAttrs{Name: "cali12345"}}}}, "", false, "Calico"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			n, err := AdoptCNI(tc.links, "cni0", subnet)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("err = %v, want one containing %q", err, tc.wantErr)
				}
				if errors.Is(err, ErrNoLinuxBridge) == (tc.name == "wrong subnet" || tc.name == "ipvs") {
					t.Errorf("err = %v: ErrNoLinuxBridge only when the CNI has no Linux bridge", err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if n.Gateway.String() != tc.wantGW || n.Pending != tc.wantPending || n.Bridge != "cni0" || n.Subnet != subnet {
				t.Errorf("got %+v, want gateway %s pending %v", n, tc.wantGW, tc.wantPending)
			}
		})
	}
}

func TestAdoptCNI_AutoSubnet(t *testing.T) {
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "cni0"}}
	n, err := AdoptCNI(fakeLinks{links: []netlink.Link{br}, addrs: map[string][]string{"cni0": {"10.244.3.1/24"}}}, "cni0", netip.Prefix{})
	if err != nil || n.Pending || n.Subnet.String() != "10.244.3.0/24" || n.Gateway.String() != "10.244.3.1" {
		t.Errorf("auto from the bridge: %+v, %v", n, err)
	}
	n, err = AdoptCNI(fakeLinks{}, "cni0", netip.Prefix{})
	if err != nil || !n.Pending || n.Subnet.IsValid() || n.Gateway.IsValid() {
		t.Errorf("auto without a bridge: %+v, %v; want pending with no subnet", n, err)
	}
}

// TestConsistent_RetriesAnInterruptedDump: a dump the kernel interrupted
// (links changed meanwhile) is read again; a steady failure is returned.
func TestConsistent_RetriesAnInterruptedDump(t *testing.T) {
	calls := 0
	got, err := consistent(func() ([]int, error) {
		calls++
		if calls < 3 {
			return []int{1}, netlink.ErrDumpInterrupted
		}
		return []int{1, 2}, nil
	})
	if err != nil || len(got) != 2 || calls != 3 {
		t.Errorf("consistent = %v, %v after %d calls; want the whole dump on the third", got, err, calls)
	}
	calls = 0
	if _, err := consistent(func() ([]int, error) { calls++; return nil, netlink.ErrDumpInterrupted }); !errors.Is(err, netlink.ErrDumpInterrupted) || calls != 5 {
		t.Errorf("always interrupted: err %v after %d calls, want ErrDumpInterrupted after 5", err, calls)
	}
}
