package identity

import (
	"errors"
	"strings"
	"testing"

	"github.com/vishvananda/netlink"
)

type fakeLinks struct {
	links []netlink.Link
	nsid  int
	err   error
}

func (f fakeLinks) LinkByName(name string) (netlink.Link, error) {
	for _, l := range f.links {
		if l.Attrs().Name == name {
			return l, nil
		}
	}
	return nil, errors.New("no such link")
}
func (f fakeLinks) LinkList() ([]netlink.Link, error) { return f.links, nil }
func (f fakeLinks) GetNetNsIdByPid(int) (int, error)  { return f.nsid, f.err }

func veth(name string, index, master, nsid int) netlink.Link {
	return &netlink.Veth{LinkAttrs: netlink.LinkAttrs{Name: name, Index: index, MasterIndex: master, NetNsID: nsid}}
}

func TestBridgeVeth_PicksTheBridgePortIntoThePidsNamespace(t *testing.T) {
	br := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "clauderon0", Index: 2, NetNsID: -1}}
	other := &netlink.Bridge{LinkAttrs: netlink.LinkAttrs{Name: "docker0", Index: 3, NetNsID: -1}}
	links := []netlink.Link{br, other,
		veth("vethA", 10, 2, 7), // the container's port
		veth("vethB", 11, 2, 8), // another container
		veth("vethC", 12, 3, 7), // the same namespace, another network
		veth("vethD", 13, 0, 7), // the same namespace, on no bridge
	}
	for _, tc := range []struct {
		name    string
		f       fakeLinks
		want    string
		wantErr string
	}{
		{"found", fakeLinks{links: links, nsid: 7}, "vethA", ""},
		{"other container", fakeLinks{links: links, nsid: 8}, "vethB", ""},
		{"no port on our bridge", fakeLinks{links: links, nsid: 9}, "", "no veth on clauderon0"},
		{"no nsid", fakeLinks{links: links, nsid: -1}, "", "no namespace id"},
		{"lookup fails", fakeLinks{links: links, err: errors.New("ESRCH")}, "", "ESRCH"},
		{"two ports", fakeLinks{links: append(links, veth("vethE", 14, 2, 7)), nsid: 7}, "", "refusing to pick"},
		{"no bridge", fakeLinks{links: links[1:], nsid: 7}, "", "bridge clauderon0"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := bridgeVeth(tc.f, "clauderon0", 42)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("bridgeVeth = %q, %v; want an error with %q", got, err, tc.wantErr)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("bridgeVeth = %q, %v; want %q", got, err, tc.want)
			}
		})
	}
}
