package appliance

import (
	"context"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/clauderon/clauderond/appliance/api"
	"github.com/clauderon/clauderond/appliance/audit"
	"github.com/clauderon/clauderond/appliance/config"
	"github.com/clauderon/clauderond/injector"
)

// serveBackend serves b's API on a Unix socket and returns a client.
func serveBackend(t *testing.T, b api.Backend) *api.Client {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "api.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: api.NewHandler(b, nil), ReadHeaderTimeout: 5 * time.Second}
	go srv.Serve(ln)
	c := api.NewClient(sock)
	t.Cleanup(func() { c.Close(); srv.Close() })
	return c
}

// TestAudit_DaemonChainsAndVerifiesThroughTheAPI: the daemon's audit is
// chained with state_dir/audit.key (0600, created on first use), and
// GET /v1/audit/verify reports an intact log, then the line an attacker
// altered.
func TestAudit_DaemonChainsAndVerifiesThroughTheAPI(t *testing.T) {
	dir := t.TempDir()
	cfg := config.Default()
	cfg.StateDir = dir
	st, err := injector.NewStore(injector.StoreOptions{Environ: func() []string { return nil }})
	if err != nil {
		t.Fatal(err)
	}
	sink, err := openAudit(cfg, st, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sink.Close() })
	fi, err := os.Stat(filepath.Join(dir, auditKeyName))
	if err != nil || fi.Mode().Perm() != 0o600 || fi.Size() != audit.KeySize {
		t.Fatalf("audit.key: %v, %v", fi, err)
	}
	for i := range 3 {
		sink.write(record{Container: "agent-1", SrcIP: "10.213.0.2", Decision: "intercept", Method: "GET", Path: "/" + strings.Repeat("x", i)})
	}
	c := serveBackend(t, &backend{d: &daemon{audit: sink}})
	res, err := c.AuditVerify(context.Background())
	if err != nil || !res.OK || res.Lines != 4 || res.FirstBad != nil {
		t.Fatalf("AuditVerify = %+v, %v; want OK with 4 lines", res, err)
	}
	path := filepath.Join(dir, "audit.jsonl")
	b, _ := os.ReadFile(path)
	os.WriteFile(path, []byte(strings.Replace(string(b), `"path":"/x"`, `"path":"/y"`, 1)), 0o600)
	res, err = c.AuditVerify(context.Background())
	if err != nil || res.OK || res.FirstBad == nil || res.FirstBad.File != "audit.jsonl" || res.FirstBad.Line != 3 {
		t.Fatalf("AuditVerify after tampering = %+v, %v; want line 3 of audit.jsonl", res, err)
	}
}

// TestAudit_ConfigMapsToWriterOptions: the config's 0 rate means no
// budget (the writer's 0 means its default).
func TestAudit_ConfigMapsToWriterOptions(t *testing.T) {
	if o := auditOptions(config.AuditConfig{RatePerSecond: 0}, nil, nil, nil); o.RatePerSecond >= 0 {
		t.Errorf("rate 0 maps to %v, want a negative (off) rate", o.RatePerSecond)
	}
	if o := auditOptions(config.AuditConfig{RatePerSecond: 5, Burst: 7}, nil, nil, nil); o.RatePerSecond != 5 || o.Burst != 7 {
		t.Errorf("options = %+v", o)
	}
}

// TestAudit_QueryOutputHasNoRawControlOrBidi: the lines the API streams
// to `clauderon audit --json` are escaped like the file.
func TestAudit_QueryOutputHasNoRawControlOrBidi(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.jsonl")
	w, err := audit.Open(path, audit.Options{KeepQuery: true})
	if err != nil {
		t.Fatal(err)
	}
	w.Write(audit.Record{Container: "c\u202e", Path: "/\u009b2J\u2028", Decision: "intercept"})
	w.Close()
	var out strings.Builder
	if err := tailAudit(context.Background(), path, api.AuditQuery{}, "", &out); err != nil {
		t.Fatal(err)
	}
	for _, r := range out.String() {
		if r == 0x202e || r == 0x9b || r == 0x2028 {
			t.Fatalf("raw %U in %q", r, out.String())
		}
	}
	if !strings.Contains(out.String(), `c\u202e`) {
		t.Errorf("output = %s", out.String())
	}
}
