package appliance

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/clauderon/clauderond/appliance/config"
	"github.com/clauderon/clauderond/dnsredir"
	"github.com/clauderon/clauderond/injector"
	"github.com/clauderon/clauderond/tlsmitm"
)

const unitToken = "sk-ant-oat01-unit-test-token-abcdefghijklmnopqrstuvwxyz"

func newStore(t *testing.T, env ...string) *injector.Store {
	t.Helper()
	st, err := injector.NewStore(injector.StoreOptions{Environ: func() []string { return env }})
	if err != nil {
		t.Fatal(err)
	}
	return st
}

func testConfig(t *testing.T) *config.Config {
	t.Helper()
	cfg := config.Default()
	cfg.StateDir = t.TempDir()
	cfg.Metrics.Address = ""
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	return cfg
}

func TestInjectorAdapter_ErrorMapping(t *testing.T) {
	cfg := testConfig(t)
	tests := []struct {
		name         string
		env          []string
		requireLabel bool
		deny         []string // deny list of a config rule for api.anthropic.com
		client       tlsmitm.Client
		host         string // Host header; "" = api.anthropic.com
		wantInjected bool
		wantErr      error
		wantMsg      string
	}{
		{name: "default_profile_injects", env: []string{"CLAUDE_CODE_OAUTH_TOKEN=" + unitToken},
			client: tlsmitm.Client{Name: "c", Known: true}, wantInjected: true},
		{name: "missing_credential_is_403_with_fix", client: tlsmitm.Client{Name: "c", Known: true},
			wantErr: tlsmitm.ErrForbidden, wantMsg: "state_dir/secrets"},
		{name: "host_mismatch_is_421", env: []string{"CLAUDE_CODE_OAUTH_TOKEN=" + unitToken},
			client: tlsmitm.Client{Known: true}, host: "evil.example", wantErr: tlsmitm.ErrSNIMismatch},
		{name: "require_label_refuses_unlabelled", env: []string{"CLAUDE_CODE_OAUTH_TOKEN=" + unitToken},
			requireLabel: true, client: tlsmitm.Client{Name: "ci-job", Known: true},
			wantErr: tlsmitm.ErrForbidden, wantMsg: "clauderon.profile"},
		{name: "unknown_source_gets_nothing", env: []string{"CLAUDE_CODE_OAUTH_TOKEN=" + unitToken},
			client: tlsmitm.Client{}, wantErr: tlsmitm.ErrForbidden, wantMsg: "not come from a running container"},
		{name: "denied_path_is_403", env: []string{"CLAUDE_CODE_OAUTH_TOKEN=" + unitToken}, deny: []string{"POST /v1/messages"},
			client: tlsmitm.Client{Name: "c", Known: true}, wantErr: tlsmitm.ErrForbidden, wantMsg: "deny list"},
		{name: "container_with_another_network_gets_nothing", env: []string{"CLAUDE_CODE_OAUTH_TOKEN=" + unitToken},
			client: tlsmitm.Client{ID: "abc", Name: "dual"}, wantErr: tlsmitm.ErrForbidden, wantMsg: "on the clauderon network alone"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := *cfg
			c.Profiles.RequireLabel = tt.requireLabel
			if tt.deny != nil {
				c.Rules = []config.Rule{{Host: "api.anthropic.com", Credential: "anthropic", Format: "anthropic",
					Strip: []string{"Authorization", "X-Api-Key"}, Deny: tt.deny}}
			}
			p, err := buildParts(&c, newStore(t, tt.env...), netip.MustParseAddr("10.213.0.1"), discard())
			if err != nil {
				t.Fatal(err)
			}
			req, _ := http.NewRequest("POST", "https://api.anthropic.com/v1/messages", nil)
			if tt.host != "" {
				req.Host = tt.host
			}
			req.Header.Set("Authorization", "Bearer "+injector.PlaceholderAnthropicOAuth)
			rule, injected, err := p.injector.Apply(req, "api.anthropic.com", tt.client)
			if !errors.Is(err, tt.wantErr) || (tt.wantErr == nil && err != nil) {
				t.Fatalf("Apply error = %v, want %v", err, tt.wantErr)
			}
			if err != nil && !strings.Contains(err.Error(), tt.wantMsg) {
				t.Errorf("error %q does not mention %q", err, tt.wantMsg)
			}
			if err != nil && strings.Contains(err.Error(), unitToken) {
				t.Fatal("error carries the credential")
			}
			if injected != tt.wantInjected {
				t.Errorf("injected = %t, want %t", injected, tt.wantInjected)
			}
			if tt.wantInjected {
				if got := req.Header.Get("Authorization"); got != "Bearer "+unitToken {
					t.Error("the credential was not written as a Bearer token")
				}
				if rule == "" {
					t.Error("no rule name for an injected request")
				}
			}
		})
	}
}

func TestPolicy_EnforceAndAuditMode(t *testing.T) {
	cfg := testConfig(t)
	cfg.Egress.Allow = []string{"*.debian.org"}
	rules := convertRules(cfg)
	tests := []struct {
		mode, name string
		wantTLS    tlsmitm.Decision
		wantDNS    dnsredir.Decision
		wouldDeny  bool
	}{
		{"enforce", "api.anthropic.com", tlsmitm.Intercept, dnsredir.Intercept, false},
		{"enforce", "deb.debian.org", tlsmitm.Passthrough, dnsredir.Allow, false},
		{"enforce", "evil.example", tlsmitm.Deny, dnsredir.Deny, false},
		{"audit", "evil.example", tlsmitm.Passthrough, dnsredir.Allow, true},
		{"audit", "api.anthropic.com", tlsmitm.Intercept, dnsredir.Intercept, false},
	}
	for _, tt := range tests {
		t.Run(tt.mode+"_"+tt.name, func(t *testing.T) {
			c := *cfg
			c.Egress.Mode = config.EgressMode(tt.mode)
			p, err := newPolicy(rules, &c)
			if err != nil {
				t.Fatal(err)
			}
			d, rule := p.Route(tt.name)
			if d != tt.wantTLS {
				t.Errorf("Route(%s) = %s, want %s", tt.name, d, tt.wantTLS)
			}
			if got := strings.HasPrefix(rule, wouldDeny); got != tt.wouldDeny {
				t.Errorf("rule %q: would-deny marker = %t, want %t", rule, got, tt.wouldDeny)
			}
			if dd, _ := p.Decide(tt.name); dd != tt.wantDNS {
				t.Errorf("Decide(%s) = %s, want %s", tt.name, dd, tt.wantDNS)
			}
		})
	}
}

func TestEvents_AuditRecords(t *testing.T) {
	ev := tlsmitm.Event{Time: time.Unix(100, 0), Client: tlsmitm.Client{ID: "abc", Name: "agent", Profile: "team", Known: true},
		SrcIP: netip.MustParseAddrPort("10.213.0.2:40000"), OrigDst: netip.MustParseAddrPort("192.0.2.1:443"),
		SNI: "api.anthropic.com", Host: "api.anthropic.com", Method: "POST", Path: "/v1/messages", Status: 200,
		Decision: tlsmitm.Intercept, Rule: "api.anthropic.com", AuthInjected: true, Duration: 1500 * time.Microsecond}
	a := toAudit(fromTLS(ev))
	if a.Container != "agent" || a.ContainerID != "abc" || a.Kind != "http" || a.SrcIP != "10.213.0.2" ||
		a.OrigDst != "192.0.2.1:443" || !a.AuthInjected || a.DurationMS != 1.5 || a.Decision != "intercept" {
		t.Errorf("intercept record = %+v", a)
	}
	wd := fromTLS(tlsmitm.Event{SNI: "evil.example", Decision: tlsmitm.Passthrough, Rule: wouldDeny + "default-deny"})
	if wd.Decision != "would-deny" || wd.Rule != "default-deny" || wd.Kind != "conn" {
		t.Errorf("audit-mode passthrough = %+v, want decision would-deny, rule default-deny, kind conn", wd)
	}
	dr := toAudit(fromDNS(dnsredir.Event{Name: "evil.example", Qtype: 1, Decision: dnsredir.AuditDeny, Rcode: 3,
		SrcIP: netip.MustParseAddr("10.213.0.2"), Client: "agent"}))
	if dr.Kind != "dns" || dr.Host != "evil.example" || dr.QType != "A" || dr.RCode != "NXDOMAIN" || dr.Decision != "dns-deny" {
		t.Errorf("dns record = %+v", dr)
	}
}

func TestUpstreams_CAFileAndLoopbackAnswer(t *testing.T) {
	cfg := testConfig(t)
	bad := filepath.Join(t.TempDir(), "bad.pem")
	os.WriteFile(bad, []byte("not pem"), 0o600)
	cfg.Upstreams = []config.Upstream{{Host: "api.anthropic.com", Address: "127.0.0.1:9443", CAFile: bad}}
	if _, err := buildUpstreams(cfg); err == nil || !strings.Contains(err.Error(), "upstreams[0].ca_file") {
		t.Errorf("bad ca_file: err = %v, want one naming upstreams[0].ca_file", err)
	}
	cfg.Upstreams = []config.Upstream{{Host: "API.anthropic.com", Address: "127.0.0.1:9443"}, {Host: "api.openai.com", Address: "192.0.2.7:443"}}
	ups, err := buildUpstreams(cfg)
	if err != nil {
		t.Fatal(err)
	}
	gw := netip.MustParseAddr("10.213.0.1")
	ans := interceptAnswer(ups, gw)
	if got := ans("api.anthropic.com"); len(got) != 1 || got[0] != gw {
		t.Errorf("answer for a loopback override = %v, want the gateway", got)
	}
	if got := ans("api.openai.com"); len(got) != 1 || got[0] != netip.MustParseAddr("192.0.2.7") {
		t.Errorf("answer for a routable override = %v, want its address", got)
	}
	if got := ans("deb.debian.org"); got != nil {
		t.Errorf("answer for a name without override = %v, want nil (resolve normally)", got)
	}
	// Allowed (passthrough) names with an override resolve too.
	res := &overrideResolver{base: failResolver{}}
	res.set(overrideAnswers([]tlsmitm.Upstream{{Host: "pass.example", Address: "localhost:9444"}}, gw))
	if got, err := res.LookupNetIP(context.Background(), "ip4", "PASS.example."); err != nil || len(got) != 1 || got[0] != gw {
		t.Errorf("override resolver = %v, %v; want the gateway", got, err)
	}
	if _, err := res.LookupNetIP(context.Background(), "ip4", "other.example"); err == nil {
		t.Error("a name without override did not reach the base resolver")
	}
}

func TestMetricsAddress_RefusesBridge(t *testing.T) {
	sub, gw := netip.MustParsePrefix("10.213.0.0/24"), netip.MustParseAddr("10.213.0.1")
	for addr, ok := range map[string]bool{"127.0.0.1:9464": true, "10.213.0.1:9464": false, "10.213.0.9:9464": false,
		"0.0.0.0:9464": false, ":9464": false, "[::]:9464": false} {
		if err := checkMetricsAddress(addr, sub, gw); (err == nil) != ok {
			t.Errorf("checkMetricsAddress(%s) = %v, want ok=%t", addr, err, ok)
		}
	}
}

func TestStateDir_RefusesLooseModes(t *testing.T) {
	dir := t.TempDir()
	if err := prepareStateDir(dir); err != nil {
		t.Fatal(err)
	}
	os.Chmod(filepath.Join(dir, "secrets"), 0o750)
	err := prepareStateDir(dir)
	if err == nil || !strings.Contains(err.Error(), "chmod 700 "+filepath.Join(dir, "secrets")) {
		t.Errorf("loose secrets/: err = %v, want the chmod 700 fix", err)
	}
	os.Chmod(filepath.Join(dir, "secrets"), 0o700)
	os.WriteFile(filepath.Join(dir, "proxy-ca-key.pem"), []byte("k"), 0o644)
	if err := prepareStateDir(dir); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Errorf("loose CA key: err = %v, want the chmod 600 fix", err)
	}
}

func discard() *slog.Logger { return slog.New(slog.DiscardHandler) }

type failResolver struct{}

func (failResolver) LookupNetIP(context.Context, string, string) ([]netip.Addr, error) {
	return nil, errors.New("no network in unit tests")
}

// TestUpstreamPolicy_PrivateRangesDeniedUnlessOverridden: the upstream
// dialer must refuse the bridge, the LAN and other Docker networks; only an
// `upstreams` override (an exact address, checked in tlsmitm) opens one.
func TestUpstreamPolicy_PrivateRangesDeniedUnlessOverridden(t *testing.T) {
	subnet := netip.MustParsePrefix("10.213.7.0/24")
	denied := deniedUpstreamPrefixes(subnet)
	for _, a := range []string{"10.213.7.9", "10.1.2.3", "172.17.0.2", "192.168.1.10", "100.64.0.1", "fd00::1"} {
		addr := netip.MustParseAddr(a)
		hit := false
		for _, p := range denied {
			hit = hit || p.Contains(addr)
		}
		if !hit {
			t.Errorf("%s is not in the denied upstream prefixes %v", a, denied)
		}
	}
	for _, a := range []string{"160.79.104.10", "140.82.112.3", "2607:6bc0::10"} {
		addr := netip.MustParseAddr(a)
		for _, p := range denied {
			if p.Contains(addr) {
				t.Errorf("public address %s is denied by %s", a, p)
			}
		}
	}
}
