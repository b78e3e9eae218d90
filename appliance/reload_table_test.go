package appliance

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/clauderon/clauderond/appliance/config"
	"github.com/google/go-cmp/cmp"
)

// TestSettings_CoverEveryKey: every configuration key is in exactly one row
// of the reload table, so a new key has to be classified.
func TestSettings_CoverEveryKey(t *testing.T) {
	keys := config.Keys()
	for _, k := range keys {
		var rows []string
		for _, s := range settings {
			if k == s.key || strings.HasPrefix(k, s.key+".") {
				rows = append(rows, s.key)
			}
		}
		if len(rows) != 1 {
			t.Errorf("key %s is in %d rows of the reload table %v, want exactly 1", k, len(rows), rows)
		}
	}
	for _, s := range settings {
		found := false
		for _, k := range keys {
			found = found || k == s.key || strings.HasPrefix(k, s.key+".")
		}
		if !found {
			t.Errorf("reload table row %s names no configuration key", s.key)
		}
	}
}

func TestKeepRestartOnly_KeepsRunningValuesOfRestartKeys(t *testing.T) {
	cur := config.Default()
	cur.StateDir = "/srv/a"
	next := *cur
	next.Network.Subnet = config.Subnet{Prefix: netip.MustParsePrefix("10.9.0.0/24")}
	next.DNS.Servers = []config.DNSServer{"192.0.2.53"}
	next.Kubernetes.Node = "node-2"
	next.Egress.Mode = config.EgressAudit
	next.Egress.Allow = []string{"pypi.org"}

	got, kept := keepRestartOnly(cur, &next)
	if diff := cmp.Diff([]string{"network.subnet", "dns.servers", "kubernetes"}, kept); diff != "" {
		t.Errorf("kept keys (-want +got):\n%s", diff)
	}
	want := *cur
	want.Egress.Mode, want.Egress.Allow = config.EgressAudit, []string{"pypi.org"}
	if diff := cmp.Diff(&want, got); diff != "" {
		t.Errorf("reloaded config (-want +got):\n%s", diff)
	}
	if next.Network.Subnet.Prefix.String() != "10.9.0.0/24" {
		t.Errorf("keepRestartOnly changed its argument: network.subnet = %s", next.Network.Subnet)
	}
}
