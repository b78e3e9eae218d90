package session

import (
	"bytes"
	"context"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	"github.com/clauderon/clauderond/appliance/api"
	"github.com/docker/docker/api/types/mount"
	"github.com/google/go-cmp/cmp"
)

const testCAPEM = "-----BEGIN CERTIFICATE-----\nMIIBtest\n-----END CERTIFICATE-----\n"

// stateDir lays out a state dir like the daemon's, including everything
// that must never be mounted.
func stateDir(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	files := map[string]string{
		"proxy-ca.pem":       testCAPEM,
		"proxy-ca-key.pem":   "-----BEGIN EC PRIVATE KEY-----\nsecret\n",
		"secrets/anthropic":  "sk-ant-oat01-REAL-SECRET",
		"db.sqlite.existing": "",
		"audit.jsonl":        "{}\n",
		"clauderond.sock":    "",
	}
	for name, content := range files {
		p := filepath.Join(dir, name)
		if err := os.MkdirAll(filepath.Dir(p), 0o700); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, []byte(content), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return dir
}

func newManager(t *testing.T, d *fakeDocker, dir string) *Manager {
	t.Helper()
	sys := filepath.Join(t.TempDir(), "system-bundle.crt")
	if err := os.WriteFile(sys, []byte("# system roots\n-----BEGIN CERTIFICATE-----\nSYS\n-----END CERTIFICATE-----"), 0o644); err != nil {
		t.Fatal(err)
	}
	m, err := New(context.Background(), Config{Docker: d, Network: "clauderon", StateDir: dir, User: "1000:1000", Workdir: "/workspace", SystemBundle: sys})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = m.Close() })
	return m
}

func TestCreate_ContainerGetsOnlyPlaceholdersAndTrust(t *testing.T) {
	d := newFakeDocker()
	dir := stateDir(t)
	m := newManager(t, d, dir)
	se, err := m.Create(context.Background(), api.CreateRequest{Name: "fix-tests", Prompt: "fix the 'tests'"})
	if err != nil {
		t.Fatal(err)
	}
	if se.Container != "clauderon-fix-tests" || se.State != "running" || se.Agent != "claude" || se.Profile != "default" || se.Image != "clauderon-agent:latest" {
		t.Errorf("session = %+v", se)
	}
	c, err := d.find("clauderon-fix-tests")
	if err != nil {
		t.Fatal(err)
	}
	sfx := testSuffix(t, dir, "session\x00clauderon-fix-tests\x00"+se.Owner)
	wantEnv := []string{
		"CLAUDE_CODE_OAUTH_TOKEN=sk-ant-oat01-clauderon-proxy-placeholder-" + sfx,
		"CURL_CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt",
		"GITHUB_TOKEN=clauderon-proxy-" + sfx,
		"GIT_SSL_CAINFO=/etc/ssl/certs/ca-certificates.crt",
		"HOME=/home/clauderon",
		"NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt",
		"OPENAI_API_KEY=sk-openai-clauderon-proxy-placeholder-" + sfx,
		"REQUESTS_CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt",
		"SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt",
		"DISABLE_AUTOUPDATER=1",
	}
	if diff := cmp.Diff(wantEnv, c.cfg.Env); diff != "" {
		t.Errorf("env (-want +got):\n%s", diff)
	}
	wantMounts := []mount.Mount{
		{Type: mount.TypeBind, Source: filepath.Join(dir, "ca-bundle.pem"), Target: "/etc/ssl/certs/ca-certificates.crt", ReadOnly: true},
		{Type: mount.TypeBind, Source: filepath.Join(dir, "proxy-ca.pem"), Target: "/usr/local/share/ca-certificates/clauderon.crt", ReadOnly: true},
		{Type: mount.TypeBind, Source: filepath.Join(dir, "proxy-ca.pem"), Target: "/etc/clauderon/proxy-ca.pem", ReadOnly: true},
		{Type: mount.TypeBind, Source: filepath.Join(dir, "sessions", "fix-tests", "claude.json"), Target: "/home/clauderon/.claude.json"},
		{Type: mount.TypeBind, Source: filepath.Join(dir, "uploads", "fix-tests"), Target: "/workspace/.clauderon/uploads"},
		{Type: mount.TypeBind, Source: filepath.Join(dir, "uploads", "fix-tests"), Target: "/uploads"},
		{Type: mount.TypeBind, Source: filepath.Join(dir, "codex"), Target: "/etc/clauderon/codex", ReadOnly: true},
		{Type: mount.TypeBind, Source: filepath.Join(dir, "sessions", "fix-tests", "codex"), Target: "/home/clauderon/.codex"},
	}
	if diff := cmp.Diff(wantMounts, c.hc.Mounts); diff != "" {
		t.Errorf("mounts (-want +got):\n%s", diff)
	}
	if len(c.hc.Binds) != 0 || len(c.hc.Tmpfs) != 0 || len(c.hc.VolumesFrom) != 0 || c.hc.Privileged {
		t.Errorf("unexpected host config: binds=%v tmpfs=%v volumesFrom=%v privileged=%v", c.hc.Binds, c.hc.Tmpfs, c.hc.VolumesFrom, c.hc.Privileged)
	}
	if diff := cmp.Diff([]string{"claude", "--dangerously-skip-permissions", "--", "fix the 'tests'"}, []string(c.cfg.Cmd)); diff != "" {
		t.Errorf("cmd (-want +got):\n%s", diff)
	}
	if !c.cfg.Tty || !c.cfg.OpenStdin || c.cfg.User != "1000:1000" || c.cfg.WorkingDir != "/workspace" || c.network != "clauderon" {
		t.Errorf("config: tty=%v stdin=%v user=%q workdir=%q network=%q", c.cfg.Tty, c.cfg.OpenStdin, c.cfg.User, c.cfg.WorkingDir, c.network)
	}
	token := c.cfg.Labels[LabelRun]
	if diff := cmp.Diff(map[string]string{"clauderon.session": "fix-tests", "clauderon.profile": "default", LabelRun: token}, c.cfg.Labels); diff != "" || len(token) != 32 {
		t.Errorf("labels (-want +got):\n%s", diff)
	}
	if !m.ExpectsRun(token) {
		t.Errorf("the session's run token %q is not expected (Docker's authorization plugin would refuse its labels)", token)
	}
	if diff := cmp.Diff([]string{"/home/clauderon/ 1000:1000 copyuid=false"}, c.copies); diff != "" {
		t.Errorf("home prepared before start (-want +got):\n%s", diff)
	}
	wantExecs := [][]string{
		{"user=0", "mkdir", "-p", "/workspace/.clauderon/hooks"},
		{"user=0", "chown", "1000:1000", "/workspace/.clauderon", "/workspace/.clauderon/hooks"},
	}
	if diff := cmp.Diff(wantExecs, d.execs); diff != "" {
		t.Errorf("execs (-want +got):\n%s", diff)
	}
}

// TestSecrets_NeverMountedIntoSessions defends property 4: nothing under
// secrets/, db.sqlite, audit.jsonl, sockets or the CA key reaches a container,
// whatever the agent or mode, and no env value is a real credential.
func TestSecrets_NeverMountedIntoSessions(t *testing.T) {
	t.Setenv("CLAUDE_CODE_OAUTH_TOKEN", "sk-ant-oat01-REAL-SECRET")
	d := newFakeDocker()
	dir := stateDir(t)
	m := newManager(t, d, dir)
	reqs := []api.CreateRequest{
		{Name: "a", Prompt: "p"},
		{Name: "b", Prompt: "p", Print: true},
		{Name: "c", Prompt: "p", Agent: "codex"},
		{Name: "d", Prompt: "p", Agent: "codex", Print: true, Profile: "work"},
	}
	for _, r := range reqs {
		if _, err := m.Create(context.Background(), r); err != nil {
			t.Fatalf("Create(%+v): %v", r, err)
		}
	}
	allowed := map[string]bool{"ca-bundle.pem": true, "proxy-ca.pem": true, "codex": true}
	for _, r := range reqs {
		allowed[filepath.Join("sessions", r.Name, "claude.json")] = true
		allowed[filepath.Join("sessions", r.Name, "codex")] = true
	}
	for _, c := range d.containers {
		for _, mnt := range c.hc.Mounts {
			rel, err := filepath.Rel(dir, mnt.Source)
			if err != nil || strings.HasPrefix(rel, "..") {
				t.Errorf("%s mounts %s from outside the state dir", c.name, mnt.Source)
				continue
			}
			if !allowed[rel] && !strings.HasPrefix(rel, "uploads"+string(filepath.Separator)) {
				t.Errorf("%s mounts %s (%s), which is not on the allowed list", c.name, mnt.Source, rel)
			}
			for _, bad := range []string{"secrets", "db.sqlite", "audit.jsonl", ".sock", "key", PlaceholderKeyName} {
				if strings.Contains(rel, bad) {
					t.Errorf("%s mounts forbidden %s", c.name, mnt.Source)
				}
			}
		}
		for _, e := range c.cfg.Env {
			if strings.Contains(e, "REAL-SECRET") {
				t.Errorf("%s env carries a real credential: %s", c.name, strings.SplitN(e, "=", 2)[0])
			}
		}
	}
	args, err := m.RunArgs(context.Background(), api.RunRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for _, a := range args.Args {
		for _, bad := range []string{"secrets", "db.sqlite", "audit.jsonl", ".sock", "key.pem", PlaceholderKeyName, "REAL-SECRET"} {
			if strings.Contains(a, bad) {
				t.Errorf("RunArgs arg %q contains %q", a, bad)
			}
		}
	}
}

func TestCreate_ModesAndAgents(t *testing.T) {
	tests := []struct {
		name      string
		req       api.CreateRequest
		wantCmd   []string
		wantTTY   bool
		wantHome  string
		wantCodex bool
	}{
		{"claude_print", api.CreateRequest{Name: "p", Prompt: "say hi", Print: true},
			[]string{"claude", "--dangerously-skip-permissions", "--print", "--verbose", "--", "say hi"}, false, "/home/clauderon", false},
		{"claude_interactive_no_prompt", api.CreateRequest{Name: "i"},
			[]string{"claude", "--dangerously-skip-permissions"}, true, "/home/clauderon", false},
		{"codex_interactive", api.CreateRequest{Name: "c", Prompt: "fix", Agent: "codex"},
			[]string{"codex", "--dangerously-bypass-approvals-and-sandbox", "--", "fix"}, true, "/home/clauderon", true},
		{"codex_interactive_no_prompt", api.CreateRequest{Name: "cn", Agent: "codex"},
			[]string{"codex", "--dangerously-bypass-approvals-and-sandbox"}, true, "/home/clauderon", true},
		{"codex_print", api.CreateRequest{Name: "cp", Prompt: "fix", Agent: "codex", Print: true},
			[]string{"codex", "exec", "--skip-git-repo-check", "--dangerously-bypass-approvals-and-sandbox", "--", "fix"}, false, "/home/clauderon", true},
		{"codex_print_prompt_like_a_subcommand", api.CreateRequest{Name: "cr", Prompt: "review", Agent: "codex", Print: true},
			[]string{"codex", "exec", "--skip-git-repo-check", "--dangerously-bypass-approvals-and-sandbox", "--", "review"}, false, "/home/clauderon", true},
		{"image_home_respected", api.CreateRequest{Name: "h", Prompt: "x", Image: "img-with-home:1", Profile: "work"},
			[]string{"claude", "--dangerously-skip-permissions", "--", "x"}, true, "/home/node", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := newFakeDocker()
			dir := stateDir(t)
			m := newManager(t, d, dir)
			if _, err := m.Create(context.Background(), tt.req); err != nil {
				t.Fatal(err)
			}
			c, _ := d.find(ContainerName(tt.req.Name))
			if diff := cmp.Diff(tt.wantCmd, []string(c.cfg.Cmd)); diff != "" {
				t.Errorf("cmd (-want +got):\n%s", diff)
			}
			if c.cfg.Tty != tt.wantTTY || c.cfg.OpenStdin != tt.wantTTY {
				t.Errorf("tty=%v stdin=%v, want %v", c.cfg.Tty, c.cfg.OpenStdin, tt.wantTTY)
			}
			var targets []string
			for _, mnt := range c.hc.Mounts {
				targets = append(targets, mnt.Target)
				if mnt.Target == "/etc/clauderon/codex" && !mnt.ReadOnly {
					t.Errorf("the shared Codex config mounted read-write")
				}
				if mnt.Target == tt.wantHome+"/.codex" && (mnt.ReadOnly || !strings.Contains(mnt.Source, filepath.Join("sessions", tt.req.Name, "codex"))) {
					t.Errorf("~/.codex = %+v, want the session's own, writable", mnt)
				}
				if strings.HasSuffix(mnt.Target, ".claude.json") && mnt.ReadOnly {
					t.Errorf("claude.json mounted read-only; claude rewrites it")
				}
			}
			joined := strings.Join(targets, " ")
			if !strings.Contains(joined, tt.wantHome+"/.claude.json") {
				t.Errorf("claude.json not at %s/.claude.json: %v", tt.wantHome, targets)
			}
			for _, want := range []string{tt.wantHome + "/.codex", "/etc/clauderon/codex", "/etc/clauderon/proxy-ca.pem", "/workspace/.clauderon/uploads"} {
				if !strings.Contains(joined, want) {
					t.Errorf("no mount at %s (%v)", want, targets)
				}
			}
			if tt.req.Profile != "" && c.cfg.Labels[LabelProfile] != tt.req.Profile {
				t.Errorf("profile label = %q", c.cfg.Labels[LabelProfile])
			}
		})
	}
}

func TestCreate_WritesSharedFiles(t *testing.T) {
	d := newFakeDocker()
	dir := stateDir(t)
	m := newManager(t, d, dir)
	if err := os.WriteFile(filepath.Join(dir, "claude.json"), []byte(`{"hasCompletedOnboarding": true, "userID": "kept"}`), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := m.Create(context.Background(), api.CreateRequest{Name: "s", Prompt: "p"}); err != nil {
		t.Fatal(err)
	}
	bundle, err := os.ReadFile(filepath.Join(dir, "ca-bundle.pem"))
	if err != nil {
		t.Fatal(err)
	}
	if !strings.HasPrefix(string(bundle), "# system roots\n") || !strings.HasSuffix(string(bundle), testCAPEM) {
		t.Errorf("bundle is not system roots + CA:\n%s", bundle)
	}
	cj, _ := os.ReadFile(filepath.Join(dir, "claude.json"))
	if !strings.Contains(string(cj), `"userID": "kept"`) {
		t.Errorf("existing claude.json was overwritten: %s", cj)
	}
	if _, err := os.Stat(filepath.Join(dir, "codex", "config.toml")); err != nil {
		t.Errorf("codex config: %v", err)
	}
	if st, err := os.Stat(filepath.Join(dir, "uploads", "s")); err != nil || !st.IsDir() {
		t.Errorf("uploads dir: %v", err)
	}

	dir2 := stateDir(t)
	m2 := newManager(t, newFakeDocker(), dir2)
	if _, err := m2.Create(context.Background(), api.CreateRequest{Name: "s", Prompt: "p"}); err != nil {
		t.Fatal(err)
	}
	cj, _ = os.ReadFile(filepath.Join(dir2, "claude.json"))
	if string(cj) != ClaudeJSONContent {
		t.Errorf("new claude.json template = %q, want %q", cj, ClaudeJSONContent)
	}
	cj, _ = os.ReadFile(filepath.Join(dir2, "sessions", "s", "claude.json"))
	if want := freshClaudeJSON(t); string(cj) != want {
		t.Errorf("session claude.json = %q, want %q", cj, want)
	}
	if os.Geteuid() == 0 {
		st, _ := os.Stat(filepath.Join(dir2, "sessions", "s", "claude.json"))
		if uid := fileUID(st); uid != 1000 {
			t.Errorf("claude.json owner = %d, want the session user 1000 (it must be writable in the container)", uid)
		}
	}
}

// TestCodexConfig_KeyFromTheEnvironment: the session's ~/.codex/config.toml
// (seeded from state_dir/codex) makes Codex send OPENAI_API_KEY (the
// placeholder the proxy replaces) to api.openai.com over HTTPS, without a
// WebSocket, calls home or the plugin sync; preferred_auth_method is gone (Codex 0.171
// ignores it with a warning).
func TestCodexConfig_KeyFromTheEnvironment(t *testing.T) {
	dir := stateDir(t)
	m := newManager(t, newFakeDocker(), dir)
	if _, err := m.Create(context.Background(), api.CreateRequest{Name: "cx", Prompt: "p", Agent: "codex", Print: true}); err != nil {
		t.Fatal(err)
	}
	got, err := os.ReadFile(filepath.Join(dir, "sessions", "cx", "codex", "config.toml"))
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		"\nmodel_provider = \"clauderon\"\n", "\n[model_providers.clauderon]\n", "\nbase_url = \"https://api.openai.com/v1\"\n",
		"\nenv_key = \"OPENAI_API_KEY\"\n", "\nwire_api = \"responses\"\n", "\nsupports_websockets = false\n",
		"\ncheck_for_update_on_startup = false\n", "\n[analytics]\nenabled = false\n", "\n[feedback]\nenabled = false\n", "\n[features]\nplugins = false\n",
	} {
		if !strings.Contains(string(got), want) {
			t.Errorf("codex config lacks %q:\n%s", want, got)
		}
	}
	if strings.Contains(string(got), "preferred_auth_method") {
		t.Errorf("codex config still sets preferred_auth_method:\n%s", got)
	}
}

func TestCreate_Rejections(t *testing.T) {
	d := newFakeDocker()
	m := newManager(t, d, stateDir(t))
	ctx := context.Background()
	if _, err := m.Create(ctx, api.CreateRequest{Name: "dup", Prompt: "p"}); err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name string
		req  api.CreateRequest
		want error
		msg  string
	}{
		{"duplicate", api.CreateRequest{Name: "dup"}, api.ErrConflict, "clauderon rm dup"},
		{"bad_name", api.CreateRequest{Name: "../etc"}, api.ErrInvalid, "session name"},
		{"empty_name", api.CreateRequest{}, api.ErrInvalid, "session name"},
		{"bad_agent", api.CreateRequest{Name: "x", Agent: "gpt"}, api.ErrInvalid, "agent"},
		{"bad_profile", api.CreateRequest{Name: "x", Profile: "Work Stuff"}, api.ErrInvalid, "profile"},
		{"print_without_prompt", api.CreateRequest{Name: "x", Print: true}, api.ErrInvalid, "needs a prompt"},
		{"missing_image", api.CreateRequest{Name: "x", Image: "nope:1"}, api.ErrInvalid, "never pull"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := m.Create(ctx, tt.req)
			if !errors.Is(err, tt.want) || !strings.Contains(err.Error(), tt.msg) {
				t.Errorf("Create(%+v) = %v, want %v containing %q", tt.req, err, tt.want, tt.msg)
			}
		})
	}
	// A foreign container holding the name is a conflict, not a crash.
	d.containers["foreign"] = &fakeContainer{id: "foreign", name: "clauderon-taken", status: "running"}
	if _, err := m.Create(ctx, api.CreateRequest{Name: "taken"}); !errors.Is(err, api.ErrConflict) || !strings.Contains(err.Error(), "docker rm -f clauderon-taken") {
		t.Errorf("Create over foreign container = %v", err)
	}
}

func TestNew_RefusesRootUser(t *testing.T) {
	for _, u := range []string{"0", "0:0", "root", "root:root"} {
		_, err := New(context.Background(), Config{Docker: newFakeDocker(), Network: "n", StateDir: t.TempDir(), User: u})
		if err == nil || !strings.Contains(err.Error(), "root") {
			t.Errorf("New(user %q) = %v, want refusal", u, err)
		}
	}
}

func TestCreate_StartFailureLeavesNothingBehind(t *testing.T) {
	d := newFakeDocker()
	d.failStart = errors.New("port already allocated")
	m := newManager(t, d, stateDir(t))
	_, err := m.Create(context.Background(), api.CreateRequest{Name: "s", Prompt: "p"})
	if err == nil || !strings.Contains(err.Error(), "starting container clauderon-s") {
		t.Fatalf("Create = %v, want start error", err)
	}
	if len(d.containers) != 0 {
		t.Errorf("containers left behind: %v", d.containers)
	}
	ss, err := m.List(context.Background())
	if err != nil || len(ss) != 0 {
		t.Errorf("sessions after failed create = %v, %v", ss, err)
	}
}

func TestManager_PersistsReconcilesRemoves(t *testing.T) {
	d := newFakeDocker()
	dir := stateDir(t)
	ctx := context.Background()
	m := newManager(t, d, dir)
	for _, n := range []string{"one", "two"} {
		if _, err := m.Create(ctx, api.CreateRequest{Name: n, Prompt: "p", Print: true}); err != nil {
			t.Fatal(err)
		}
	}
	c, _ := d.find("clauderon-one")
	c.status, c.exit = "exited", 3
	if err := m.Close(); err != nil {
		t.Fatal(err)
	}
	if err := m.Close(); err != nil {
		t.Errorf("second Close = %v, want idempotent", err)
	}

	m2 := newManager(t, d, dir)
	delete(d.containers, "id0002") // "two" removed behind our back
	if err := m2.Reconcile(ctx); err != nil {
		t.Fatal(err)
	}
	ss, err := m2.List(ctx)
	if err != nil {
		t.Fatal(err)
	}
	got := map[string]string{}
	for _, s := range ss {
		got[s.Name] = s.State
		if s.Name == "one" && s.ExitCode != 3 {
			t.Errorf("exit code = %d, want 3", s.ExitCode)
		}
	}
	if diff := cmp.Diff(map[string]string{"one": "exited", "two": StateGone}, got); diff != "" {
		t.Errorf("states after restart (-want +got):\n%s", diff)
	}
	if err := m2.Remove(ctx, "two"); err != nil {
		t.Errorf("Remove(gone session) = %v, want ok", err)
	}
	if err := m2.Remove(ctx, "one"); err != nil {
		t.Fatal(err)
	}
	if len(d.containers) != 0 {
		t.Errorf("containers after rm: %v", d.containers)
	}
	if err := m2.Remove(ctx, "one"); !errors.Is(err, api.ErrNotFound) {
		t.Errorf("Remove twice = %v, want ErrNotFound", err)
	}
}

func TestLogs_DemultiplexesPrintModeOutput(t *testing.T) {
	d := newFakeDocker()
	m := newManager(t, d, stateDir(t))
	ctx := context.Background()
	if _, err := m.Create(ctx, api.CreateRequest{Name: "p", Prompt: "p", Print: true}); err != nil {
		t.Fatal(err)
	}
	d.logs = multiplexed("answer\n", "warning\n")
	var buf bytes.Buffer
	if err := m.Logs(ctx, "p", false, &buf); err != nil {
		t.Fatal(err)
	}
	if buf.String() != "answer\nwarning\n" {
		t.Errorf("logs = %q", buf.String())
	}
	if err := m.Logs(ctx, "nope", false, &buf); !errors.Is(err, api.ErrNotFound) {
		t.Errorf("Logs(unknown) = %v", err)
	}
	delete(d.containers, "id0001")
	if err := m.Logs(ctx, "p", false, &buf); !errors.Is(err, api.ErrNotFound) || !strings.Contains(err.Error(), "gone") {
		t.Errorf("Logs(gone) = %v", err)
	}
}

func TestRunArgs(t *testing.T) {
	dir := stateDir(t)
	m := newManager(t, newFakeDocker(), dir)
	got, err := m.RunArgs(context.Background(), api.RunRequest{Profile: "work"})
	if err != nil {
		t.Fatal(err)
	}
	runLabel := ""
	for _, a := range got.Args {
		if strings.HasPrefix(a, LabelRun+"=") {
			runLabel = a
		}
	}
	if len(runLabel) != len(LabelRun)+1+32 {
		t.Errorf("run label %q, want %s=<32 hex>", runLabel, LabelRun)
	}
	want := []string{"--network", "clauderon", "--label", "clauderon.profile=work", "--label", runLabel, "--user", "1000:1000"}
	sfx := testSuffix(t, dir, "run\x00"+strings.TrimPrefix(runLabel, LabelRun+"="))
	env := []string{
		"CLAUDE_CODE_OAUTH_TOKEN=sk-ant-oat01-clauderon-proxy-placeholder-" + sfx,
		"CURL_CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt",
		"GITHUB_TOKEN=clauderon-proxy-" + sfx,
		"GIT_SSL_CAINFO=/etc/ssl/certs/ca-certificates.crt",
		"HOME=/home/clauderon",
		"NODE_EXTRA_CA_CERTS=/etc/ssl/certs/ca-certificates.crt",
		"OPENAI_API_KEY=sk-openai-clauderon-proxy-placeholder-" + sfx,
		"REQUESTS_CA_BUNDLE=/etc/ssl/certs/ca-certificates.crt",
		"SSL_CERT_FILE=/etc/ssl/certs/ca-certificates.crt",
	}
	sort.Strings(env)
	for _, e := range env {
		want = append(want, "-e", e)
	}
	want = append(want,
		"--mount", "type=bind,source="+dir+"/ca-bundle.pem,target=/etc/ssl/certs/ca-certificates.crt,readonly",
		"--mount", "type=bind,source="+dir+"/proxy-ca.pem,target=/usr/local/share/ca-certificates/clauderon.crt,readonly",
		"--mount", "type=bind,source="+dir+"/proxy-ca.pem,target=/etc/clauderon/proxy-ca.pem,readonly",
	)
	last := got.Args[len(got.Args)-1]
	runJSON := strings.TrimSuffix(strings.TrimPrefix(last, "type=bind,source="), ",target=/home/clauderon/.claude.json")
	if filepath.Dir(filepath.Dir(runJSON)) != filepath.Join(dir, "run") || filepath.Base(runJSON) != "claude.json" {
		t.Errorf("RunArgs claude.json mount %q, want state_dir/run/<random>/claude.json", last)
	}
	want = append(want, "--mount", last)
	if diff := cmp.Diff(want, got.Args); diff != "" {
		t.Errorf("RunArgs (-want +got):\n%s", diff)
	}
	if _, err := m.RunArgs(context.Background(), api.RunRequest{Profile: "Bad Profile"}); !errors.Is(err, api.ErrInvalid) {
		t.Errorf("RunArgs(bad profile) = %v", err)
	}
}

func TestRunArgs_NeedsCA(t *testing.T) {
	dir := t.TempDir()
	m := newManager(t, newFakeDocker(), dir)
	_, err := m.RunArgs(context.Background(), api.RunRequest{})
	if err == nil || !strings.Contains(err.Error(), "proxy-ca.pem") {
		t.Errorf("RunArgs without CA = %v, want an error naming the CA file", err)
	}
}

// TestDNS_ContainersResolveThroughTheGateway: with Options.DNS set, both
// `clauderon run` and sessions point Docker's embedded resolver at the
// gateway, so the DNS policy holds even when the host resolver is loopback.
func TestDNS_ContainersResolveThroughTheGateway(t *testing.T) {
	d := newFakeDocker()
	dir := stateDir(t)
	m := newManager(t, d, dir)
	m.opts.DNS = "10.213.0.1"
	ra, err := m.RunArgs(context.Background(), api.RunRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(strings.Join(ra.Args, " "), "--dns 10.213.0.1") {
		t.Errorf("RunArgs = %v, want --dns 10.213.0.1", ra.Args)
	}
	_, hc := m.containerSpec(api.CreateRequest{Name: "dns", Prompt: "p", Image: "img", Agent: "claude"}, "/home/clauderon", "1000:1000", "root")
	if len(hc.DNS) != 1 || hc.DNS[0] != "10.213.0.1" {
		t.Errorf("session HostConfig.DNS = %v, want [10.213.0.1]", hc.DNS)
	}
}

// claudeJSONSource returns the host file mounted at the container's
// ~/.claude.json.
func claudeJSONSource(t *testing.T, ms []mount.Mount) string {
	t.Helper()
	for _, mnt := range ms {
		if strings.HasSuffix(mnt.Target, "/.claude.json") {
			if mnt.ReadOnly {
				t.Errorf("claude.json mounted read-only; claude rewrites it")
			}
			return mnt.Source
		}
	}
	t.Fatalf("no claude.json mount in %v", ms)
	return ""
}

// runArgsClaudeJSON returns the host file RunArgs mounts at ~/.claude.json.
func runArgsClaudeJSON(t *testing.T, args []string) string {
	t.Helper()
	for _, a := range args {
		if src, ok := strings.CutSuffix(a, ",target=/home/clauderon/.claude.json"); ok {
			return strings.TrimPrefix(src, "type=bind,source=")
		}
	}
	t.Fatalf("no claude.json mount in %v", args)
	return ""
}

// TestClaudeJSON_NeverSharedBetweenContainers defends against one container
// planting mcpServers in a claude.json that another container (maybe with
// another profile's credentials) later runs: every session and every
// `clauderon run` gets its own file, written fresh, and a session's file
// goes with the session.
func TestClaudeJSON_NeverSharedBetweenContainers(t *testing.T) {
	d := newFakeDocker()
	dir := stateDir(t)
	m := newManager(t, d, dir)
	ctx := context.Background()
	const poison = `{"mcpServers":{"x":{"command":"/bin/sh","args":["-c","steal"]}}}`

	if _, err := m.Create(ctx, api.CreateRequest{Name: "low", Prompt: "p"}); err != nil {
		t.Fatal(err)
	}
	c, _ := d.find("clauderon-low")
	low := claudeJSONSource(t, c.hc.Mounts)
	if err := os.WriteFile(low, []byte(poison), 0o600); err != nil { // what the container can do
		t.Fatal(err)
	}
	if _, err := m.Create(ctx, api.CreateRequest{Name: "prod", Prompt: "p", Profile: "prod"}); err != nil {
		t.Fatal(err)
	}
	c, _ = d.find("clauderon-prod")
	prod := claudeJSONSource(t, c.hc.Mounts)
	ra1, err := m.RunArgs(ctx, api.RunRequest{Profile: "prod"})
	if err != nil {
		t.Fatal(err)
	}
	run1 := runArgsClaudeJSON(t, ra1.Args)
	if err := os.WriteFile(run1, []byte(poison), 0o600); err != nil {
		t.Fatal(err)
	}
	ra2, err := m.RunArgs(ctx, api.RunRequest{})
	if err != nil {
		t.Fatal(err)
	}
	run2 := runArgsClaudeJSON(t, ra2.Args)

	seen := map[string]string{}
	for who, p := range map[string]string{"session low": low, "session prod": prod, "run 1": run1, "run 2": run2, "template": filepath.Join(dir, "claude.json")} {
		if other, dup := seen[p]; dup {
			t.Errorf("%s and %s share claude.json %s", who, other, p)
		}
		seen[p] = who
	}
	for who, p := range map[string]string{"session prod": prod, "run 2": run2} {
		if got, _ := os.ReadFile(p); string(got) != freshClaudeJSON(t) {
			t.Errorf("%s claude.json = %q, want fresh %q", who, got, freshClaudeJSON(t))
		}
	}

	// Removing and re-creating a session gives it a fresh file again.
	if err := m.Remove(ctx, "low"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Dir(low)); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("session dir after Remove: %v, want it gone", err)
	}
	if err := os.MkdirAll(filepath.Dir(low), 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(low, []byte(poison), 0o600); err != nil { // a leftover from a crash
		t.Fatal(err)
	}
	if _, err := m.Create(ctx, api.CreateRequest{Name: "low", Prompt: "p"}); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(low); string(got) != freshClaudeJSON(t) {
		t.Errorf("re-created session claude.json = %q, want fresh", got)
	}
}

// freshClaudeJSON is what a container's claude.json holds when the template
// is the default one.
func freshClaudeJSON(t *testing.T) string {
	t.Helper()
	b, err := claudeJSONFor([]byte(ClaudeJSONContent), "/workspace")
	if err != nil {
		t.Fatal(err)
	}
	return string(b)
}

// TestRunFiles_OldOnesRemovedAtStart: `clauderon run` files older than a
// day are removed when the manager starts; recent ones are kept.
func TestRunFiles_OldOnesRemovedAtStart(t *testing.T) {
	dir := stateDir(t)
	m := newManager(t, newFakeDocker(), dir)
	ra, err := m.RunArgs(context.Background(), api.RunRequest{})
	if err != nil {
		t.Fatal(err)
	}
	recent := filepath.Dir(runArgsClaudeJSON(t, ra.Args))
	old := filepath.Join(dir, "run", "old")
	if err := os.MkdirAll(old, 0o700); err != nil {
		t.Fatal(err)
	}
	stale := time.Now().Add(-25 * time.Hour)
	if err := os.Chtimes(old, stale, stale); err != nil {
		t.Fatal(err)
	}
	_ = m.Close()
	newManager(t, newFakeDocker(), dir)
	if _, err := os.Stat(old); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("run dir older than a day: %v, want removed", err)
	}
	if _, err := os.Stat(recent); err != nil {
		t.Errorf("recent run dir: %v, want kept", err)
	}
}

// TestStateDir_PlantedSymlinksNeverFollowed: the root daemon creates,
// chowns and removes session files only inside the state dir: a symlink
// planted at sessions/ or run/ (by a user who once owned the state dir)
// makes the operation fail rather than touch what it points at.
func TestStateDir_PlantedSymlinksNeverFollowed(t *testing.T) {
	d := newFakeDocker()
	dir := stateDir(t)
	m := newManager(t, d, dir)
	ctx := context.Background()
	if _, err := m.Create(ctx, api.CreateRequest{Name: "v", Prompt: "p"}); err != nil {
		t.Fatal(err)
	}
	outside := t.TempDir()
	keep := filepath.Join(outside, "v", "keep")
	if err := os.MkdirAll(filepath.Dir(keep), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(keep, []byte("x"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{"sessions", "run"} {
		if err := os.RemoveAll(filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
		if err := os.Symlink(outside, filepath.Join(dir, name)); err != nil {
			t.Fatal(err)
		}
	}
	if err := m.Remove(ctx, "v"); err != nil {
		t.Fatalf("Remove: %v", err)
	}
	if _, err := m.Create(ctx, api.CreateRequest{Name: "w", Prompt: "p"}); err == nil {
		t.Error("Create wrote its claude.json through a symlinked sessions/")
	}
	if _, err := m.RunArgs(ctx, api.RunRequest{}); err == nil {
		t.Error("RunArgs wrote its claude.json through a symlinked run/")
	}
	if _, err := os.Stat(keep); err != nil {
		t.Errorf("file outside the state dir: %v, want it untouched", err)
	}
	ents, _ := os.ReadDir(outside)
	if len(ents) != 1 {
		t.Errorf("outside dir has %d entries, want only the original", len(ents))
	}
}
