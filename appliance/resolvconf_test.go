package appliance

import (
	"net/netip"
	"strings"
	"testing"
)

func TestLoopbackResolverProblem(t *testing.T) {
	gw := netip.MustParseAddr("10.213.0.1")
	tests := []struct {
		name, conf string
		want       string // substring; "" means no problem
	}{
		{"non_loopback_resolver_is_redirected", "nameserver 10.255.255.53\n", ""},
		{"systemd_resolved_stub_bypasses_the_bridge", "# stub\nnameserver 127.0.0.53\noptions edns0\n", "127.0.0.53"},
		{"ipv6_loopback_too", "nameserver ::1\n", "::1"},
		{"one_routed_server_is_enough", "nameserver 127.0.0.53\nnameserver 192.0.2.53\n", ""},
		{"no_nameserver_lines", "search example.com\n", ""},
		{"fix_names_the_gateway", "nameserver 127.0.0.1\n", `"dns": ["10.213.0.1"]`},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := loopbackResolverProblem([]byte(tt.conf), gw)
			if tt.want == "" && got != "" {
				t.Errorf("problem = %q, want none", got)
			}
			if tt.want != "" && !strings.Contains(got, tt.want) {
				t.Errorf("problem = %q, want it to contain %q", got, tt.want)
			}
		})
	}
}
