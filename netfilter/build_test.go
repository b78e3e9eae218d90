package netfilter

import (
	"flag"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/google/go-cmp/cmp"
)

var update = flag.Bool("update", false, "rewrite testdata golden files")

// baseSpec is the spec every golden starts from.
func baseSpec() Spec {
	return Spec{
		Bridge:  "clauderon0",
		Subnet:  netip.MustParsePrefix("10.213.0.0/24"),
		Gateway: netip.MustParseAddr("10.213.0.1"),
		TLSPort: 8443,
		DNSPort: 8053,
	}
}

var (
	testCIDRs = []AllowCIDR{
		{Prefix: netip.MustParsePrefix("10.50.0.0/16"), Proto: "tcp", Ports: []uint16{22, 8080}},
		{Prefix: netip.MustParsePrefix("192.0.2.10/32")},
		{Prefix: netip.MustParsePrefix("198.51.100.0/24"), Proto: "udp"},
	}
	testPorts = []Port{
		{IfName: "vethb2", Addr: netip.MustParseAddr("10.213.0.3")},
		{IfName: "vetha1", Addr: netip.MustParseAddr("10.213.0.2")},
	}
)

// flagSpec returns the spec for one combination of the four flags and
// the golden file name for it.
func flagSpec(intra, cidrs, audit, ports bool) (Spec, string) {
	s := baseSpec()
	s.AllowIntraBridge, s.AuditMode = intra, audit
	if cidrs {
		s.AllowCIDRs = testCIDRs
	}
	if ports {
		s.Ports = testPorts
	}
	name := fmt.Sprintf("intra=%v,cidrs=%v,audit=%v,ports=%v", intra, cidrs, audit, ports)
	return s, name
}

func allFlagSpecs() map[string]Spec {
	out := map[string]Spec{}
	for i := range 16 {
		s, name := flagSpec(i&1 != 0, i&2 != 0, i&4 != 0, i&8 != 0)
		out[name] = s
	}
	out["cluster"] = clusterSpec()
	return out
}

// clusterSpec is a Kubernetes node's: pods reach each other, the
// Services' 443 is not redirected, one API server endpoint, kubelet probes.
func clusterSpec() Spec {
	s := baseSpec()
	s.AllowIntraBridge, s.Ports = true, testPorts
	s.Cluster = Cluster{
		PodCIDRs:     []netip.Prefix{netip.MustParsePrefix("10.213.0.0/16")},
		ServiceCIDRs: []netip.Prefix{netip.MustParsePrefix("10.96.0.0/12")},
		APIServer:    []netip.AddrPort{netip.MustParseAddrPort("192.0.2.5:6443")},
		HostToPods:   true,
	}
	return s
}

func goldenPath(name string) string {
	r := strings.NewReplacer("=", "_", ",", "-")
	return filepath.Join("testdata", "build", r.Replace(name)+".nft")
}

// checkGolden compares got with the golden file, or rewrites it with -update.
func checkGolden(t *testing.T, path, got string) {
	t.Helper()
	if *update {
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(path, []byte(got), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	want, err := os.ReadFile(path)
	if err != nil {
		t.Fatalf("reading golden (run with -update to create): %v", err)
	}
	if diff := cmp.Diff(string(want), got); diff != "" {
		t.Errorf("%s mismatch (-want +got):\n%s", path, diff)
	}
}

func TestBuild_Golden(t *testing.T) {
	for name, s := range allFlagSpecs() {
		t.Run(name, func(t *testing.T) {
			rs, err := Build(s)
			if err != nil {
				t.Fatalf("Build: %v", err)
			}
			checkGolden(t, goldenPath(name), rs.String())
		})
	}
}

func TestBuild_ListenerMark(t *testing.T) {
	for _, tc := range []struct {
		mark uint32
		want string
	}{{0, "socket mark != 0x636c6472"}, {0x42, "socket mark != 0x00000042"}} {
		s := baseSpec()
		s.ListenerMark = tc.mark
		rs, err := Build(s)
		if err != nil {
			t.Fatalf("Build: %v", err)
		}
		if got := strings.Count(rs.String(), tc.want); got != 2 {
			t.Errorf("ListenerMark %#x: %q appears %d times, want 2 (tcp and udp listener rules)", tc.mark, tc.want, got)
		}
	}
}

// TestBuild_EveryRuleCountedAndCommented keeps the contract for the new
// chains and the arp table too.
func TestBuild_EveryRuleCountedAndCommented(t *testing.T) {
	for name, s := range allFlagSpecs() {
		rs, err := Build(s)
		if err != nil {
			t.Fatalf("%s: Build: %v", name, err)
		}
		fams := map[Family]bool{}
		for _, tb := range rs.Tables {
			fams[tb.Family] = true
			for _, c := range tb.Chains {
				for _, r := range c.Rules {
					if !r.Counter || !strings.HasPrefix(r.Comment, commentPrefix) {
						t.Errorf("%s: %s/%s rule %q lacks a counter or our comment", name, tb.Family, c.Name, r)
					}
				}
			}
		}
		if !fams[FamilyInet] || !fams[FamilyBridge] || !fams[FamilyARP] {
			t.Errorf("%s: tables %v, want inet, bridge and arp", name, fams)
		}
	}
}
