package main

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/clauderon/clauderond/appliance/api"
	"github.com/clauderon/clauderond/appliance/envvars"
	"github.com/google/go-cmp/cmp"
)

type fakeBackend struct {
	mu       sync.Mutex
	status   api.Status
	sessions []api.Session
	doctor   api.DoctorReport
	gotQuery api.AuditQuery
	gotRun   api.RunRequest
	created  []api.CreateRequest
	wsRoot   string // PrepareWorkspace makes directories here
	// printExit is the exit code print sessions end with (they are
	// "exited" right after CreateSession).
	printExit int
	// afterCreate, if set, runs when a session is created (the "agent").
	afterCreate func(api.CreateRequest)
}

func (f *fakeBackend) Status(ctx context.Context) (api.Status, error) { return f.status, nil }
func (f *fakeBackend) CreateSession(ctx context.Context, req api.CreateRequest) (api.Session, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for _, s := range f.sessions {
		if s.Name == req.Name {
			return api.Session{}, fmt.Errorf("session %q: %w (remove it with: clauderon rm %s)", req.Name, api.ErrConflict, req.Name)
		}
	}
	f.created = append(f.created, req)
	s := api.Session{Name: req.Name, Container: "clauderon-" + req.Name, Image: "clauderon-agent:latest", Agent: req.Agent, Profile: "default",
		Prompt: req.Prompt, Print: req.Print, State: "running", CreatedAt: time.Date(2026, 11, 28, 21, 0, 0, 0, time.UTC),
		Workspace: req.Workspace, Repo: req.Repo, Branch: req.Branch}
	created := s
	if f.afterCreate != nil {
		f.afterCreate(req)
	}
	if req.Print {
		s.State, s.ExitCode = "exited", f.printExit
	}
	f.sessions = append(f.sessions, s)
	return created, nil
}
func (f *fakeBackend) ListSessions(ctx context.Context) ([]api.Session, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	return append([]api.Session(nil), f.sessions...), nil
}
func (f *fakeBackend) RemoveSession(ctx context.Context, name string) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	for i, s := range f.sessions {
		if s.Name == name {
			f.sessions = append(f.sessions[:i], f.sessions[i+1:]...)
			return nil
		}
	}
	return fmt.Errorf("session %q: %w", name, api.ErrNotFound)
}
func (f *fakeBackend) SessionLogs(ctx context.Context, name string, follow bool, w io.Writer) error {
	_, err := fmt.Fprintf(w, "log of %s follow=%v\n", name, follow)
	return err
}
func (f *fakeBackend) ControlSession(ctx context.Context, name, action string) (api.Session, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	for i, s := range f.sessions {
		if s.Name == name {
			f.sessions[i].State = map[string]string{api.ActionStop: "exited", api.ActionStart: "running", api.ActionRestart: "running"}[action]
			return f.sessions[i], nil
		}
	}
	return api.Session{}, fmt.Errorf("session %q: %w", name, api.ErrNotFound)
}
func (f *fakeBackend) PrepareWorkspace(ctx context.Context, name string) (api.Workspace, error) {
	p := filepath.Join(f.wsRoot, name)
	if err := os.Mkdir(p, 0o700); err != nil {
		return api.Workspace{}, err
	}
	return api.Workspace{Path: p, UID: os.Getuid(), GID: os.Getgid()}, nil
}
func (f *fakeBackend) RunArgs(ctx context.Context, req api.RunRequest) (api.RunArgs, error) {
	f.mu.Lock()
	f.gotRun = req
	f.mu.Unlock()
	return api.RunArgs{Args: []string{"--network", "clauderon", "-e", "GITHUB_TOKEN=clauderon-proxy"}}, nil
}
func (f *fakeBackend) Doctor(ctx context.Context) (api.DoctorReport, error) { return f.doctor, nil }
func (f *fakeBackend) CA(ctx context.Context) (api.CA, error) {
	return api.CA{Path: "/s/proxy-ca.pem", Fingerprint: "ab:cd", PEM: "-----BEGIN CERTIFICATE-----\nX\n-----END CERTIFICATE-----\n"}, nil
}
func (f *fakeBackend) Audit(ctx context.Context, q api.AuditQuery, w io.Writer) error {
	f.mu.Lock()
	f.gotQuery = q
	f.mu.Unlock()
	_, err := io.WriteString(w, `{"ts":"2026-11-28T21:00:00Z","container":"clauderon-a","src_ip":"10.213.0.2","sni":"api.anthropic.com","host":"api.anthropic.com","method":"POST","path":"/v1/messages","status":200,"decision":"intercept","rule":"api.anthropic.com","auth_injected":true,"duration_ms":12.5,"error":""}`+"\n"+
		`{"ts":"2026-11-28T21:00:01Z","container":"","src_ip":"10.213.0.9:4242","sni":"evil.example","host":"","method":"","path":"","status":0,"decision":"deny","rule":"default-deny","auth_injected":false,"duration_ms":0.3,"error":"not allowed"}`+"\n")
	return err
}
func (f *fakeBackend) Reload(ctx context.Context) error { return nil }

var readyStatus = api.Status{
	Ready: true, Version: "v0.1.0", StateDir: "/home/u/.clauderon", Socket: "/home/u/.clauderon/clauderond.sock", Mode: "enforce",
	Network:     api.Network{Name: "clauderon", Bridge: "clauderon0", Subnet: "10.213.0.0/24", Gateway: "10.213.0.1"},
	Listeners:   []api.Listener{{Name: "tls", Address: "10.213.0.1:8443", OK: true}, {Name: "dns", Address: "10.213.0.1:8053", OK: true}},
	Enforcement: api.EnforcementIntact,
	Counters:    []api.Counter{{Rule: "clauderon:redirect-443", Packets: 3, Bytes: 180}},
	Credentials: []api.Credential{{Profile: "default", Name: "anthropic", Source: "env:CLAUDE_CODE_OAUTH_TOKEN", Kind: "oauth", Fingerprint: "ab12cd", Present: true}},
	CA:          api.CA{Path: "/home/u/.clauderon/proxy-ca.pem", Fingerprint: "ff00"},
	Requests:    map[string]uint64{"intercept": 4, "deny": 1},
}

// harness serves a fake backend on a socket and runs the CLI against it.
type harness struct {
	t      *testing.T
	fb     *fakeBackend
	socket string
	execs  [][]string
}

func newHarness(t *testing.T) *harness {
	t.Helper()
	fb := &fakeBackend{status: readyStatus, doctor: api.DoctorReport{Steps: []api.DoctorStep{{Name: "daemon ready", OK: true, Detail: "v0.1.0"}}},
		wsRoot: t.TempDir()}
	sock := filepath.Join(t.TempDir(), "d.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: api.NewHandler(fb, nil), ReadHeaderTimeout: 5 * time.Second}
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close(); <-done })
	return &harness{t: t, fb: fb, socket: sock}
}

func (h *harness) run(args ...string) (code int, stdout, stderr string) {
	h.t.Helper()
	var out, errOut bytes.Buffer
	ex := func(a []string, env []string) error {
		h.execs = append(h.execs, a)
		return nil
	}
	code = run(context.Background(), append([]string{"--socket", h.socket}, args...), strings.NewReader(""), &out, &errOut, []string{"HOME=/nonexistent"}, ex)
	return code, out.String(), errOut.String()
}

func TestStatus_HumanOutputAndExitCodes(t *testing.T) {
	h := newHarness(t)
	code, out, errOut := h.run("status")
	if code != 0 || errOut != "" {
		t.Fatalf("status = %d, stderr %q", code, errOut)
	}
	for _, want := range []string{
		"clauderond v0.1.0: READY\n",
		"enforcement: intact (egress mode enforce)",
		"network:     clauderon (bridge clauderon0, subnet 10.213.0.0/24, gateway 10.213.0.1)",
		"listeners:   tls 10.213.0.1:8443 ok",
		"credentials: default/anthropic: oauth from env:CLAUDE_CODE_OAUTH_TOKEN (fingerprint ab12cd)",
		"requests:    deny=1 intercept=4",
		"clauderon:redirect-443",
	} {
		if !strings.Contains(out, want) {
			t.Errorf("status output lacks %q:\n%s", want, out)
		}
	}
	if strings.Contains(out, "!!!") {
		t.Errorf("intact status printed a warning:\n%s", out)
	}

	h.fb.status.Enforcement, h.fb.status.Drift = api.EnforcementDegraded, []string{"missing rule clauderon:redirect-443"}
	code, out, errOut = h.run("status")
	if code != 0 {
		t.Errorf("degraded but ready: exit %d, want 0", code)
	}
	if !strings.HasPrefix(out, "!!! ENFORCEMENT DEGRADED") || !strings.Contains(out, "drift: missing rule clauderon:redirect-443") {
		t.Errorf("degraded not loud at the top:\n%s", out)
	}
	if !strings.Contains(errOut, "WARNING: enforcement is DEGRADED") {
		t.Errorf("stderr lacks the warning: %q", errOut)
	}

	h.fb.status.Ready, h.fb.status.Problems = false, []string{"docker network missing"}
	code, out, _ = h.run("status")
	if code != 1 || !strings.Contains(out, "NOT READY") || !strings.Contains(out, "problem:     docker network missing") {
		t.Errorf("not ready: exit %d, output:\n%s", code, out)
	}
	code, out, _ = h.run("status", "--json")
	var st api.Status
	if err := json.Unmarshal([]byte(out), &st); err != nil || code != 1 || st.Ready || st.Enforcement != api.EnforcementDegraded {
		t.Errorf("status --json = %d %v %+v\n%s", code, err, st, out)
	}
}

func TestSessions_CreateListLogsRm(t *testing.T) {
	h := newHarness(t)
	code, out, errOut := h.run("create", "--no-repo", "--name", "fix", "--prompt", "fix the tests", "--agent", "codex")
	if code != 0 {
		t.Fatalf("create = %d %s", code, errOut)
	}
	if want := "attach: clauderon attach fix   (detach: Ctrl-P Ctrl-Q)\n"; out != want {
		t.Errorf("create output:\n%q\nwant\n%q", out, want)
	}
	if want := "created session fix (container clauderon-fix, image clauderon-agent:latest, agent codex, profile default)\n"; errOut != want {
		t.Errorf("create stderr:\n%q\nwant\n%q", errOut, want)
	}
	code, out, _ = h.run("create", "--no-repo", "--json", "--name", "q", "--prompt", "hi", "--print", "--detach")
	var se api.Session
	if err := json.Unmarshal([]byte(out), &se); err != nil || code != 0 || !se.Print || se.Name != "q" {
		t.Errorf("create --json = %d %v %+v", code, err, se)
	}
	if diff := cmp.Diff(api.CreateRequest{Name: "q", Prompt: "hi", Print: true, Agent: "claude"}, h.fb.created[1]); diff != "" {
		t.Errorf("request (-want +got):\n%s", diff)
	}
	code, _, errOut = h.run("create", "--no-repo", "--name", "fix", "--prompt", "again")
	if code != 1 || !strings.Contains(errOut, `session "fix": already exists (remove it with: clauderon rm fix)`) {
		t.Errorf("duplicate create = %d %q", code, errOut)
	}

	code, out, _ = h.run("list")
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if code != 0 || len(lines) != 3 || !strings.HasPrefix(lines[0], "NAME") || !strings.Contains(lines[1], "fix") || !strings.Contains(lines[2], "print") {
		t.Errorf("list = %d\n%s", code, out)
	}
	code, out, _ = h.run("list", "--json")
	var ss []api.Session
	if err := json.Unmarshal([]byte(out), &ss); err != nil || code != 0 || len(ss) != 2 {
		t.Errorf("list --json = %d %v %s", code, err, out)
	}

	code, out, _ = h.run("logs", "q", "-f")
	if code != 0 || out != "log of q follow=true\n" {
		t.Errorf("logs = %d %q", code, out)
	}

	code, out, _ = h.run("rm", "fix")
	if code != 0 || out != "removed session fix\n" {
		t.Errorf("rm = %d %q", code, out)
	}
	code, _, errOut = h.run("rm", "fix")
	if code != 1 || !strings.Contains(errOut, `no session "fix"`) {
		t.Errorf("rm missing = %d %q", code, errOut)
	}
	code, out, _ = h.run("--json", "rm", "nope")
	var e map[string]any
	if err := json.Unmarshal([]byte(out), &e); err != nil || code != 1 || e["exit_code"] != float64(1) {
		t.Errorf("rm --json error = %d %v %q", code, err, out)
	}
	h.fb.sessions = nil
	if _, out, _ := h.run("list"); !strings.HasPrefix(out, "no sessions") {
		t.Errorf("empty list = %q", out)
	}
	if _, out, _ := h.run("list", "--json"); strings.TrimSpace(out) != "[]" {
		t.Errorf("empty list --json = %q, want []", out)
	}
}

func TestAttachAndRun_ExecDocker(t *testing.T) {
	h := newHarness(t)
	h.fb.sessions = []api.Session{{Name: "a", Container: "clauderon-a", State: "running"}, {Name: "b", Container: "clauderon-b", State: "exited"}}
	if code, _, errOut := h.run("attach", "a"); code != 0 {
		t.Fatalf("attach = %d %s", code, errOut)
	}
	code, _, errOut := h.run("attach", "b")
	if code != 1 || !strings.Contains(errOut, "session b is exited, not running; see its output with: clauderon logs b") {
		t.Errorf("attach exited = %d %q", code, errOut)
	}
	code, _, errOut = h.run("attach", "zzz")
	if code != 1 || !strings.Contains(errOut, `no session "zzz" (sessions: a, b)`) {
		t.Errorf("attach unknown = %d %q", code, errOut)
	}
	code, _, errOut = h.run("run", "--profile", "work", "--rm", "-e", "X=1", "alpine:3", "sh", "-c", "echo --profile")
	if code != 0 {
		t.Fatalf("run = %d %s", code, errOut)
	}
	want := [][]string{
		{"attach", "clauderon-a"},
		{"run", "--network", "clauderon", "-e", "GITHUB_TOKEN=clauderon-proxy", "--rm", "-e", "X=1", "alpine:3", "sh", "-c", "echo --profile"},
	}
	if diff := cmp.Diff(want, h.execs); diff != "" {
		t.Errorf("execs (-want +got):\n%s", diff)
	}
	if h.fb.gotRun.Profile != "work" {
		t.Errorf("run profile = %q", h.fb.gotRun.Profile)
	}
	code, out, _ := h.run("run", "--json", "alpine")
	var got map[string][]string
	if err := json.Unmarshal([]byte(out), &got); err != nil || code != 0 || got["docker"][len(got["docker"])-1] != "alpine" {
		t.Errorf("run --json = %d %v %q", code, err, out)
	}
	if code, _, _ := h.run("run"); code != 2 {
		t.Errorf("run without image = %d, want 2", code)
	}
	if code, _, _ := h.run("run", "--profile"); code != 2 {
		t.Errorf("run --profile without value = %d, want 2", code)
	}
}

func TestAudit_HumanAndJSON(t *testing.T) {
	h := newHarness(t)
	code, out, _ := h.run("audit", "--container", "clauderon-a", "--host", "api.anthropic.com", "-n", "5")
	if code != 0 {
		t.Fatal(code)
	}
	want := "2026-11-28T21:00:00.000Z clauderon-a          intercept   api.anthropic.com POST /v1/messages 200 auth=injected rule=api.anthropic.com 12.5ms\n" +
		"2026-11-28T21:00:01.000Z ?10.213.0.9:4242     deny        evil.example rule=default-deny 0.3ms error=\"not allowed\"\n"
	if out != want {
		t.Errorf("audit output:\n%s\nwant:\n%s", out, want)
	}
	if diff := cmp.Diff(api.AuditQuery{Container: "clauderon-a", Host: "api.anthropic.com", Lines: 5}, h.fb.gotQuery); diff != "" {
		t.Errorf("query (-want +got):\n%s", diff)
	}
	_, out, _ = h.run("audit", "--json")
	for _, l := range strings.Split(strings.TrimSpace(out), "\n") {
		var m map[string]any
		if err := json.Unmarshal([]byte(l), &m); err != nil {
			t.Errorf("audit --json line is not JSON: %q", l)
		}
	}
	if h.fb.gotQuery.Lines != 50 {
		t.Errorf("default -n = %d, want 50", h.fb.gotQuery.Lines)
	}
}

func TestDoctorAndCA(t *testing.T) {
	h := newHarness(t)
	code, out, _ := h.run("doctor")
	if code != 0 || out != "[ok  ] daemon ready: v0.1.0\nall 1 checks passed\n" {
		t.Errorf("doctor ok = %d %q", code, out)
	}
	h.fb.doctor.Steps = append(h.fb.doctor.Steps, api.DoctorStep{Name: "CA key private", Detail: "mode 0644", Fix: "sudo chmod 600 key"})
	code, out, _ = h.run("doctor")
	if code != 1 || !strings.Contains(out, "[FAIL] CA key private: mode 0644\n       fix: sudo chmod 600 key\n") || !strings.Contains(out, "1 of 2 checks failed") {
		t.Errorf("doctor failing = %d %q", code, out)
	}
	code, out, _ = h.run("doctor", "--json")
	var rep api.DoctorReport
	if err := json.Unmarshal([]byte(out), &rep); err != nil || code != 1 || len(rep.Steps) != 2 {
		t.Errorf("doctor --json = %d %v %q", code, err, out)
	}
	code, out, _ = h.run("ca", "--pem")
	if code != 0 || !strings.HasPrefix(out, "-----BEGIN CERTIFICATE-----") {
		t.Errorf("ca --pem = %d %q", code, out)
	}
	code, out, _ = h.run("ca")
	if code != 0 || !strings.Contains(out, "fingerprint: ab:cd") {
		t.Errorf("ca = %d %q", code, out)
	}
}

func TestExitCodes_UsageAndUnreachable(t *testing.T) {
	var out, errOut bytes.Buffer
	sock := filepath.Join(t.TempDir(), "none.sock")
	code := run(context.Background(), []string{"--socket", sock, "status"}, nil, &out, &errOut, nil, nil)
	if code != 3 || !strings.Contains(errOut.String(), "is clauderond running? try: sudo systemctl start clauderond") || !strings.Contains(errOut.String(), sock) {
		t.Errorf("unreachable = %d %q", code, errOut.String())
	}
	h := newHarness(t)
	for _, args := range [][]string{{"nosuchcmd"}, {"status", "extra"}, {"logs"}, {"create", "--prompt", "x"}, {"audit", "--bogus"}, {"audit", "-n", "x"}} {
		if code, _, errOut := h.run(args...); code != 2 || !strings.Contains(errOut, "clauderon --help") {
			t.Errorf("%v = %d %q, want usage exit 2", args, code, errOut)
		}
	}
}

func TestFindSocket(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), 0o644); err != nil {
			t.Fatal(err)
		}
		return p
	}
	installed := write("installed.yaml", "state_dir: /var/lib/clauderon\nsocket: {path: /run/clauderon/clauderond.sock, group: clauderon}\n")
	stateOnly := write("state.yaml", "state_dir: /srv/c\n")
	broken := write("broken.yaml", "socket: [\n")
	none := filepath.Join(dir, "absent.yaml")
	tests := []struct {
		name            string
		flag, config    string
		sys             string
		env             map[string]string
		want, wantFrom  string
		wantErrContains string
	}{
		{"flag wins", "/x.sock", installed, installed, map[string]string{"CLAUDERON_SOCKET": "/y.sock"}, "/x.sock", "--socket", ""},
		{"env socket", "", "", installed, map[string]string{"CLAUDERON_SOCKET": "/run/x.sock", "HOME": "/h"}, "/run/x.sock", "$CLAUDERON_SOCKET", ""},
		{"installed config, no flags or env", "", "", installed, map[string]string{"HOME": "/h"}, "/run/clauderon/clauderond.sock", installed, ""},
		{"config names only state_dir", "", "", stateOnly, map[string]string{"HOME": "/h"}, "/srv/c/clauderond.sock", stateOnly, ""},
		{"--config", "", stateOnly, installed, map[string]string{"HOME": "/h"}, "/srv/c/clauderond.sock", stateOnly, ""},
		{"$CLAUDERON_CONFIG", "", "", installed, map[string]string{"HOME": "/h", "CLAUDERON_CONFIG": stateOnly}, "/srv/c/clauderond.sock", stateOnly, ""},
		{"env state dir overrides the file's", "", "", stateOnly, map[string]string{"CLAUDERON_STATE_DIR": "/o"}, "/o/clauderond.sock", stateOnly, ""},
		{"no config file: env state dir", "", "", none, map[string]string{"CLAUDERON_STATE_DIR": "/srv/c", "HOME": "/h"}, "/srv/c/clauderond.sock", "$CLAUDERON_STATE_DIR", ""},
		{"no config file: home", "", "", none, map[string]string{"HOME": "/nonexistent-home"}, "/nonexistent-home/.clauderon/clauderond.sock", "", ""},
		{"missing --config is an error", "", none, installed, nil, "", "", "absent.yaml"},
		{"broken config names the file", "", "", broken, nil, "", "", "broken.yaml"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := findSocket(tt.flag, tt.config, tt.sys, tt.env)
			if tt.wantErrContains != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErrContains) {
					t.Fatalf("findSocket = %+v, %v; want an error naming %q", got, err, tt.wantErrContains)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if got.path != tt.want && !(tt.name == "no config file: home" && got.path == "/root/.clauderon/clauderond.sock") {
				t.Errorf("socket = %q, want %q", got.path, tt.want)
			}
			if tt.wantFrom != "" && got.from != tt.wantFrom {
				t.Errorf("from = %q, want %q", got.from, tt.wantFrom)
			}
		})
	}
}

func TestCompletion_SessionNamesFromDaemon(t *testing.T) {
	h := newHarness(t)
	h.fb.sessions = []api.Session{{Name: "alpha", State: "running"}, {Name: "beta", State: "exited"}}
	code, out, _ := h.run("__complete", "attach", "")
	if code != 0 || !strings.Contains(out, "alpha\trunning") || !strings.Contains(out, "beta\texited") {
		t.Errorf("completion = %d %q", code, out)
	}
	if code, out, _ := h.run("completion", "bash"); code != 0 || !strings.Contains(out, "bash completion") {
		t.Errorf("completion bash = %d %.60q", code, out)
	}
}

// TestFindSocket_FirstDuplicateVariableWins: a variable given twice reads
// as os.Getenv reads it (the first), so the CLI talks to the socket a shell
// would show.
func TestFindSocket_FirstDuplicateVariableWins(t *testing.T) {
	env := envvars.Map([]string{"CLAUDERON_SOCKET=/first", "CLAUDERON_SOCKET=/second"})
	got, err := findSocket("", "", filepath.Join(t.TempDir(), "none.yaml"), env)
	if err != nil || got.path != "/first" {
		t.Errorf("findSocket = %+v, %v; want /first", got, err)
	}
}
