package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/clauderon/clauderond/appliance/api"
)

// auditBackend is the fake daemon with an audit of its own: lines to
// stream and a chain verification result.
type auditBackend struct {
	*fakeBackend
	lines  string
	verify api.AuditVerification
}

func (b *auditBackend) Audit(ctx context.Context, q api.AuditQuery, w io.Writer) error {
	_, err := io.WriteString(w, b.lines)
	return err
}

func (b *auditBackend) AuditVerify(ctx context.Context) (api.AuditVerification, error) {
	return b.verify, nil
}

// runAgainst serves b and runs the CLI with args against it.
func runAgainst(t *testing.T, b api.Backend, args ...string) (code int, stdout, stderr string) {
	t.Helper()
	sock := filepath.Join(t.TempDir(), "d.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: api.NewHandler(b, nil), ReadHeaderTimeout: 5 * time.Second}
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close(); <-done })
	var out, errOut bytes.Buffer
	code = run(context.Background(), append([]string{"--socket", sock}, args...), strings.NewReader(""), &out, &errOut, []string{"HOME=/nonexistent"}, nil)
	return code, out.String(), errOut.String()
}

func TestAuditVerify_IntactExitsZero(t *testing.T) {
	b := &auditBackend{fakeBackend: &fakeBackend{}, verify: api.AuditVerification{OK: true, Files: []string{"audit.jsonl.1", "audit.jsonl"}, Lines: 120}}
	code, out, errOut := runAgainst(t, b, "audit", "verify")
	if code != exitOK || !strings.Contains(out, "audit intact: 120 chained lines in 2 files (audit.jsonl.1, audit.jsonl)") {
		t.Fatalf("code %d, out %q, err %q", code, out, errOut)
	}
	code, out, _ = runAgainst(t, b, "--json", "audit", "verify")
	var got api.AuditVerification
	if code != exitOK || json.Unmarshal([]byte(out), &got) != nil || !got.OK || got.Lines != 120 {
		t.Errorf("--json: code %d, out %q", code, out)
	}
}

func TestAuditVerify_FirstProblemExitsOne(t *testing.T) {
	b := &auditBackend{fakeBackend: &fakeBackend{}, verify: api.AuditVerification{OK: false, Files: []string{"audit.jsonl"}, Lines: 6,
		FirstBad: &api.AuditBadLine{File: "audit.jsonl", Line: 7, Reason: "the line does not match its chain MAC\x1b[2K"}}}
	code, out, _ := runAgainst(t, b, "audit", "verify")
	if code != exitFailure || !strings.Contains(out, "AUDIT LOG TAMPERED") || !strings.Contains(out, "audit.jsonl line 7: the line does not match its chain MAC\\x1b[2K") {
		t.Fatalf("code %d, out %q", code, out)
	}
	code, out, _ = runAgainst(t, b, "--json", "audit", "verify")
	var got api.AuditVerification
	if code != exitFailure || json.Unmarshal([]byte(out), &got) != nil || got.OK || got.FirstBad == nil || got.FirstBad.Line != 7 {
		t.Errorf("--json: code %d, out %q", code, out)
	}
}

// TestAttack_AuditCLICannotBeSteered streams records whose every field
// holds terminal escapes through `clauderon audit`: each record is one
// output line and no raw control, C1 or bidi character reaches the
// terminal.
func TestAttack_AuditCLICannotBeSteered(t *testing.T) {
	var lines strings.Builder
	for _, evil := range evilStrings {
		rec := map[string]any{"ts": "2026-11-28T21:00:00Z", "container": evil, "src_ip": evil, "sni": evil, "host": evil,
			"method": evil, "path": evil, "status": 200, "decision": evil, "rule": evil, "error": evil}
		b, _ := json.Marshal(rec)
		lines.Write(b)
		lines.WriteByte('\n')
	}
	lines.WriteString("not json \x1b]0;owned\x07 \u202e\n") // an unparsable line passes through, escaped
	b := &auditBackend{fakeBackend: &fakeBackend{}, lines: lines.String()}
	code, out, errOut := runAgainst(t, b, "audit")
	if code != exitOK {
		t.Fatalf("code %d, err %q", code, errOut)
	}
	assertTerminalSafe(t, out, len(evilStrings)+1)
}
