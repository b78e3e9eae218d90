package injector

import (
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
)

const (
	realOAuth  = "sk-ant-oat01-REALOAUTH-abcdefghijklmnop"
	realAPIKey = "sk-ant-api03-REALAPIKEY-abcdefghijklmnop"
	realOpenAI = "sk-proj-REALOPENAI-abcdefghijklmnop"
	realGitHub = "ghp_REALGITHUB0123456789abcdefghijklmn"
	realNPM    = "npm_REALNPM0123456789abcdefghijklmnopqr"
)

func basicForm(tok string) string {
	return base64.StdEncoding.EncodeToString([]byte("x-access-token:" + tok))
}

func newTestInjector(t *testing.T, rules []Rule, environ ...string) (*Injector, *syncBuffer) {
	t.Helper()
	s, logs := newTestStore(t, "", environ...)
	if rules == nil {
		rules = DefaultRules()
	}
	inj, err := New(rules, s, slog.New(slog.NewTextHandler(logs, nil)))
	if err != nil {
		t.Fatalf("New: %v", err)
	}
	return inj, logs
}

func request(host string, headers ...string) *http.Request {
	req := httptest.NewRequest("POST", "https://"+host+"/v1/messages", nil)
	for i := 0; i+1 < len(headers); i += 2 {
		req.Header.Add(headers[i], headers[i+1])
	}
	return req
}

var allReal = []string{
	"CLAUDE_CODE_OAUTH_TOKEN=" + realOAuth, "OPENAI_API_KEY=" + realOpenAI,
	"GITHUB_TOKEN=" + realGitHub, "NPM_TOKEN=" + realNPM,
}

func TestApply_DefaultRules(t *testing.T) {
	tests := []struct {
		name       string
		environ    []string
		host       string
		headers    []string
		wantHeader map[string]string // "" value means absent
		wantRule   string
	}{
		{"anthropic_oauth_placeholder_becomes_bearer", allReal, "api.anthropic.com",
			[]string{"Authorization", "Bearer " + PlaceholderAnthropicOAuth},
			map[string]string{"Authorization": "Bearer " + realOAuth, "X-Api-Key": ""}, "api.anthropic.com"},
		{"anthropic_no_client_credential_still_injected", allReal, "api.anthropic.com", nil,
			map[string]string{"Authorization": "Bearer " + realOAuth}, "api.anthropic.com"},
		{"anthropic_api_key_goes_to_x_api_key_and_authorization_removed", []string{"ANTHROPIC_API_KEY=" + realAPIKey}, "api.anthropic.com",
			[]string{"Authorization", "Bearer " + PlaceholderAnthropicOAuth, "X-Api-Key", PlaceholderAnthropicOAuth},
			map[string]string{"Authorization": "", "X-Api-Key": realAPIKey}, "api.anthropic.com"},
		{"anthropic_trailing_dot_and_case", allReal, "API.Anthropic.com.", nil,
			map[string]string{"Authorization": "Bearer " + realOAuth}, "api.anthropic.com"},
		{"openai_bearer", allReal, "api.openai.com", []string{"Authorization", "Bearer " + PlaceholderOpenAI},
			map[string]string{"Authorization": "Bearer " + realOpenAI}, "api.openai.com"},
		{"github_api_bearer", allReal, "api.github.com", []string{"Authorization", "token clauderon-proxy"},
			map[string]string{"Authorization": "Bearer " + realGitHub}, "api.github.com"},
		{"github_git_basic_x_access_token", allReal, "github.com",
			[]string{"Authorization", "Basic " + base64.StdEncoding.EncodeToString([]byte("x-access-token:clauderon-proxy"))},
			map[string]string{"Authorization": "Basic " + basicForm(realGitHub)}, "github.com"},
		{"npm_bearer", allReal, "registry.npmjs.org", nil,
			map[string]string{"Authorization": "Bearer " + realNPM}, "registry.npmjs.org"},
		{"unrelated_headers_untouched", allReal, "api.openai.com", []string{"X-Request-Id", "abc", "Accept", "text/event-stream"},
			map[string]string{"X-Request-Id": "abc", "Accept": "text/event-stream", "Authorization": "Bearer " + realOpenAI}, "api.openai.com"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			inj, _ := newTestInjector(t, nil, tt.environ...)
			req := request(strings.TrimSuffix(strings.ToLower(tt.host), "."), tt.headers...)
			a, err := inj.Apply(req, tt.host, "")
			if err != nil {
				t.Fatalf("Apply: %v", err)
			}
			if !a.Injected || a.Kept || a.Rule != tt.wantRule {
				t.Errorf("Applied = %+v, want Injected by rule %s", a, tt.wantRule)
			}
			for k, want := range tt.wantHeader {
				if got := strings.Join(req.Header.Values(k), ","); got != want {
					t.Errorf("header %s = %q, want %q", k, got, want)
				}
			}
		})
	}
}

func TestApply_TemplateAndCustomHeader(t *testing.T) {
	rules := []Rule{
		{Host: "gitlab.example.com", Credential: "gitlab", Header: "private-token", Format: FormatTemplate, Template: "{{credential}}"},
		{Host: "*.corp.example.com", Credential: "corp", Format: FormatTemplate, Template: "token {{credential}};v=1", Strip: []string{"X-Corp-Auth"}},
		{Host: "keys.example.com", Credential: "keys", Format: FormatXAPIKey},
	}
	inj, _ := newTestInjector(t, rules, "GITLAB=glpat-abc", "CORP=corp-xyz", "KEYS=key-123")
	tests := []struct{ host, header, want string }{
		{"gitlab.example.com", "Private-Token", "glpat-abc"},
		{"a.b.corp.example.com", "Authorization", "token corp-xyz;v=1"},
		{"keys.example.com", "X-Api-Key", "key-123"},
	}
	for _, tt := range tests {
		t.Run(tt.host, func(t *testing.T) {
			req := request(tt.host, "X-Corp-Auth", "clauderon-proxy", "Authorization", "Bearer clauderon-proxy")
			if _, err := inj.Apply(req, tt.host, ""); err != nil {
				t.Fatalf("Apply: %v", err)
			}
			if got := req.Header.Get(tt.header); got != tt.want {
				t.Errorf("%s = %q, want %q", tt.header, got, tt.want)
			}
			if strings.HasSuffix(tt.host, "corp.example.com") && req.Header.Get("X-Corp-Auth") != "" {
				t.Errorf("placeholder header X-Corp-Auth not stripped")
			}
		})
	}
}

// TestBinding_CredentialNeverSentToOtherHost asks for injection on hosts
// no rule names, including lookalikes and a wildcard's bare domain, and
// fails if any real credential lands on the request.
func TestBinding_CredentialNeverSentToOtherHost(t *testing.T) {
	rules := append(DefaultRules(), Rule{Host: "*.corp.example.com", Credential: "corp"})
	inj, _ := newTestInjector(t, rules, append(allReal, "CORP=corp-SECRET")...)
	for _, host := range []string{
		"evil.com", "api.anthropic.com.evil.com", "evilapi.anthropic.com", "anthropic.com",
		"xapi.openai.com", "gist.github.com", "github.com.evil", "npmjs.org", "corp.example.com",
		"example.com", "10.0.0.1", "::1", "",
	} {
		t.Run(host, func(t *testing.T) {
			req := request("placeholder.invalid", "Authorization", "Bearer "+PlaceholderAnthropicOAuth)
			req.Host = host
			a, err := inj.Apply(req, host, "")
			if !errors.Is(err, ErrNoRule) {
				t.Fatalf("Apply(%q) = %+v, %v; want ErrNoRule", host, a, err)
			}
			if a.Injected {
				t.Errorf("Applied.Injected for %q", host)
			}
			assertNoRealCredential(t, req.Header)
		})
	}
}

// TestBinding_HostHeaderMustMatchRoutedHost: a request routed (by SNI) to
// one rule's host but carrying another Host is refused before injection.
func TestBinding_HostHeaderMustMatchRoutedHost(t *testing.T) {
	inj, _ := newTestInjector(t, nil, allReal...)
	tests := []struct {
		name, sni, hostHeader string
		wantErr               error
	}{
		{"same_host", "api.github.com", "api.github.com", nil},
		{"same_host_with_port_and_case", "api.github.com", "API.GitHub.com:443", nil},
		{"host_header_names_other_rule_host", "api.github.com", "api.openai.com", ErrHostMismatch},
		{"host_header_names_attacker", "api.anthropic.com", "evil.example", ErrHostMismatch},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := request(tt.sni)
			req.Host = tt.hostHeader
			_, err := inj.Apply(req, tt.sni, "")
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("Apply = %v, want %v", err, tt.wantErr)
			}
			if tt.wantErr != nil {
				assertNoRealCredential(t, req.Header)
			}
		})
	}
	// With an empty Host, the URL authority is checked instead.
	req := request("api.github.com")
	req.Host, req.URL.Host = "", "evil.example:443"
	if _, err := inj.Apply(req, "api.github.com", ""); !errors.Is(err, ErrHostMismatch) {
		t.Fatalf("Apply with mismatching URL.Host = %v, want ErrHostMismatch", err)
	}
}

func assertNoRealCredential(t *testing.T, h http.Header) {
	t.Helper()
	for k, vs := range h {
		for _, v := range vs {
			for _, real := range []string{realOAuth, realAPIKey, realOpenAI, realGitHub, realNPM, "corp-SECRET", basicForm(realGitHub)} {
				if strings.Contains(v, real) {
					t.Errorf("header %s carries a real credential", k)
				}
			}
		}
	}
}

func TestApply_OnClientCredential(t *testing.T) {
	const clientTok = "sk-proj-CLIENTOWN-123"
	tests := []struct {
		name, policy string
		headers      []string
		wantErr      error
		wantAuth     string
		wantKept     bool
		wantInjected bool
	}{
		{"replace_client_credential_by_default", "", []string{"Authorization", "Bearer " + clientTok}, nil, "Bearer " + realOpenAI, false, true},
		{"replace_explicit", "replace", []string{"Authorization", "Bearer " + clientTok}, nil, "Bearer " + realOpenAI, false, true},
		{"keep_client_credential", "keep", []string{"Authorization", "Bearer " + clientTok}, nil, "Bearer " + clientTok, true, false},
		{"keep_but_placeholder_is_replaced", "keep", []string{"Authorization", "Bearer " + PlaceholderOpenAI}, nil, "Bearer " + realOpenAI, false, true},
		{"keep_without_client_credential_injects", "keep", nil, nil, "Bearer " + realOpenAI, false, true},
		{"reject_client_credential", "reject", []string{"Authorization", "Bearer " + clientTok}, ErrClientCredentialRejected, "Bearer " + clientTok, false, false},
		{"reject_accepts_placeholder", "reject", []string{"Authorization", "Bearer " + PlaceholderOpenAI}, nil, "Bearer " + realOpenAI, false, true},
		{"reject_accepts_bare_github_placeholder", "reject", []string{"Authorization", "clauderon-proxy"}, nil, "Bearer " + realOpenAI, false, true},
		{"reject_accepts_basic_placeholder", "reject", []string{"Authorization", "Basic " + base64.StdEncoding.EncodeToString([]byte("git:clauderon-proxy"))}, nil, "Bearer " + realOpenAI, false, true},
		{"reject_sees_basic_real_password", "reject", []string{"Authorization", "Basic " + base64.StdEncoding.EncodeToString([]byte("git:ghp_x"))}, ErrClientCredentialRejected, "", false, false},
		{"reject_empty_bearer_is_no_credential", "reject", []string{"Authorization", "Bearer "}, nil, "Bearer " + realOpenAI, false, true},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			rules := []Rule{{Host: "api.openai.com", Credential: "openai", OnClientCredential: tt.policy}}
			inj, _ := newTestInjector(t, rules, allReal...)
			req := request("api.openai.com", tt.headers...)
			a, err := inj.Apply(req, "api.openai.com", "")
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("Apply = %+v, %v; want %v", a, err, tt.wantErr)
			}
			if a.Kept != tt.wantKept || a.Injected != tt.wantInjected {
				t.Errorf("Applied = %+v, want Kept=%v Injected=%v", a, tt.wantKept, tt.wantInjected)
			}
			if tt.wantAuth != "" {
				if got := req.Header.Get("Authorization"); got != tt.wantAuth {
					t.Errorf("Authorization = %q, want %q", got, tt.wantAuth)
				}
			}
		})
	}
}

func TestApply_KeepRemovesPlaceholdersBesideClientCredential(t *testing.T) {
	rules := []Rule{{Host: "api.anthropic.com", Credential: "anthropic", Format: FormatAnthropic, OnClientCredential: "keep"}}
	inj, _ := newTestInjector(t, rules, allReal...)
	req := request("api.anthropic.com", "X-Api-Key", "sk-ant-api03-client", "Authorization", "Bearer "+PlaceholderAnthropicOAuth)
	a, err := inj.Apply(req, "api.anthropic.com", "")
	if err != nil || !a.Kept || a.Injected {
		t.Fatalf("Apply = %+v, %v; want Kept", a, err)
	}
	if req.Header.Get("Authorization") != "" || req.Header.Get("X-Api-Key") != "sk-ant-api03-client" {
		t.Errorf("headers = %v, want placeholder gone and client key kept", req.Header)
	}
}

func TestApply_MissingCredentialStripsAndReports(t *testing.T) {
	inj, logs := newTestInjector(t, nil)
	for range 3 {
		req := request("api.openai.com", "Authorization", "Bearer "+PlaceholderOpenAI)
		a, err := inj.Apply(req, "api.openai.com", "")
		if !errors.Is(err, ErrNoCredential) || a.Injected {
			t.Fatalf("Apply = %+v, %v; want ErrNoCredential", a, err)
		}
		var ce *CredentialError
		if !errors.As(err, &ce) || ce.Credential != "openai" || ce.Profile != DefaultProfile || ce.Rule != "api.openai.com" {
			t.Fatalf("error %#v is not a CredentialError naming openai/default/api.openai.com", err)
		}
		if !strings.Contains(ce.LogDetail(), "OPENAI_API_KEY") {
			t.Errorf("log detail %q does not say how to configure it", ce.LogDetail())
		}
		if req.Header.Get("Authorization") != "" {
			t.Errorf("placeholder left on the request")
		}
	}
	if n := strings.Count(logs.String(), "credential not configured"); n != 1 {
		t.Errorf("missing credential logged %d times, want once:\n%s", n, logs)
	}
}

func TestApply_MalformedCredentialIsClearErrorLoggedOnce(t *testing.T) {
	tests := []struct {
		name, env, wantProblem string
	}{
		{"anthropic_value_neither_oauth_nor_api_key", "CLAUDE_CODE_OAUTH_TOKEN=sk-proj-WRONGKIND-123", "neither an Anthropic OAuth token"},
		{"anthropic_value_with_space", "CLAUDE_CODE_OAUTH_TOKEN=sk-ant-oat01-WRONG SPACE", "whitespace"},
		{"anthropic_value_with_crlf", "CLAUDE_CODE_OAUTH_TOKEN=sk-ant-oat01-WRONG\r\nX-Injected: 1", "whitespace"},
		{"operator_configured_the_placeholder", "CLAUDE_CODE_OAUTH_TOKEN=" + PlaceholderAnthropicOAuth, "placeholder"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			inj, logs := newTestInjector(t, nil, tt.env)
			for range 3 {
				req := request("api.anthropic.com", "Authorization", "Bearer "+PlaceholderAnthropicOAuth)
				a, err := inj.Apply(req, "api.anthropic.com", "")
				if !errors.Is(err, ErrMalformedCredential) || a.Injected {
					t.Fatalf("Apply = %+v, %v; want ErrMalformedCredential", a, err)
				}
				msg := err.Error()
				if !strings.Contains(msg, `"anthropic"`) || !strings.Contains(msg, tt.wantProblem) {
					t.Errorf("error %q should name the credential and %q", msg, tt.wantProblem)
				}
				if strings.Contains(msg, "CLAUDE_CODE_OAUTH_TOKEN") || strings.Contains(msg, "byte") {
					t.Errorf("client-facing error names the source or measures the value: %q", msg)
				}
				var ce *CredentialError
				if !errors.As(err, &ce) || !strings.Contains(ce.LogDetail(), "env CLAUDE_CODE_OAUTH_TOKEN") {
					t.Errorf("log detail of %v should name the source", err)
				}
				if strings.Contains(msg, "WRONG") || strings.Contains(ce.LogDetail(), "WRONG") {
					t.Errorf("error leaks the value: %q", msg)
				}
				if len(req.Header.Values("Authorization")) != 0 {
					t.Errorf("Authorization left on the request: %q", req.Header.Values("Authorization"))
				}
			}
			if err := inj.store.Reload(); err != nil {
				t.Fatal(err)
			}
			if _, err := inj.Apply(request("api.anthropic.com"), "api.anthropic.com", ""); !errors.Is(err, ErrMalformedCredential) {
				t.Fatalf("after reload Apply = %v", err)
			}
			if strings.Contains(logs.String(), "WRONG") {
				t.Errorf("log leaks the value:\n%s", logs)
			}
			if n := strings.Count(logs.String(), "level=WARN"); n != 1 {
				t.Errorf("malformed credential logged %d times, want once:\n%s", n, logs)
			}
		})
	}
}

func TestApply_Profiles(t *testing.T) {
	dir := secretsDir(t, map[string]string{"profiles/team-a/github": "ghp_TEAMA"})
	s, _ := newTestStore(t, dir, "GITHUB_TOKEN="+realGitHub)
	inj, err := New(DefaultRules(), s, nil)
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		profile, wantAuth string
		wantErr           error
	}{
		{"", "Bearer " + realGitHub, nil},
		{"default", "Bearer " + realGitHub, nil},
		{"team-a", "Bearer ghp_TEAMA", nil},
		{"team-b", "", ErrNoCredential},
	}
	for _, tt := range tests {
		t.Run("profile_"+tt.profile, func(t *testing.T) {
			req := request("api.github.com")
			_, err := inj.Apply(req, "api.github.com", tt.profile)
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("Apply = %v, want %v", err, tt.wantErr)
			}
			if got := req.Header.Get("Authorization"); got != tt.wantAuth {
				t.Errorf("Authorization = %q, want %q", got, tt.wantAuth)
			}
		})
	}
}

func TestMatch_ExactBeforeWildcardLongestSuffixFirst(t *testing.T) {
	rules := []Rule{
		{Host: "*.example.com", Credential: "wide"},
		{Host: "*.api.example.com", Credential: "narrow"},
		{Host: "x.api.example.com", Credential: "exact"},
	}
	inj, _ := newTestInjector(t, rules)
	for host, want := range map[string]string{
		"x.api.example.com":      "exact",
		"y.api.example.com":      "narrow",
		"api.example.com":        "wide",
		"Z.Example.COM.:8443":    "wide",
		"example.com":            "",
		"x.api.example.com.evil": "",
	} {
		r, ok := inj.Match(host)
		if ok != (want != "") || r.Credential != want {
			t.Errorf("Match(%q) = %q, %v; want %q", host, r.Credential, ok, want)
		}
	}
	if len(inj.Rules()) != 3 {
		t.Errorf("Rules() = %d rules, want 3", len(inj.Rules()))
	}
}

func TestNew_Errors(t *testing.T) {
	s, _ := newTestStore(t, "")
	if _, err := New(DefaultRules(), nil, nil); err == nil {
		t.Error("New with nil store succeeded")
	}
	_, err := New([]Rule{{Host: "api.example.com", Credential: "x", Format: "weird"}}, s, nil)
	if err == nil || !strings.Contains(err.Error(), "rules[0].format") {
		t.Errorf("New with bad rule = %v, want rules[0].format error", err)
	}
}

func TestSecrets_RedactResponse(t *testing.T) {
	inj, _ := newTestInjector(t, nil, allReal...)
	h := http.Header{
		"X-Echo":       {"you sent Bearer " + realOAuth},
		"X-Git":        {"Basic " + basicForm(realGitHub)},
		"Set-Cookie":   {"session=abc; Path=/"},
		"Content-Type": {"text/event-stream"},
		"X-Multi":      {"fine", realNPM},
	}
	inj.RedactResponse("api.anthropic.com", h)
	assertNoRealCredential(t, h)
	want := map[string][]string{
		"X-Echo": {Redacted}, "X-Git": {Redacted}, "Set-Cookie": {"session=abc; Path=/"},
		"Content-Type": {"text/event-stream"}, "X-Multi": {"fine", Redacted},
	}
	for k, w := range want {
		if got := h[k]; strings.Join(got, "|") != strings.Join(w, "|") {
			t.Errorf("%s = %q, want %q", k, got, w)
		}
	}
}

// TestApply_ConcurrentWithReload runs Apply from many goroutines while the
// store reloads between two credentials; every request gets one of them,
// whole (run with -race).
func TestApply_ConcurrentWithReload(t *testing.T) {
	dir := secretsDir(t, map[string]string{"github": "ghp_AAAA"})
	s, _ := newTestStore(t, dir)
	inj, err := New(DefaultRules(), s, nil)
	if err != nil {
		t.Fatal(err)
	}
	stop := make(chan struct{})
	var wg sync.WaitGroup
	wg.Add(1)
	go func() {
		defer wg.Done()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			default:
			}
			writeSecret(t, filepath.Join(dir, "github"), []string{"ghp_AAAA", "ghp_BBBB"}[i%2])
			if err := s.Reload(); err != nil {
				t.Error(err)
				return
			}
		}
	}()
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for range 500 {
				req := request("api.github.com", "Authorization", "Bearer clauderon-proxy")
				if _, err := inj.Apply(req, "api.github.com", ""); err != nil {
					t.Error(err)
					return
				}
				if got := req.Header.Get("Authorization"); got != "Bearer ghp_AAAA" && got != "Bearer ghp_BBBB" {
					t.Errorf("Authorization = %q", got)
					return
				}
			}
		}()
	}
	time.Sleep(200 * time.Millisecond)
	close(stop)
	wg.Wait()
}

// TestSecrets_NeverInErrors drives every error Apply and the Store can
// return while a distinctive credential is configured, and fails if the
// value appears in any error text (%v, %+v, %#v).
func TestSecrets_NeverInErrors(t *testing.T) {
	const marker = "LEAKMARKER"
	rules := []Rule{
		{Host: "api.anthropic.com", Credential: "anthropic", Format: FormatAnthropic},
		{Host: "reject.example.com", Credential: "github", OnClientCredential: OnClientCredentialReject},
		{Host: "api.github.com", Credential: "github"},
		{Host: "bad.example.com", Credential: "bad"},
	}
	inj, logs := newTestInjector(t, rules,
		"CLAUDE_CODE_OAUTH_TOKEN=sk-wrong-kind-"+marker, "GITHUB_TOKEN=ghp_"+marker, "BAD=with space "+marker)
	var errs []error
	try := func(host, hostHeader, profile string, hdr ...string) {
		req := request(host, hdr...)
		req.Host = hostHeader
		if _, err := inj.Apply(req, host, profile); err != nil {
			errs = append(errs, err)
		}
	}
	try("api.anthropic.com", "api.anthropic.com", "")                                      // malformed: wrong kind
	try("bad.example.com", "bad.example.com", "")                                          // malformed: whitespace
	try("reject.example.com", "reject.example.com", "", "Authorization", "Bearer ghp_own") // rejected
	try("api.github.com", "evil.example", "")                                              // host mismatch
	try("evil.example", "evil.example", "")                                                // no rule
	try("api.github.com", "api.github.com", "nobody")                                      // no credential
	if len(errs) != 6 {
		t.Fatalf("got %d errors, want 6: %v", len(errs), errs)
	}
	dir := secretsDir(t, map[string]string{"github": "ghp_" + marker})
	os.Chmod(filepath.Join(dir, "github"), 0o644)
	if _, err := NewStore(StoreOptions{SecretsDir: dir, Environ: env()}); err != nil {
		errs = append(errs, err)
	}
	for _, err := range errs {
		for _, s := range []string{err.Error(), fmt.Sprintf("%+v", err), fmt.Sprintf("%#v", err)} {
			if strings.Contains(s, marker) {
				t.Errorf("error leaks the credential: %s", s)
			}
		}
	}
	if strings.Contains(logs.String(), marker) {
		t.Errorf("logs leak the credential:\n%s", logs)
	}
}

// TestSecrets_ClientErrorHidesPathAndLength: the error a container sees in
// its 403 names the credential and the kind of problem, never the host
// path of the secrets file nor the value's length or a position in it;
// the daemon log keeps both for the operator.
func TestSecrets_ClientErrorHidesPathAndLength(t *testing.T) {
	dir := t.TempDir()
	if err := os.Chmod(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	const value = "sk-ant-oat01-WRONG\tTAB-0123456789"
	if err := os.WriteFile(filepath.Join(dir, "anthropic"), []byte(value), 0o600); err != nil {
		t.Fatal(err)
	}
	s, logs := newTestStore(t, dir)
	inj, err := New(DefaultRules(), s, slog.New(slog.NewTextHandler(logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	_, err = inj.Apply(request("api.anthropic.com"), "api.anthropic.com", "")
	if !errors.Is(err, ErrMalformedCredential) {
		t.Fatalf("Apply = %v, want ErrMalformedCredential", err)
	}
	msg := err.Error()
	if !strings.Contains(msg, `"anthropic"`) || !strings.Contains(msg, "contains whitespace") {
		t.Errorf("client error %q should name the credential and the kind of problem", msg)
	}
	for _, leak := range []string{dir, "secrets", "byte", fmt.Sprint(len(value)), "WRONG"} {
		if strings.Contains(msg, leak) {
			t.Errorf("client error %q reveals %q", msg, leak)
		}
	}
	var ce *CredentialError
	if !errors.As(err, &ce) || !strings.Contains(ce.LogDetail(), filepath.Join(dir, "anthropic")) ||
		!strings.Contains(ce.LogDetail(), fmt.Sprintf("of %d", len(value))) {
		t.Errorf("log detail %q should keep the path and the finding", ce.LogDetail())
	}
	if !strings.Contains(logs.String(), filepath.Join(dir, "anthropic")) || !strings.Contains(logs.String(), "at byte 18") {
		t.Errorf("daemon log lacks the detail:\n%s", logs)
	}
	if strings.Contains(logs.String(), "WRONG") {
		t.Error("daemon log carries the value")
	}
}
