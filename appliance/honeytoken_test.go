package appliance

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"log/slog"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/clauderon/clauderond/appliance/api"
	"github.com/clauderon/clauderond/appliance/audit"
	"github.com/clauderon/clauderond/appliance/internal/dockertest"
	"github.com/clauderon/clauderond/appliance/session"
	"github.com/clauderon/clauderond/dnsredir"
	"github.com/clauderon/clauderond/injector"
	"github.com/clauderon/clauderond/netfilter"
	"github.com/clauderon/clauderond/tlsmitm"
	"github.com/prometheus/client_golang/prometheus/testutil"
)

type syncBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuf) Write(p []byte) (int, error) { s.mu.Lock(); defer s.mu.Unlock(); return s.b.Write(p) }
func (s *syncBuf) String() string              { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

// honeyRig: a session manager that prepared two `clauderon run`
// containers (c1, c2), the real injector behind the adapter, and the event
// adapter writing to a real audit log, with metrics.
type honeyRig struct {
	t        *testing.T
	state    string
	adapter  *injectorAdapter
	events   *eventAdapter
	logs     *syncBuf
	env      [2]map[string]string
	suffix   [2]string
	closeLog func()
}

func newHoneyRig(t *testing.T) *honeyRig {
	t.Helper()
	ctx := context.Background()
	cfg := testConfig(t)
	if err := os.WriteFile(filepath.Join(cfg.StateDir, "proxy-ca.pem"), []byte("-----BEGIN CERTIFICATE-----\nMIIB\n-----END CERTIFICATE-----\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	// The session manager asks Docker for a run container's name.
	docker := dockertest.New()
	docker.Put(dockertest.Container{ID: "id-1", Name: "c1"})
	docker.Put(dockertest.Container{ID: "id-2", Name: "c2"})
	m, err := session.New(ctx, session.Config{Docker: docker, Network: "clauderon", StateDir: cfg.StateDir,
		Placeholders: injector.Placeholders(), SystemBundle: filepath.Join(cfg.StateDir, "none")})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close() })
	h := &honeyRig{t: t, state: cfg.StateDir, logs: &syncBuf{}}
	for i, id := range []string{"id-1", "id-2"} {
		ra, err := m.RunArgs(ctx, api.RunRequest{})
		if err != nil {
			t.Fatal(err)
		}
		h.env[i] = map[string]string{}
		labels := map[string]string{}
		for j := 0; j+1 < len(ra.Args); j++ {
			switch ra.Args[j] {
			case "-e":
				k, v, _ := strings.Cut(ra.Args[j+1], "=")
				h.env[i][k] = v
			case "--label":
				k, v, _ := strings.Cut(ra.Args[j+1], "=")
				labels[k] = v
			}
		}
		m.BindRun(ctx, id, labels) // the container showed up
		sfx, ok := injector.PlaceholderSuffix(h.env[i]["CLAUDE_CODE_OAUTH_TOKEN"])
		if !ok {
			t.Fatalf("run %d placeholder %q has no suffix", i, h.env[i]["CLAUDE_CODE_OAUTH_TOKEN"])
		}
		h.suffix[i] = sfx
	}
	records := &containerRecords{}
	records.m.Store(m)
	p, err := buildParts(cfg, newStore(t, "CLAUDE_CODE_OAUTH_TOKEN="+unitToken, "GITHUB_TOKEN=ghp_unit0123456789"), netip.MustParseAddr("10.213.0.1"), discard())
	if err != nil {
		t.Fatal(err)
	}
	p.injector.records = records
	h.adapter = p.injector
	key, err := audit.LoadOrCreateKey(filepath.Join(cfg.StateDir, auditKeyName))
	if err != nil {
		t.Fatal(err)
	}
	w, err := audit.Open(filepath.Join(cfg.StateDir, "audit.jsonl"), auditOptions(cfg.Audit, nil, key, discard()))
	if err != nil {
		t.Fatal(err)
	}
	h.closeLog = func() { w.Close() }
	t.Cleanup(h.closeLog)
	met := newMetrics(statsSource{tls: func() tlsmitm.Stats { return tlsmitm.Stats{} }, dns: func() dnsredir.Stats { return dnsredir.Stats{} },
		nft: func(context.Context) ([]netfilter.Counter, error) { return nil, nil }, reapplies: func() uint64 { return 0 }, containers: func() int { return 0 }})
	h.events = &eventAdapter{out: auditWriter{w}, metrics: met,
		placeholders: newPlaceholderWatch(records, nil, slog.New(slog.NewTextHandler(h.logs, nil)))}
	return h
}

// request sends one intercepted request the way tlsmitm does: Apply on the
// outgoing request, then the event with the rule string Apply returned.
func (h *honeyRig) request(from int, host, auth string) {
	h.t.Helper()
	client := tlsmitm.Client{ID: []string{"id-1", "id-2"}[from], Name: []string{"c1", "c2"}[from], Known: true}
	req := httptest.NewRequest("GET", "https://"+host+"/v1/models", nil)
	req.Header.Set("Authorization", auth)
	rule, injected, err := h.adapter.Apply(req, host, client)
	if err != nil || !injected {
		h.t.Fatalf("Apply = %q %v %v", rule, injected, err)
	}
	if got := req.Header.Get("Authorization"); strings.Contains(got, "clauderon-proxy") {
		h.t.Fatalf("a placeholder was left on the request: %q", got)
	}
	h.events.Record(tlsmitm.Event{Time: time.Now(), Client: client, SrcIP: netip.MustParseAddrPort("10.213.0.5:40000"),
		SNI: host, Host: host, Method: "GET", Path: "/v1/models", Status: 200, Decision: tlsmitm.Intercept, Rule: rule, AuthInjected: injected})
}

// lines returns the audit lines written so far (chain starts left out).
func (h *honeyRig) lines() []audit.Record {
	h.t.Helper()
	data, err := os.ReadFile(filepath.Join(h.state, "audit.jsonl"))
	if err != nil {
		h.t.Fatal(err)
	}
	var out []audit.Record
	for _, l := range bytes.Split(bytes.TrimSpace(data), []byte("\n")) {
		var r audit.Record
		if err := json.Unmarshal(l, &r); err != nil {
			h.t.Fatalf("audit line %q: %v", l, err)
		}
		if r.Decision != audit.DecisionChainStart {
			out = append(out, r)
		}
	}
	return out
}

func TestHoneytoken_AnotherContainersPlaceholderIsAudited(t *testing.T) {
	h := newHoneyRig(t)
	if h.suffix[0] == h.suffix[1] {
		t.Fatal("both runs got the same placeholders")
	}
	// Each container with its own placeholder: nothing to report.
	h.request(0, "api.anthropic.com", "Bearer "+h.env[0]["CLAUDE_CODE_OAUTH_TOKEN"])
	h.request(1, "api.anthropic.com", "Bearer "+h.env[1]["CLAUDE_CODE_OAUTH_TOKEN"])
	// The reference placeholder (a plain docker run image): nothing either.
	h.request(1, "api.anthropic.com", "Bearer "+injector.PlaceholderAnthropicOAuth)
	// c2 sends c1's placeholders, twice, then in git's Basic form.
	h.request(1, "api.anthropic.com", "Bearer "+h.env[0]["CLAUDE_CODE_OAUTH_TOKEN"])
	h.request(1, "api.anthropic.com", "Bearer "+h.env[0]["CLAUDE_CODE_OAUTH_TOKEN"])
	h.request(1, "github.com", "Basic "+b64("x-access-token:"+h.env[0]["GITHUB_TOKEN"]))
	// A placeholder-shaped value clauderond never issued.
	h.request(1, "api.github.com", "token "+injector.PlaceholderGitHub+"-00000fffff")

	recs := h.lines()
	if len(recs) != 7 {
		t.Fatalf("%d audit lines, want 7: %+v", len(recs), recs)
	}
	want := []string{"", "", "", "c1", "c1", "c1", "unknown"}
	for i, r := range recs {
		if r.PlaceholderFrom != want[i] {
			t.Errorf("line %d placeholder_from = %q, want %q (%+v)", i, r.PlaceholderFrom, want[i], r)
		}
		if strings.Contains(r.Rule, "\x00") || strings.Contains(r.Rule, "placeholders") || (r.Rule != r.SNI) {
			t.Errorf("line %d rule = %q, want the bare rule", i, r.Rule)
		}
	}
	data, _ := os.ReadFile(filepath.Join(h.state, "audit.jsonl"))
	for _, s := range []string{unitToken, "ghp_unit", h.suffix[0], h.suffix[1]} {
		if bytes.Contains(data, []byte(s)) {
			t.Errorf("audit.jsonl holds %q", s)
		}
	}
	if !bytes.Contains(data, []byte(`"placeholder_from":"c1"`)) {
		t.Errorf("no placeholder_from on the wire:\n%s", data)
	}
	if got := testutil.ToFloat64(h.events.metrics.placeholderMismatch.WithLabelValues("header")); got != 4 {
		t.Errorf("clauderon_placeholder_mismatch_total{seen_in=header} = %v, want 4", got)
	}
	logs := h.logs.String()
	if n := strings.Count(logs, "placeholder_from=c1"); n != 1 {
		t.Errorf("%d warnings for the pair (c2, c1), want 1:\n%s", n, logs)
	}
	if n := strings.Count(logs, "placeholder_from=unknown"); n != 1 {
		t.Errorf("%d warnings for the pair (c2, unknown), want 1:\n%s", n, logs)
	}
	if strings.Contains(logs, unitToken) || strings.Contains(logs, "ghp_unit") {
		t.Error("the log holds a credential")
	}
}

func TestHoneytoken_DNSNameAndServerName(t *testing.T) {
	h := newHoneyRig(t)
	src := netip.MustParseAddr("10.213.0.6")
	// c1's suffix, upper-cased, in a DNS name from an address no container holds.
	h.events.RecordDNS(dnsredir.Event{Time: time.Now(), Client: "", SrcIP: src, Name: "x" + strings.ToUpper(h.suffix[0]) + "y.exfil.example", Decision: "dns-deny"})
	// Random hex in a name is not a placeholder.
	h.events.RecordDNS(dnsredir.Event{Time: time.Now(), SrcIP: src, Name: "0123456789abcdef.cdn.example", Decision: "dns-allow"})
	// c1's suffix in the server name of c2's passthrough connection.
	h.events.Record(tlsmitm.Event{Time: time.Now(), Client: tlsmitm.Client{ID: "id-2", Name: "c2", Known: true},
		SNI: h.suffix[0] + ".exfil.example", Decision: tlsmitm.Passthrough, Rule: "*.exfil.example"})
	// c1's own suffix in its own server name: its own business.
	h.events.Record(tlsmitm.Event{Time: time.Now(), Client: tlsmitm.Client{ID: "id-1", Name: "c1", Known: true},
		SNI: h.suffix[0] + ".exfil.example", Decision: tlsmitm.Passthrough, Rule: "*.exfil.example"})
	recs := h.lines()
	want := []string{"c1", "", "c1", ""}
	if len(recs) != len(want) {
		t.Fatalf("%d lines, want %d", len(recs), len(want))
	}
	for i, r := range recs {
		if r.PlaceholderFrom != want[i] {
			t.Errorf("line %d (%s %s%s) placeholder_from = %q, want %q", i, r.Kind, r.Host, r.SNI, r.PlaceholderFrom, want[i])
		}
	}
	for where, n := range map[string]float64{"dns": 1, "sni": 1, "header": 0} {
		if got := testutil.ToFloat64(h.events.metrics.placeholderMismatch.WithLabelValues(where)); got != n {
			t.Errorf("mismatches seen_in=%s = %v, want %v", where, got, n)
		}
	}
}

func TestSuffixCandidates(t *testing.T) {
	got := suffixCandidates("a0123456789bZ.ABCDEF0123.x.00000000000")
	want := []string{"a012345678", "0123456789", "123456789b", "abcdef0123", "0000000000", "0000000000"}
	if strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("suffixCandidates = %v, want %v", got, want)
	}
	if got := suffixCandidates(strings.Repeat("a", 300)); len(got) != maxNameCandidates {
		t.Errorf("%d candidates for a long hex name, want the bound %d", len(got), maxNameCandidates)
	}
	if r, s := cutPlaceholders(tagPlaceholders("api.github.com", []string{"0123456789", "abcdef0123"})); r != "api.github.com" || len(s) != 2 {
		t.Errorf("cutPlaceholders(tag) = %q %v", r, s)
	}
	if r, s := cutPlaceholders("would-deny:default-deny"); r != "would-deny:default-deny" || s != nil {
		t.Errorf("cutPlaceholders(untagged) = %q %v", r, s)
	}
}

func b64(s string) string { return base64.StdEncoding.EncodeToString([]byte(s)) }
