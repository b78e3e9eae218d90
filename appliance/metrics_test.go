package appliance

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/clauderon/clauderond/dnsredir"
	"github.com/clauderon/clauderond/netfilter"
	"github.com/clauderon/clauderond/tlsmitm"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestMetrics_ObserveAndCollectors(t *testing.T) {
	m := newMetrics(statsSource{
		tls: func() tlsmitm.Stats { return tlsmitm.Stats{Panics: 2, ActiveHTTPConns: 5, ParkedConns: 4} },
		dns: func() dnsredir.Stats { return dnsredir.Stats{Panics: 1} },
		nft: func(context.Context) ([]netfilter.Counter, error) {
			return []netfilter.Counter{{Rule: "clauderon:reject-tcp", Packets: 7, Bytes: 420}}, nil
		},
		reapplies:  func() uint64 { return 3 },
		containers: func() int { return 4 },
	})
	m.observe(record{Kind: "http", Decision: "intercept", Rule: "api.anthropic.com", Status: 200, AuthInjected: true, Duration: 20 * time.Millisecond})
	m.observe(record{Kind: "conn", Decision: "deny", Rule: "default-deny", SNI: "evil.example"})
	m.observe(record{Kind: "http", Decision: "intercept", Rule: "api.anthropic.com", Status: 403})
	m.observe(record{Kind: "dns", Decision: "dns-deny", Rule: "default-deny"})

	if got := testutil.ToFloat64(m.injections.WithLabelValues("api.anthropic.com")); got != 1 {
		t.Errorf("injections = %v, want 1", got)
	}
	// A denied SNI never becomes a label value (bounded cardinality).
	if got := testutil.ToFloat64(m.requests.WithLabelValues("-", "deny", "0")); got != 1 {
		t.Errorf("deny requests = %v, want 1 under host \"-\"", got)
	}
	if got := testutil.ToFloat64(m.denials.WithLabelValues("tls", "api.anthropic.com")); got != 1 {
		t.Errorf("403 denials = %v, want 1", got)
	}
	if got := testutil.ToFloat64(m.dns.WithLabelValues("dns-deny")); got != 1 {
		t.Errorf("dns-deny = %v, want 1", got)
	}
	expected := `
# HELP clauderon_nft_packets_total Packets matched per nftables rule (reset on re-apply).
# TYPE clauderon_nft_packets_total counter
clauderon_nft_packets_total{rule="clauderon:reject-tcp"} 7
# HELP clauderon_panics_total Recovered panics in connection and query handlers.
# TYPE clauderon_panics_total counter
clauderon_panics_total 3
# HELP clauderon_ruleset_reapplies_total Ruleset re-applies after drift.
# TYPE clauderon_ruleset_reapplies_total counter
clauderon_ruleset_reapplies_total 3
# HELP clauderon_containers Running containers on the bridge.
# TYPE clauderon_containers gauge
clauderon_containers 4
# HELP clauderon_intercepted_connections Open intercepted client connections (HTTP/1.x and h2).
# TYPE clauderon_intercepted_connections gauge
clauderon_intercepted_connections 5
# HELP clauderon_parked_connections Of the intercepted connections, those idle long enough to wait for their next request on a small stack.
# TYPE clauderon_parked_connections gauge
clauderon_parked_connections 4
`
	if err := testutil.GatherAndCompare(m.reg, strings.NewReader(expected), "clauderon_nft_packets_total",
		"clauderon_panics_total", "clauderon_ruleset_reapplies_total", "clauderon_containers",
		"clauderon_intercepted_connections", "clauderon_parked_connections"); err != nil {
		t.Error(err)
	}
}
