package injector

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"testing/synctest"
	"time"
)

// syncBuffer is a goroutine-safe log sink.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// secretsDir makes a 0700 secrets dir holding files (path relative to the
// dir → content) written 0600.
func secretsDir(t *testing.T, files map[string]string) string {
	t.Helper()
	dir := filepath.Join(t.TempDir(), "secrets")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	for name, v := range files {
		writeSecret(t, filepath.Join(dir, name), v)
	}
	return dir
}

func writeSecret(t *testing.T, path, v string) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		t.Fatal(err)
	}
	// Write then rename, as operators should: a reader never sees half a file.
	tmp := filepath.Join(filepath.Dir(path), "."+filepath.Base(path)+".tmp")
	if err := os.WriteFile(tmp, []byte(v), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(tmp, path); err != nil {
		t.Fatal(err)
	}
}

func env(kv ...string) func() []string { return func() []string { return kv } }

func newTestStore(t *testing.T, dir string, environ ...string) (*Store, *syncBuffer) {
	t.Helper()
	logs := &syncBuffer{}
	s, err := NewStore(StoreOptions{SecretsDir: dir, Environ: env(environ...),
		Logger: slog.New(slog.NewTextHandler(logs, nil)), PollInterval: 20 * time.Millisecond})
	if err != nil {
		t.Fatalf("NewStore: %v", err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("store logs:\n%s", logs.String())
		}
	})
	return s, logs
}

func TestStore_Sources(t *testing.T) {
	const (
		oauth  = "sk-ant-oat01-envtoken"
		apikey = "sk-ant-api03-filetoken"
	)
	tests := []struct {
		name       string
		files      map[string]string
		environ    []string
		profile    string
		credential string
		want       string // "" means not found
		wantSource string
	}{
		{"env_wins_over_file", map[string]string{"anthropic": apikey}, []string{"CLAUDE_CODE_OAUTH_TOKEN=" + oauth}, "", "anthropic", oauth, "env CLAUDE_CODE_OAUTH_TOKEN"},
		{"env_order_oauth_before_api_key", nil, []string{"ANTHROPIC_API_KEY=" + apikey, "CLAUDE_CODE_OAUTH_TOKEN=" + oauth}, "", "anthropic", oauth, "env CLAUDE_CODE_OAUTH_TOKEN"},
		{"second_env_name", nil, []string{"ANTHROPIC_API_KEY=" + apikey}, "", "anthropic", apikey, "env ANTHROPIC_API_KEY"},
		{"empty_env_falls_through_to_file", map[string]string{"anthropic": apikey}, []string{"CLAUDE_CODE_OAUTH_TOKEN="}, "", "anthropic", apikey, "file "},
		{"file_trailing_newline_trimmed", map[string]string{"anthropic": apikey + "\n"}, nil, "", "anthropic", apikey, "file "},
		{"file_trailing_crlf_trimmed", map[string]string{"github": "ghp_abc\r\n"}, nil, "", "github", "ghp_abc", "file "},
		{"alias_file_name", map[string]string{"claude_code_oauth_token": oauth}, nil, "", "anthropic", oauth, "file "},
		{"name_file_before_alias_file", map[string]string{"github": "ghp_first", "github_token": "ghp_second"}, nil, "", "github", "ghp_first", "file "},
		{"gh_token_env", nil, []string{"GH_TOKEN=ghp_gh"}, "", "github", "ghp_gh", "env GH_TOKEN"},
		{"npm_env", nil, []string{"NPM_TOKEN=npm_x"}, "", "npm", "npm_x", "env NPM_TOKEN"},
		{"custom_name_from_file", map[string]string{"my-api": "tok123"}, nil, "", "my-api", "tok123", "file "},
		{"default_profile_by_name", map[string]string{"openai": "sk-x"}, nil, "default", "openai", "sk-x", "file "},
		{"profile_file", map[string]string{"profiles/team-a/github": "ghp_team"}, []string{"GITHUB_TOKEN=ghp_default"}, "team-a", "github", "ghp_team", "file "},
		{"profile_env", nil, []string{"CLAUDERON_PROFILE_TEAM_A_GITHUB_TOKEN=ghp_teamenv"}, "team-a", "github", "ghp_teamenv", "env CLAUDERON_PROFILE_TEAM_A_GITHUB_TOKEN"},
		{"profile_env_before_profile_file", map[string]string{"profiles/team-a/github": "ghp_file"}, []string{"CLAUDERON_PROFILE_TEAM_A_GH_TOKEN=ghp_env"}, "team-a", "github", "ghp_env", "env CLAUDERON_PROFILE_TEAM_A_GH_TOKEN"},
		{"named_profile_does_not_fall_back_to_default", map[string]string{"profiles/team-a/openai": "sk-team"}, []string{"GITHUB_TOKEN=ghp_default"}, "team-a", "github", "", ""},
		{"unknown_profile_gets_nothing", nil, []string{"GITHUB_TOKEN=ghp_default"}, "nobody", "github", "", ""},
		{"missing_everywhere", nil, nil, "", "openai", "", ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, _ := newTestStore(t, secretsDir(t, tt.files), tt.environ...)
			if tt.credential == "my-api" {
				if err := s.want([]string{"my-api"}); err != nil {
					t.Fatal(err)
				}
			}
			got, ok := s.Lookup(tt.profile, tt.credential)
			if got.Reveal() != tt.want || ok != (tt.want != "") {
				t.Fatalf("Lookup(%q, %q) = %q, %v; want %q", tt.profile, tt.credential, got.Reveal(), ok, tt.want)
			}
			if tt.want == "" {
				return
			}
			e, _ := s.lookupEntry(tt.profile, tt.credential)
			if !strings.HasPrefix(e.source, tt.wantSource) {
				t.Errorf("source = %q, want prefix %q", e.source, tt.wantSource)
			}
		})
	}
}

func TestStore_RefusesOpenPermissions(t *testing.T) {
	tests := []struct {
		name    string
		setup   func(t *testing.T, dir string)
		wantErr string
	}{
		{"group_readable_dir", func(t *testing.T, dir string) { os.Chmod(dir, 0o750) }, "run: chmod 700 "},
		{"world_readable_file", func(t *testing.T, dir string) { os.Chmod(filepath.Join(dir, "github"), 0o644) }, "run: chmod 600 "},
		{"group_writable_file", func(t *testing.T, dir string) { os.Chmod(filepath.Join(dir, "github"), 0o620) }, "run: chmod 600 "},
		{"open_profile_dir", func(t *testing.T, dir string) {
			writeSecret(t, filepath.Join(dir, "profiles", "p1", "github"), "ghp_p")
			os.Chmod(filepath.Join(dir, "profiles", "p1"), 0o755)
		}, "chmod 700 "},
		{"open_profile_file", func(t *testing.T, dir string) {
			writeSecret(t, filepath.Join(dir, "profiles", "p1", "github"), "ghp_p")
			os.Chmod(filepath.Join(dir, "profiles", "p1", "github"), 0o604)
		}, "chmod 600 "},
		{"colliding_profile_dir_names", func(t *testing.T, dir string) {
			writeSecret(t, filepath.Join(dir, "profiles", "team-a", "github"), "ghp_p")
			writeSecret(t, filepath.Join(dir, "profiles", "team_a", "github"), "ghp_q")
		}, "name the same profile"},
		{"invalid_profile_dir_name", func(t *testing.T, dir string) {
			writeSecret(t, filepath.Join(dir, "profiles", "Team A", "github"), "ghp_p")
		}, "not a valid profile name"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := secretsDir(t, map[string]string{"github": "ghp_SECRETVALUE"})
			tt.setup(t, dir)
			_, err := NewStore(StoreOptions{SecretsDir: dir, Environ: env()})
			if err == nil || !strings.Contains(err.Error(), tt.wantErr) {
				t.Fatalf("NewStore = %v, want error containing %q", err, tt.wantErr)
			}
			if strings.Contains(err.Error(), "SECRETVALUE") {
				t.Fatalf("error leaks the value: %v", err)
			}
		})
	}
}

func TestStore_MissingDirIsEnvOnly(t *testing.T) {
	s, _ := newTestStore(t, filepath.Join(t.TempDir(), "nope"), "OPENAI_API_KEY=sk-env")
	if v, ok := s.Lookup("", "openai"); !ok || v.Reveal() != "sk-env" {
		t.Fatalf("Lookup = %v %v, want the env value", v, ok)
	}
}

func TestStore_MalformedValuesAreReportedNotUsed(t *testing.T) {
	tests := []struct {
		name, value, wantProblem string
	}{
		{"inner_space", "ghp_abc def", "whitespace at byte 7"},
		{"trailing_space", "ghp_abc ", "whitespace"},
		{"embedded_newline", "ghp_abc\nX-Evil: 1", "whitespace"},
		{"control_char", "ghp_abc\x01", "control character 0x01"},
		{"non_ascii", "ghp_abcé", "non-ASCII"},
		{"placeholder", PlaceholderGitHub, "placeholder"},
		{"empty_file", "", "is empty"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			s, logs := newTestStore(t, secretsDir(t, map[string]string{"github": tt.value}))
			if _, ok := s.Lookup("", "github"); ok {
				t.Fatalf("Lookup returned a malformed credential")
			}
			sum := s.Summary()
			st := findStatus(sum, DefaultProfile, "github")
			if st == nil || st.Present || !strings.Contains(st.Error, tt.wantProblem) {
				t.Fatalf("Summary github = %+v, want not present with error containing %q", st, tt.wantProblem)
			}
			if !strings.Contains(logs.String(), "credential unusable") || !strings.Contains(logs.String(), "credential=github") {
				t.Errorf("no warning logged: %s", logs)
			}
			if tt.value != "" && tt.value != PlaceholderGitHub && strings.Contains(logs.String(), tt.value) {
				t.Errorf("log leaks the value: %s", logs)
			}
			if err := s.Reload(); err != nil {
				t.Fatal(err)
			}
			if n := strings.Count(logs.String(), "credential unusable"); n != 1 {
				t.Errorf("warning logged %d times across reloads, want once", n)
			}
		})
	}
}

func findStatus(sum []CredentialStatus, profile, name string) *CredentialStatus {
	for i := range sum {
		if sum[i].Profile == profile && sum[i].Name == name {
			return &sum[i]
		}
	}
	return nil
}

func TestSecrets_NeverInSummary(t *testing.T) {
	dir := secretsDir(t, map[string]string{"github": "ghp_FILESECRET", "profiles/team-b/openai": "sk-PROFILESECRET"})
	s, _ := newTestStore(t, dir, "CLAUDE_CODE_OAUTH_TOKEN=sk-ant-oat01-ENVSECRET", "ANTHROPIC_API_KEY=sk-ant-api-UNUSEDSECRET")
	sum := s.Summary()
	b, _ := json.Marshal(sum)
	text := fmt.Sprintf("%+v %s", sum, b)
	if strings.Contains(text, "SECRET") {
		t.Fatalf("summary leaks a value: %s", text)
	}
	want := []struct{ profile, name, kind, source string }{
		{DefaultProfile, "anthropic", "oauth", "env CLAUDE_CODE_OAUTH_TOKEN"},
		{DefaultProfile, "github", "github-token", "file " + filepath.Join(dir, "github")},
		{"team-b", "openai", "api-key", "file " + filepath.Join(dir, "profiles", "team-b", "openai")},
	}
	for _, w := range want {
		st := findStatus(sum, w.profile, w.name)
		if st == nil || !st.Present || st.Kind != w.kind || st.Source != w.source || len(st.Fingerprint) != 8 {
			t.Errorf("status %s/%s = %+v, want present kind %s source %s", w.profile, w.name, st, w.kind, w.source)
		}
	}
	if st := findStatus(sum, DefaultProfile, "npm"); st == nil || st.Present || st.Source != "" {
		t.Errorf("npm status = %+v, want listed as absent", st)
	}
	if sum[0].Profile != DefaultProfile || sum[len(sum)-1].Profile != "team-b" {
		t.Errorf("summary not sorted default-first: %+v", sum)
	}
	if got := s.Profiles(); len(got) != 1 || got[0] != "team-b" {
		t.Errorf("Profiles() = %v, want [team-b]", got)
	}
}

func TestStore_ReloadFailureKeepsPreviousSnapshot(t *testing.T) {
	dir := secretsDir(t, map[string]string{"github": "ghp_one"})
	s, _ := newTestStore(t, dir)
	writeSecret(t, filepath.Join(dir, "github"), "ghp_two")
	os.Chmod(filepath.Join(dir, "github"), 0o644)
	if err := s.Reload(); err == nil {
		t.Fatal("Reload with a world-readable file succeeded")
	}
	if v, _ := s.Lookup("", "github"); v.Reveal() != "ghp_one" {
		t.Fatalf("after failed reload Lookup = %q, want the previous value", v.Reveal())
	}
	os.Chmod(filepath.Join(dir, "github"), 0o600)
	if err := s.Reload(); err != nil {
		t.Fatal(err)
	}
	if v, _ := s.Lookup("", "github"); v.Reveal() != "ghp_two" {
		t.Fatalf("after reload Lookup = %q, want the new value", v.Reveal())
	}
}

// TestStore_ReloadIsAtomic reads while reloading between two complete
// credential sets and fails if a reader ever sees a mix.
func TestStore_ReloadIsAtomic(t *testing.T) {
	dir := secretsDir(t, map[string]string{"github": "ghp_A", "openai": "sk-A"})
	s, _ := newTestStore(t, dir)
	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ctx.Err() == nil; i++ {
			gen := []string{"A", "B"}[i%2]
			writeSecret(t, filepath.Join(dir, "github"), "ghp_"+gen)
			writeSecret(t, filepath.Join(dir, "openai"), "sk-"+gen)
			if err := s.Reload(); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	deadline := time.Now().Add(300 * time.Millisecond)
	for time.Now().Before(deadline) {
		snap := s.snap.Load()
		g := snap.profiles[""].entries["github"].secret.Reveal()
		o := snap.profiles[""].entries["openai"].secret.Reveal()
		if strings.TrimPrefix(g, "ghp_") != strings.TrimPrefix(o, "sk-") {
			t.Fatalf("torn snapshot: github %q with openai %q", g, o)
		}
	}
	cancel()
	wg.Wait()
}

// TestStore_WatchReloadsOnFileChange runs in a synctest bubble: each change
// is seen on the next poll, a fake 20 ms later, with no real waiting.
func TestStore_WatchReloadsOnFileChange(t *testing.T) {
	synctest.Test(t, func(t *testing.T) {
		dir := secretsDir(t, map[string]string{"github": "ghp_before"})
		s, logs := newTestStore(t, dir)
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- s.Watch(ctx) }()
		nextPoll := func() { time.Sleep(s.opts.PollInterval); synctest.Wait() }
		writeSecret(t, filepath.Join(dir, "github"), "ghp_after_change")
		nextPoll()
		if v, _ := s.Lookup("", "github"); v.Reveal() != "ghp_after_change" {
			t.Errorf("one poll after the change Lookup = %q, want the new value", v.Reveal())
		}
		writeSecret(t, filepath.Join(dir, "profiles", "p9", "npm"), "npm_new")
		nextPoll()
		if _, ok := s.Lookup("p9", "npm"); !ok {
			t.Error("one poll after a new profile file, its credential is not there")
		}
		// A bad change is logged and the old credentials stay.
		os.Chmod(filepath.Join(dir, "github"), 0o644)
		nextPoll()
		if !strings.Contains(logs.String(), "keeping the previous ones") {
			t.Errorf("a refused reload was not logged: %q", logs.String())
		}
		if v, _ := s.Lookup("", "github"); v.Reveal() != "ghp_after_change" {
			t.Errorf("after a refused reload Lookup = %q", v.Reveal())
		}
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Watch returned %v after cancel, want nil", err)
		}
	})
}

func TestStore_Redact(t *testing.T) {
	s, _ := newTestStore(t, secretsDir(t, map[string]string{"github": "ghp_abcdef123456"}), "OPENAI_API_KEY=sk-openai-xyz")
	in := "url=https://x/?t=ghp_abcdef123456&k=sk-openai-xyz basic=" + basicForm("ghp_abcdef123456")
	got := s.Redact(in)
	if strings.Contains(got, "ghp_abcdef") || strings.Contains(got, "sk-openai-xyz") || strings.Contains(got, basicForm("ghp_abcdef123456")) {
		t.Fatalf("Redact left a value: %q", got)
	}
	if strings.Count(got, Redacted) != 3 {
		t.Errorf("Redact(%q) = %q, want 3 redactions", in, got)
	}
	if s.Redact("nothing here") != "nothing here" {
		t.Errorf("Redact changed clean text")
	}
}

func TestPlaceholders(t *testing.T) {
	p := Placeholders()
	want := map[string]string{
		"CLAUDE_CODE_OAUTH_TOKEN": "sk-ant-oat01-clauderon-proxy-placeholder",
		"OPENAI_API_KEY":          "sk-openai-clauderon-proxy-placeholder",
		"GITHUB_TOKEN":            "clauderon-proxy",
		"GH_TOKEN":                "clauderon-proxy",
	}
	if len(p) != len(want) {
		t.Errorf("Placeholders() = %v, want %v", p, want)
	}
	for k, v := range want {
		if p[k] != v {
			t.Errorf("Placeholders()[%s] = %q, want %q", k, p[k], v)
		}
		if !IsPlaceholder(v) {
			t.Errorf("IsPlaceholder(%q) = false", v)
		}
	}
	p["GITHUB_TOKEN"] = "mutated"
	if Placeholders()["GITHUB_TOKEN"] != PlaceholderGitHub {
		t.Error("Placeholders returns a shared map")
	}
}
