package appliance

import (
	"context"
	"errors"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/clauderon/clauderond/appliance/api"
	"github.com/clauderon/clauderond/appliance/config"
	"github.com/clauderon/clauderond/tlsmitm/localca"
)

func withRule(cfg *config.Config, host string) *config.Config {
	c := *cfg
	c.Rules = append(append([]config.Rule(nil), cfg.Rules...), config.Rule{Host: host, Credential: "gitlab", Format: "bearer"})
	return &c
}

func TestCA_StartupCreatesConstrainedRootAndRefusesNewDomain(t *testing.T) {
	cfg := testConfig(t)
	d, err := newDaemon(cfg, slog.New(slog.DiscardHandler), nil)
	if err != nil {
		t.Fatal(err)
	}
	if err := d.stepCA(context.Background(), nil); err != nil {
		t.Fatal(err)
	}
	got := strings.Join(d.ca.PermittedDNSDomains(), ",")
	if got != "anthropic.com,github.com,npmjs.org,openai.com" {
		t.Errorf("root permits %s, want the default rules' registrable domains", got)
	}
	// A rule host under a known suffix starts fine; one outside does not.
	d2, _ := newDaemon(withRule(cfg, "uploads.github.com"), slog.New(slog.DiscardHandler), nil)
	if err := d2.stepCA(context.Background(), nil); err != nil {
		t.Errorf("host under a permitted suffix: %v", err)
	}
	d3, _ := newDaemon(withRule(cfg, "gitlab.com"), slog.New(slog.DiscardHandler), nil)
	err = d3.stepCA(context.Background(), nil)
	if !errors.Is(err, localca.ErrNotPermitted) || !strings.Contains(err.Error(), `"gitlab.com"`) || !strings.Contains(err.Error(), "clauderond ca rotate") {
		t.Errorf("start with a rule host outside the root = %v, want ErrNotPermitted naming gitlab.com and the fix", err)
	}
	// After a rotation the same configuration starts.
	out, err := RotateCA(withRule(cfg, "gitlab.com"), time.Hour)
	if err != nil || !strings.Contains(out, "gitlab.com") || !strings.Contains(out, "restart clauderond") {
		t.Fatalf("RotateCA = %q, %v", out, err)
	}
	if err := d3.stepCA(context.Background(), nil); err != nil {
		t.Errorf("after rotate: %v", err)
	}
	if n := len(d3.ca.Previous()); n != 1 {
		t.Errorf("previous roots after rotate = %d, want 1", n)
	}
}

func TestCA_UnconstrainedCAStartsWithWarning(t *testing.T) {
	cfg := testConfig(t)
	// A CA without DNS constraints (the older single-root format itself
	// is covered by localca's tests) starts with any rule host and warns.
	ca, err := localca.LoadOrCreate(cfg.StateDir) // no hosts: no DNS constraints
	if err != nil {
		t.Fatal(err)
	}
	var buf strings.Builder
	d, _ := newDaemon(withRule(cfg, "gitlab.com"), slog.New(slog.NewTextHandler(&buf, nil)), nil)
	if err := d.stepCA(context.Background(), nil); err != nil {
		t.Fatalf("unconstrained CA with any rule host: %v", err)
	}
	if d.ca.Fingerprint() != ca.Fingerprint() || !strings.Contains(buf.String(), "clauderond ca rotate") {
		t.Errorf("log = %s", buf.String())
	}
}

func TestCA_ReloadRefusesRuleHostOutsideRoot(t *testing.T) {
	r := startFake(t)
	r.loadMu.Lock()
	r.next, r.nextErr = withRule(r.cfg, "gitlab.com"), nil
	r.loadMu.Unlock()
	err := api.NewClient(r.cfg.SocketPath()).Reload(context.Background())
	if err == nil || !strings.Contains(err.Error(), "gitlab.com") || !strings.Contains(err.Error(), "clauderond ca rotate") ||
		!strings.Contains(err.Error(), "previous configuration stays in force") {
		t.Fatalf("reload with a rule host outside the CA = %v", err)
	}
	r.loadMu.Lock()
	r.next = withRule(r.cfg, "gist.github.com")
	r.loadMu.Unlock()
	if err := api.NewClient(r.cfg.SocketPath()).Reload(context.Background()); err != nil {
		t.Errorf("reload with a rule host under a permitted suffix: %v", err)
	}
	if _, err := os.Stat(filepath.Join(r.cfg.StateDir, localca.IntermediateKeyFile)); err != nil {
		t.Errorf("intermediate key: %v", err)
	}
}
