package injector

import (
	"encoding/base64"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"
)

const (
	sfxA = "0123456789"
	sfxB = "abcdef0123"
)

func TestPlaceholderSuffix_Recognition(t *testing.T) {
	tests := []struct {
		v          string
		want       bool // IsPlaceholder
		wantSuffix string
	}{
		{PlaceholderAnthropicOAuth, true, ""},
		{PlaceholderOpenAI, true, ""},
		{PlaceholderGitHub, true, ""},
		{PlaceholderAnthropicOAuth + "-" + sfxA, true, sfxA},
		{PlaceholderOpenAI + "-" + sfxB, true, sfxB},
		{PlaceholderGitHub + "-" + sfxA, true, sfxA},
		// Anything containing the marker stays a placeholder, suffix or not.
		{PlaceholderAnthropicOAuth + "-XYZ", true, ""},
		{PlaceholderAnthropicOAuth + "-" + sfxA + "0", true, ""},
		// The GitHub form is exact: 10 lower-case hex digits, nothing more.
		{PlaceholderGitHub + "-" + strings.ToUpper(sfxB), false, ""},
		{PlaceholderGitHub + "-" + sfxA[:9], false, ""},
		{PlaceholderGitHub + "-" + sfxA + "0", false, ""},
		{PlaceholderGitHub + "-" + sfxA + "x", false, ""},
		{PlaceholderGitHub + "-0123456789g", false, ""},
		{PlaceholderGitHub + "-", false, ""},
		{"x" + PlaceholderGitHub + "-" + sfxA, false, ""},
		{"ghp_" + sfxA, false, ""},
	}
	for _, tt := range tests {
		if got := IsPlaceholder(tt.v); got != tt.want {
			t.Errorf("IsPlaceholder(%q) = %v, want %v", tt.v, got, tt.want)
		}
		sfx, ok := PlaceholderSuffix(tt.v)
		if sfx != tt.wantSuffix || ok != (tt.wantSuffix != "") {
			t.Errorf("PlaceholderSuffix(%q) = %q, %v; want %q", tt.v, sfx, ok, tt.wantSuffix)
		}
	}
}

func TestWithPlaceholderSuffix(t *testing.T) {
	env := Placeholders()
	env["OTHER"] = "keep-me"
	got := WithPlaceholderSuffix(env, sfxA)
	want := map[string]string{
		"CLAUDE_CODE_OAUTH_TOKEN": PlaceholderAnthropicOAuth + "-" + sfxA,
		"OPENAI_API_KEY":          PlaceholderOpenAI + "-" + sfxA,
		"GITHUB_TOKEN":            PlaceholderGitHub + "-" + sfxA,
		"GH_TOKEN":                PlaceholderGitHub + "-" + sfxA,
		"OTHER":                   "keep-me",
	}
	if fmt.Sprint(got) != fmt.Sprint(want) {
		t.Errorf("WithPlaceholderSuffix = %v, want %v", got, want)
	}
	if env["GITHUB_TOKEN"] != PlaceholderGitHub {
		t.Error("WithPlaceholderSuffix changed its argument")
	}
	if bad := WithPlaceholderSuffix(env, "NOT-HEX!!!"); bad["GITHUB_TOKEN"] != PlaceholderGitHub {
		t.Errorf("an invalid suffix was appended: %v", bad)
	}
	for k, v := range got {
		if k != "OTHER" && !IsPlaceholder(v) {
			t.Errorf("%s=%s is not recognised as a placeholder", k, v)
		}
	}
}

// A per-container placeholder is stripped exactly like the reference one,
// in every form a client sends it, and reported by its suffix only.
func TestApply_PerContainerPlaceholdersStrippedAndReported(t *testing.T) {
	gh := PlaceholderGitHub + "-" + sfxA
	basic := func(user, pass string) string {
		return "Basic " + base64.StdEncoding.EncodeToString([]byte(user+":"+pass))
	}
	tests := []struct {
		name, host string
		headers    []string
		wantAuth   string
		want       []string
	}{
		{"anthropic_bearer", "api.anthropic.com", []string{"Authorization", "Bearer " + PlaceholderAnthropicOAuth + "-" + sfxA},
			"Bearer " + realOAuth, []string{sfxA}},
		{"anthropic_x_api_key_and_bearer_two_containers", "api.anthropic.com",
			[]string{"X-Api-Key", PlaceholderAnthropicOAuth + "-" + sfxB, "Authorization", "Bearer " + PlaceholderAnthropicOAuth + "-" + sfxA},
			"Bearer " + realOAuth, []string{sfxA, sfxB}},
		{"openai_bearer", "api.openai.com", []string{"Authorization", "Bearer " + PlaceholderOpenAI + "-" + sfxB},
			"Bearer " + realOpenAI, []string{sfxB}},
		{"github_token_scheme", "api.github.com", []string{"Authorization", "token " + gh}, "Bearer " + realGitHub, []string{sfxA}},
		{"github_bare", "api.github.com", []string{"Authorization", gh}, "Bearer " + realGitHub, []string{sfxA}},
		{"git_basic_x_access_token", "github.com", []string{"Authorization", basic("x-access-token", gh)},
			"Basic " + basicForm(realGitHub), []string{sfxA}},
		{"git_basic_user_only", "github.com", []string{"Authorization", basic(gh, "")},
			"Basic " + basicForm(realGitHub), []string{sfxA}},
		{"reference_placeholder_reports_nothing", "api.github.com", []string{"Authorization", "token " + PlaceholderGitHub},
			"Bearer " + realGitHub, nil},
		{"same_suffix_twice_reported_once", "api.anthropic.com",
			[]string{"X-Api-Key", PlaceholderAnthropicOAuth + "-" + sfxA, "Authorization", "Bearer " + PlaceholderAnthropicOAuth + "-" + sfxA},
			"Bearer " + realOAuth, []string{sfxA}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			inj, _ := newTestInjector(t, nil, allReal...)
			req := request(tt.host, tt.headers...)
			a, err := inj.Apply(req, tt.host, "")
			if err != nil || !a.Injected {
				t.Fatalf("Apply = %+v, %v", a, err)
			}
			if got := req.Header.Get("Authorization"); got != tt.wantAuth {
				t.Errorf("Authorization = %q, want %q", got, tt.wantAuth)
			}
			if req.Header.Get("X-Api-Key") != "" {
				t.Errorf("X-Api-Key left on the request")
			}
			got := slices.Clone(a.Placeholders)
			slices.Sort(got)
			if !slices.Equal(got, tt.want) {
				t.Errorf("Placeholders = %q, want %q", a.Placeholders, tt.want)
			}
			s := fmt.Sprintf("%+v %#v", a, a)
			for _, secret := range []string{realOAuth, realOpenAI, realGitHub, "clauderon-proxy"} {
				if strings.Contains(s, secret) {
					t.Errorf("Applied %s holds %q", s, secret)
				}
			}
		})
	}
}

// on_client_credential reject and keep treat a per-container placeholder as
// a placeholder, not as the client's own credential, and still report it.
func TestApply_PerContainerPlaceholderIsNotAClientCredential(t *testing.T) {
	for _, policy := range []string{"reject", "keep"} {
		t.Run(policy, func(t *testing.T) {
			rules := []Rule{{Host: "github.com", Credential: "github", Format: FormatBasicXAccessToken, OnClientCredential: policy}}
			inj, _ := newTestInjector(t, rules, allReal...)
			req := request("github.com", "Authorization", "Basic "+basicForm(PlaceholderGitHub+"-"+sfxB))
			a, err := inj.Apply(req, "github.com", "")
			if err != nil || !a.Injected || a.Kept {
				t.Fatalf("Apply = %+v, %v; want the placeholder replaced", a, err)
			}
			if !slices.Equal(a.Placeholders, []string{sfxB}) {
				t.Errorf("Placeholders = %q", a.Placeholders)
			}
		})
	}
	// keep with a real client credential beside a per-container placeholder:
	// the placeholder goes, the credential stays, the suffix is reported.
	rules := []Rule{{Host: "api.anthropic.com", Credential: "anthropic", Format: FormatAnthropic, OnClientCredential: "keep"}}
	inj, _ := newTestInjector(t, rules, allReal...)
	req := request("api.anthropic.com", "X-Api-Key", "sk-ant-api03-client", "Authorization", "Bearer "+PlaceholderAnthropicOAuth+"-"+sfxA)
	a, err := inj.Apply(req, "api.anthropic.com", "")
	if err != nil || !a.Kept || req.Header.Get("Authorization") != "" || !slices.Equal(a.Placeholders, []string{sfxA}) {
		t.Errorf("Apply = %+v, %v, headers %v", a, err, req.Header)
	}
}

// A request refused by policy still reports the placeholders it carried:
// the container held them whatever happened to the request.
func TestApply_PlaceholdersReportedOnRefusal(t *testing.T) {
	inj, _ := newTestInjector(t, nil, allReal...)
	req := request("api.openai.com", "Authorization", "Bearer "+PlaceholderOpenAI+"-"+sfxA)
	req.Host = "evil.example"
	a, err := inj.Apply(req, "api.openai.com", "")
	if !errors.Is(err, ErrHostMismatch) || !slices.Equal(a.Placeholders, []string{sfxA}) {
		t.Errorf("Apply = %+v, %v", a, err)
	}
}

// A configured credential that is a per-container placeholder is refused
// like the reference one.
func TestStore_PerContainerPlaceholderIsNotACredential(t *testing.T) {
	inj, _ := newTestInjector(t, nil, "GITHUB_TOKEN="+PlaceholderGitHub+"-"+sfxA)
	req := request("api.github.com")
	if _, err := inj.Apply(req, "api.github.com", ""); !errors.Is(err, ErrMalformedCredential) {
		t.Errorf("Apply with a placeholder configured as the credential = %v, want ErrMalformedCredential", err)
	}
}
