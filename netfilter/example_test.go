package netfilter_test

import (
	"context"
	"fmt"
	"net/netip"
	"strings"

	"github.com/clauderon/clauderond/netfilter"
)

// The appliance builds a Spec from config and the Docker network, applies
// it once at start (and on SIGHUP), keeps the ports current on Docker
// events, and checks for drift periodically.
func Example() {
	spec := netfilter.Spec{
		Bridge:  "clauderon0",
		Subnet:  netip.MustParsePrefix("10.213.0.0/24"),
		Gateway: netip.MustParseAddr("10.213.0.1"),
		TLSPort: 8443,
		DNSPort: 8053,
	}
	var m netfilter.Manager = &netfilter.Fake{} // netfilter.NewKernel() in production
	ctx := context.Background()
	if err := m.Apply(ctx, spec); err != nil {
		fmt.Println(err)
		return
	}
	spec.Ports = []netfilter.Port{{IfName: "veth1a2b3c4", Addr: netip.MustParseAddr("10.213.0.2")}}
	if err := m.SetPorts(ctx, spec.Ports); err != nil {
		fmt.Println(err)
		return
	}
	d, _ := m.Verify(ctx, spec)
	fmt.Println("drift:", d)

	rs, _ := netfilter.Build(spec)
	for _, line := range strings.Split(rs.String(), "\n") {
		if strings.Contains(line, "redirect-443") {
			fmt.Println(strings.TrimSpace(line))
		}
	}
	// Output:
	// drift: intact
	// iifname "clauderon0" meta nfproto ipv4 tcp dport 443 counter redirect to :8443 comment "clauderon:redirect-443"
}
