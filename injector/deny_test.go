package injector

import (
	"errors"
	"net/http/httptest"
	"strings"
	"testing"
)

// TestDeny_MintingEndpointGetsNoCredential: a rule's deny list keeps the
// credential off requests that would mint new secrets, however the path is
// spelled; other requests on the same host are injected as usual.
func TestDeny_MintingEndpointGetsNoCredential(t *testing.T) {
	rule := Rule{Host: "api.anthropic.com", Credential: "anthropic", Format: FormatAnthropic,
		Strip: []string{"Authorization", "X-Api-Key"},
		Deny:  []string{"POST /api/oauth/claude_cli/create_api_key", "* /admin/"}}
	inj, _ := newTestInjector(t, []Rule{rule}, allReal...)
	tests := []struct {
		name, method, target string
		denied               bool
	}{
		{"exact_path", "POST", "/api/oauth/claude_cli/create_api_key", true},
		{"below_the_prefix", "POST", "/api/oauth/claude_cli/create_api_key/x", true},
		{"dot_dot_spelling", "POST", "/api/oauth/x/../claude_cli/create_api_key", true},
		{"double_slash", "POST", "//api/oauth/claude_cli//create_api_key", true},
		{"percent_encoded_slash", "POST", "/api/oauth/claude_cli%2Fcreate_api_key", true},
		{"any_method_prefix", "GET", "/admin/users", true},
		{"other_method_allowed", "GET", "/api/oauth/claude_cli/create_api_key", false},
		{"segment_boundary", "POST", "/api/oauth/claude_cli/create_api_keys", false},
		{"ordinary_request", "POST", "/v1/messages", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			req := httptest.NewRequest(tt.method, "https://api.anthropic.com"+tt.target, nil)
			req.Header.Set("Authorization", "Bearer "+PlaceholderAnthropicOAuth)
			a, err := inj.Apply(req, "api.anthropic.com", "")
			if tt.denied {
				if !errors.Is(err, ErrRequestDenied) || a.Injected {
					t.Fatalf("Apply = %+v, %v; want ErrRequestDenied and nothing injected", a, err)
				}
				assertNoRealCredential(t, req.Header)
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
		{"v1/keys", "absolute"},
		{"POST /a/../b", "clean"},
		{"PO5T /x", "HTTP method"},
		{"POST /x extra", "expected"},
	}
	for _, tt := range tests {
		err := ValidateRule(Rule{Host: "api.example.com", Credential: "x", Deny: []string{tt.entry}})
		if tt.wantErr == "" && err != nil {
			t.Errorf("deny %q: %v, want valid", tt.entry, err)
		}
		if tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)) {
			t.Errorf("deny %q: %v, want an error containing %q", tt.entry, err, tt.wantErr)
		}
	}
}
