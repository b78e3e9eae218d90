package injector

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"
)

// applyTarget sends method and a raw request target (parsed the way a
// server parses it) through inj for api.anthropic.com.
func applyTarget(t *testing.T, inj *Injector, method, target string, hdr ...string) (*http.Request, Applied, error) {
	t.Helper()
	req := httptest.NewRequest(method, "https://api.anthropic.com"+target, nil)
	req.Header.Set("Authorization", "Bearer "+PlaceholderAnthropicOAuth)
	for i := 0; i+1 < len(hdr); i += 2 {
		req.Header.Set(hdr[i], hdr[i+1])
	}
	a, err := inj.Apply(req, "api.anthropic.com", "")
	return req, a, err
}

func wantDenied(t *testing.T, req *http.Request, a Applied, err error) {
	t.Helper()
	if !errors.Is(err, ErrRequestDenied) || a.Injected {
		t.Fatalf("Apply = %+v, %v; want ErrRequestDenied and nothing injected", a, err)
	}
	assertNoRealCredential(t, req.Header)
}

// TestDeny_MintingEndpointGetsNoCredential: a rule's deny list keeps the
// credential off requests that would mint new secrets, however the method
// and path are spelled; other requests on the same host are injected as
// usual. Every "denied" row but the first few reached the upstream with the
// real credential before paths were normalized.
func TestDeny_MintingEndpointGetsNoCredential(t *testing.T) {
	rule := Rule{Host: "api.anthropic.com", Credential: "anthropic", Format: FormatAnthropic,
		Strip: []string{"Authorization", "X-Api-Key"},
		Deny:  []string{"POST /api/oauth/claude_cli/create_api_key", "* /admin/", "POST /v1/keys", "/repos/*/*/keys"}}
	inj, _ := newTestInjector(t, []Rule{rule}, allReal...)
	tests := []struct {
		name, method, target string
		hdr                  []string
		denied               bool
	}{
		{"exact_path", "POST", "/api/oauth/claude_cli/create_api_key", nil, true},
		{"below_the_prefix", "POST", "/api/oauth/claude_cli/create_api_key/x", nil, true},
		{"dot_dot_spelling", "POST", "/api/oauth/x/../claude_cli/create_api_key", nil, true},
		{"double_slash", "POST", "//api/oauth/claude_cli//create_api_key", nil, true},
		{"percent_encoded_slash", "POST", "/api/oauth/claude_cli%2Fcreate_api_key", nil, true},
		{"any_method_prefix", "GET", "/admin/users", nil, true},
		{"lower_case_method", "post", "/v1/keys", nil, true},
		{"upper_case_path", "POST", "/V1/KEYS", nil, true},
		{"matrix_parameter", "POST", "/v1/keys;x", nil, true},
		{"matrix_parameter_mid_path", "POST", "/v1;x/keys", nil, true},
		{"extension", "POST", "/v1/keys.json", nil, true},
		{"trailing_dot", "POST", "/v1/keys.", nil, true},
		{"duplicate_slash_inside", "POST", "/v1//keys", nil, true},
		{"dot_segment", "POST", "/v1/./keys", nil, true},
		{"climb_from_elsewhere", "POST", "/x/../v1/keys", nil, true},
		{"climb_above_root", "POST", "/../../v1/keys", nil, true},
		{"encoded_slash_lower", "POST", "/v1%2fkeys", nil, true},
		{"encoded_dots", "POST", "/x/%2e%2e/v1/keys", nil, true},
		{"encoded_letters", "POST", "/v1/%6Beys", nil, true},
		{"double_encoded_slash", "POST", "/v1%252Fkeys", nil, true},
		{"backslash", "POST", "/v1\\keys", nil, true},
		{"dot_dot_semicolon", "POST", "/v1/keys;/../../x", nil, true},
		{"nul_cut", "POST", "/v1/keys%00.png", nil, true},
		{"trailing_slash", "POST", "/v1/keys/", nil, true},
		{"wildcard_segments", "PUT", "/repos/me/project/keys", nil, true},
		{"wildcard_segments_spelled", "PUT", "/REPOS/me/project//keys.json", nil, true},
		{"method_override_query", "POST", "/v1/messages?_method=DELETE", nil, true},
		{"method_override_query_encoded", "POST", "/v1/messages?%5Fmethod=DELETE", nil, true},
		{"method_override_query_semicolon", "POST", "/v1/messages?a=1;_METHOD=DELETE", nil, true},
		{"method_override_header", "POST", "/v1/messages", []string{"X-HTTP-Method-Override", "DELETE"}, true},
		{"method_header", "POST", "/v1/messages", []string{"X-HTTP-Method", "DELETE"}, true},
		{"method_override_header_alt", "POST", "/v1/messages", []string{"X-Method-Override", "DELETE"}, true},
		{"method_override_underscores", "POST", "/v1/messages", []string{"x_http_method_override", "DELETE"}, true},
		{"original_url", "GET", "/v1/messages", []string{"X-Original-URL", "/v1/keys"}, true},
		{"rewrite_url", "GET", "/v1/messages", []string{"X-Rewrite-URL", "/v1/keys"}, true},
		{"trace", "TRACE", "/v1/messages", nil, true},
		{"track", "TRACK", "/v1/messages", nil, true},
		{"other_method_allowed", "GET", "/api/oauth/claude_cli/create_api_key", nil, false},
		{"segment_boundary", "POST", "/api/oauth/claude_cli/create_api_keys", nil, false},
		{"not_an_extension", "POST", "/v1/keyring", nil, false},
		{"wildcard_needs_all_segments", "PUT", "/repos/me/keys", nil, false},
		{"ordinary_request", "POST", "/v1/messages?beta=true", nil, false},
		{"query_value_mentions_method", "GET", "/v1/messages?q=_method", nil, false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, a, err := applyTarget(t, inj, tt.method, tt.target, tt.hdr...)
			if tt.denied {
				wantDenied(t, req, a, err)
				return
			}
			if err != nil || !a.Injected {
				t.Fatalf("Apply = %+v, %v; want the credential injected", a, err)
			}
		})
	}
}

// TestDeny_TraceRefusedOnEveryRule: TRACE, TRACK and CONNECT never carry a
// credential, even on a rule without lists (an upstream that echoes TRACE
// hands the credential back in its body).
func TestDeny_TraceRefusedOnEveryRule(t *testing.T) {
	rule := Rule{Host: "api.anthropic.com", Credential: "anthropic", Format: FormatAnthropic}
	inj, _ := newTestInjector(t, []Rule{rule}, allReal...)
	for _, m := range []string{"TRACE", "trace", "TRACK"} {
		req, a, err := applyTarget(t, inj, m, "/")
		wantDenied(t, req, a, err)
	}
	// An h2 CONNECT: authority only, no path.
	req := &http.Request{Method: "CONNECT", Host: "api.anthropic.com", URL: &url.URL{Host: "api.anthropic.com"}, Header: http.Header{}}
	a, err := inj.Apply(req, "api.anthropic.com", "")
	wantDenied(t, req, a, err)
	// Overrides are refused only where a list gives them something to
	// step around.
	if _, a, err := applyTarget(t, inj, "POST", "/v1/messages?_method=DELETE", "X-HTTP-Method-Override", "DELETE"); err != nil || !a.Injected {
		t.Fatalf("rule without lists: Apply = %+v, %v; want injected", a, err)
	}
}

// TestAllow_OnlyListedEndpointsGetTheCredential: a rule with an allow list
// injects only for requests that match it in every reading of the path.
func TestAllow_OnlyListedEndpointsGetTheCredential(t *testing.T) {
	rule := Rule{Host: "api.anthropic.com", Credential: "anthropic", Format: FormatAnthropic,
		Allow: []string{"POST /v1/messages", "GET /v1/models", "/api/hello"},
		Deny:  []string{"/v1/messages/batches"}}
	inj, _ := newTestInjector(t, []Rule{rule}, allReal...)
	tests := []struct {
		name, method, target string
		allowed              bool
	}{
		{"listed", "POST", "/v1/messages", true},
		{"below_listed", "POST", "/v1/messages/count_tokens", true},
		{"listed_any_method", "HEAD", "/api/hello", true},
		{"case_spelling", "post", "/V1/Messages", true},
		{"with_query", "GET", "/v1/models?limit=5", true},
		{"unlisted", "POST", "/v1/files", false},
		{"unlisted_method", "DELETE", "/v1/messages", false},
		{"denied_below_allowed", "POST", "/v1/messages/batches", false},
		{"climb_out", "POST", "/v1/messages/../files", false},
		{"encoded_climb_out", "POST", "/v1/messages%2F..%2Ffiles", false},
		{"double_encoded_climb_out", "POST", "/v1/messages%252F..%252Ffiles", false},
		{"semicolon_climb_out", "POST", "/v1/messages;/../files", false},
		{"not_a_segment", "POST", "/v1/messagesx", false},
		{"no_extension_for_allow", "POST", "/v1/messages.evil", false},
		{"root", "GET", "/", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req, a, err := applyTarget(t, inj, tt.method, tt.target)
			if !tt.allowed {
				wantDenied(t, req, a, err)
				return
			}
			if err != nil || !a.Injected {
				t.Fatalf("Apply = %+v, %v; want the credential injected", a, err)
			}
		})
	}
}

// TestDeny_DefaultRulesKeepMintingEndpointsDenied: the built-in rules'
// deny lists cover the credential-minting endpoints of each host.
func TestDeny_DefaultRulesKeepMintingEndpointsDenied(t *testing.T) {
	inj, _ := newTestInjector(t, nil, allReal...)
	tests := []struct {
		host, method, target string
		denied               bool
	}{
		{"api.anthropic.com", "POST", "/api/oauth/claude_cli/create_api_key", true},
		{"api.anthropic.com", "POST", "/v1/oauth/token", true},
		{"api.anthropic.com", "POST", "/v1/organizations/api_keys", true},
		{"api.anthropic.com", "GET", "/v1/organizations/users", true},
		{"api.anthropic.com", "POST", "/v1/messages", false},
		{"api.anthropic.com", "GET", "/api/oauth/profile", false},
		{"api.github.com", "POST", "/authorizations", true},
		{"api.github.com", "DELETE", "/applications/Iv1.abc/token", true},
		{"api.github.com", "POST", "/user/keys", true},
		{"api.github.com", "DELETE", "/user/keys/42", true},
		{"api.github.com", "POST", "/user/gpg_keys", true},
		{"api.github.com", "POST", "/repos/o/r/keys", true},
		{"api.github.com", "POST", "/repos/o/r/actions/runners/registration-token", true},
		{"api.github.com", "POST", "/orgs/o/actions/runners/generate-jitconfig", true},
		{"api.github.com", "GET", "/user/keys", false},
		{"api.github.com", "GET", "/repos/o/r/pulls", false},
		{"api.github.com", "POST", "/repos/o/r/issues", false},
		{"api.openai.com", "POST", "/v1/organization/admin_api_keys", true},
		{"api.openai.com", "GET", "/v1/organization/projects/p1/api_keys", true},
		{"api.openai.com", "POST", "/v1/organization/projects/p1/service_accounts", true},
		{"api.openai.com", "POST", "/v1/chat/completions", false},
		{"registry.npmjs.org", "POST", "/-/npm/v1/tokens", true},
		{"registry.npmjs.org", "GET", "/-/npm/v1/tokens", true},
		{"registry.npmjs.org", "GET", "/left-pad", false},
		{"github.com", "POST", "/o/r.git/git-receive-pack", false},
	}
	for _, tt := range tests {
		t.Run(tt.host+tt.target, func(t *testing.T) {
			req := httptest.NewRequest(tt.method, "https://"+tt.host+tt.target, nil)
			a, err := inj.Apply(req, tt.host, "")
			if tt.denied {
				wantDenied(t, req, a, err)
				return
			}
			if err != nil || !a.Injected {
				t.Fatalf("Apply = %+v, %v; want the credential injected", a, err)
			}
		})
	}
}

func TestDeny_Validation(t *testing.T) {
	tests := []struct {
		entry, wantErr string
	}{
		{"POST /v1/keys", ""},
		{"/v1/keys", ""},
		{"* /", ""},
		{"/repos/*/*/keys", ""},
		{"v1/keys", "absolute"},
		{"POST /a/../b", "clean"},
		{"PO5T /x", "HTTP method"},
		{"POST /x extra", "expected"},
		{"/v1/ke*s", "whole segment"},
		{"/v1%2Fkeys", "decoded"},
		{"/v1/keys;x", "decoded"},
	}
	for _, tt := range tests {
		for _, field := range []string{"deny", "allow"} {
			r := Rule{Host: "api.example.com", Credential: "x"}
			if field == "deny" {
				r.Deny = []string{tt.entry}
			} else {
				r.Allow = []string{tt.entry}
			}
			err := ValidateRule(r)
			if tt.wantErr == "" && err != nil {
				t.Errorf("%s %q: %v, want valid", field, tt.entry, err)
			}
			if tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr) || !strings.HasPrefix(err.Error(), field+"[0]")) {
				t.Errorf("%s %q: %v, want an error at %s[0] containing %q", field, tt.entry, err, field, tt.wantErr)
			}
		}
	}
}

// TestRule_WildcardOnPublicSuffixRefused: "*.github.io" would send the
// credential to every GitHub Pages site; any wildcard whose suffix is a
// public suffix (ICANN or private section) is refused.
func TestRule_WildcardOnPublicSuffixRefused(t *testing.T) {
	tests := []struct {
		host string
		ok   bool
	}{
		{"*.github.io", false},
		{"*.co.uk", false},
		{"*.GitHubUserContent.com.", false},
		{"*.s3.amazonaws.com", false},
		{"*.example.com", true},
		{"*.corp.example.co.uk", true},
		{"*.me.github.io", true},
		{"github.io", true}, // an exact host names one site
	}
	for _, tt := range tests {
		err := ValidateRule(Rule{Host: tt.host, Credential: "x"})
		if tt.ok && err != nil {
			t.Errorf("host %q: %v, want valid", tt.host, err)
		}
		if !tt.ok && (err == nil || !strings.Contains(err.Error(), "public suffix")) {
			t.Errorf("host %q: %v, want a public suffix error", tt.host, err)
		}
	}
}
