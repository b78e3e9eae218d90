package injector

import (
	"strings"
	"testing"
)

func TestValidateRule(t *testing.T) {
	ok := Rule{Host: "api.example.com", Credential: "example"}
	tests := []struct {
		name    string
		mutate  func(r *Rule)
		wantErr string // substring; empty means valid
	}{
		{"minimal_bearer_rule_is_valid", func(r *Rule) {}, ""},
		{"wildcard_host_is_valid", func(r *Rule) { r.Host = "*.example.com" }, ""},
		{"upper_case_and_trailing_dot_are_tolerated", func(r *Rule) { r.Host = "API.Example.COM." }, ""},
		{"empty_host", func(r *Rule) { r.Host = "" }, "host: empty"},
		{"bare_star_host", func(r *Rule) { r.Host = "*" }, "host:"},
		{"wildcard_over_a_tld", func(r *Rule) { r.Host = "*.com" }, "at least two labels"},
		{"wildcard_in_the_middle", func(r *Rule) { r.Host = "api.*.com" }, "host:"},
		{"ip_literal_host", func(r *Rule) { r.Host = "10.0.0.1" }, "is an IP address"},
		{"ipv6_literal_host", func(r *Rule) { r.Host = "::1" }, "is an IP address"},
		{"host_with_port", func(r *Rule) { r.Host = "api.example.com:443" }, "host:"},
		{"host_with_space", func(r *Rule) { r.Host = "api example.com" }, "host:"},
		{"label_starting_with_hyphen", func(r *Rule) { r.Host = "-api.example.com" }, "starts or ends"},
		{"empty_label", func(r *Rule) { r.Host = "api..example.com" }, "empty or over-long label"},
		{"empty_credential", func(r *Rule) { r.Credential = "" }, "credential:"},
		{"credential_with_path_separator", func(r *Rule) { r.Credential = "../etc/passwd" }, "credential:"},
		{"credential_dotdot", func(r *Rule) { r.Credential = ".." }, "credential:"},
		{"credential_upper_case", func(r *Rule) { r.Credential = "GitHub" }, "credential:"},
		{"unknown_format", func(r *Rule) { r.Format = "digest" }, "format: \"digest\""},
		{"x_api_key_format", func(r *Rule) { r.Format = FormatXAPIKey }, ""},
		{"basic_format", func(r *Rule) { r.Format = FormatBasicXAccessToken }, ""},
		{"anthropic_format", func(r *Rule) { r.Format = FormatAnthropic }, ""},
		{"anthropic_format_with_header", func(r *Rule) { r.Format = FormatAnthropic; r.Header = "Authorization" }, "header: must be empty"},
		{"template_ok", func(r *Rule) { r.Format = FormatTemplate; r.Template = "token {{credential}}" }, ""},
		{"template_missing", func(r *Rule) { r.Format = FormatTemplate }, "template: empty"},
		{"template_without_placeholder", func(r *Rule) { r.Format = FormatTemplate; r.Template = "token abc" }, "exactly once, found 0"},
		{"template_with_two_placeholders", func(r *Rule) { r.Format = FormatTemplate; r.Template = "{{credential}}{{credential}}" }, "exactly once, found 2"},
		{"template_with_spaced_placeholder_typo", func(r *Rule) {
			r.Format = FormatTemplate
			r.Template = "{{credential}} {{ credential }}"
		}, "brace pair"},
		{"template_with_crlf", func(r *Rule) { r.Format = FormatTemplate; r.Template = "token {{credential}}\r\nX-Evil: 1" }, "control character 0x0d"},
		{"template_with_lf", func(r *Rule) { r.Format = FormatTemplate; r.Template = "token\n{{credential}}" }, "control character 0x0a"},
		{"template_with_nul", func(r *Rule) { r.Format = FormatTemplate; r.Template = "token\x00{{credential}}" }, "control character 0x00"},
		{"template_on_bearer_format", func(r *Rule) { r.Template = "token {{credential}}" }, "template: only allowed"},
		{"header_with_colon", func(r *Rule) { r.Header = "Authorization:" }, "header: header name"},
		{"header_host_is_forbidden", func(r *Rule) { r.Header = "host" }, "frames or routes"},
		{"strip_content_length_is_forbidden", func(r *Rule) { r.Strip = []string{"Content-Length"} }, "strip[0]:"},
		{"strip_with_space", func(r *Rule) { r.Strip = []string{"X Api Key"} }, "strip[0]:"},
		{"on_client_credential_keep", func(r *Rule) { r.OnClientCredential = "keep" }, ""},
		{"on_client_credential_reject", func(r *Rule) { r.OnClientCredential = "reject" }, ""},
		{"on_client_credential_unknown", func(r *Rule) { r.OnClientCredential = "merge" }, "on_client_credential:"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			r := ok
			tt.mutate(&r)
			err := ValidateRule(r)
			switch {
			case tt.wantErr == "" && err != nil:
				t.Fatalf("ValidateRule(%+v) = %v, want nil", r, err)
			case tt.wantErr != "" && err == nil:
				t.Fatalf("ValidateRule(%+v) = nil, want error containing %q", r, tt.wantErr)
			case tt.wantErr != "" && !strings.Contains(err.Error(), tt.wantErr):
				t.Fatalf("ValidateRule(%+v) = %q, want it to contain %q", r, err, tt.wantErr)
			}
		})
	}
}

func TestDefaultRules_AreValid(t *testing.T) {
	if err := ValidateRules(DefaultRules()); err != nil {
		t.Fatalf("ValidateRules(DefaultRules()) = %v", err)
	}
	hosts := map[string]string{}
	for _, r := range DefaultRules() {
		hosts[r.Host] = r.Credential + "/" + r.Format
	}
	want := map[string]string{
		"api.anthropic.com":  "anthropic/anthropic",
		"api.openai.com":     "openai/bearer",
		"api.github.com":     "github/bearer",
		"github.com":         "github/basic-x-access-token",
		"registry.npmjs.org": "npm/bearer",
	}
	for h, w := range want {
		if hosts[h] != w {
			t.Errorf("default rule for %s = %q, want %q", h, hosts[h], w)
		}
	}
}

func TestValidateRules_DuplicateHost(t *testing.T) {
	rules := []Rule{{Host: "a.example.com", Credential: "a"}, {Host: "A.example.com.", Credential: "b"}}
	err := ValidateRules(rules)
	if err == nil || !strings.Contains(err.Error(), "rules[1].host") {
		t.Fatalf("ValidateRules(duplicate hosts) = %v, want rules[1].host error", err)
	}
	err = ValidateRules([]Rule{{Host: "a.example.com", Credential: "a"}, {Host: "b.example.com", Format: "nope", Credential: "b"}})
	if err == nil || !strings.Contains(err.Error(), "rules[1].format") {
		t.Fatalf("ValidateRules(bad format) = %v, want rules[1].format error", err)
	}
}

func TestMergeRules_ConfiguredReplaceDefaultsByHost(t *testing.T) {
	got := MergeRules(DefaultRules(), []Rule{
		{Host: "API.OPENAI.COM", Credential: "openai-team", Format: FormatBearer},
		{Host: "*.corp.example.com", Credential: "corp"},
	})
	if len(got) != len(DefaultRules())+1 {
		t.Fatalf("len = %d, want %d", len(got), len(DefaultRules())+1)
	}
	if got[1].Credential != "openai-team" {
		t.Errorf("openai rule not replaced in place: %+v", got[1])
	}
	if got[len(got)-1].Host != "*.corp.example.com" {
		t.Errorf("new rule not appended: %+v", got[len(got)-1])
	}
}

func TestMatchHost(t *testing.T) {
	tests := []struct {
		name, pattern, host string
		want                bool
	}{
		{"exact", "api.example.com", "api.example.com", true},
		{"exact_other_host", "api.example.com", "evil.example.com", false},
		{"exact_is_not_suffix", "example.com", "api.example.com", false},
		{"exact_lookalike_suffix", "example.com", "evilexample.com", false},
		{"wildcard_one_label", "*.example.com", "a.example.com", true},
		{"wildcard_two_labels", "*.example.com", "a.b.example.com", true},
		{"wildcard_never_bare_domain", "*.example.com", "example.com", false},
		{"wildcard_lookalike", "*.example.com", "evilexample.com", false},
		{"wildcard_suffix_in_middle", "*.example.com", "a.example.com.evil.net", false},
		{"wildcard_empty_label", "*.example.com", ".example.com", false},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if got := matchHost(tt.pattern, tt.host); got != tt.want {
				t.Errorf("matchHost(%q, %q) = %v, want %v", tt.pattern, tt.host, got, tt.want)
			}
		})
	}
}

func TestHostOnly(t *testing.T) {
	for in, want := range map[string]string{
		"api.example.com":      "api.example.com",
		"API.Example.com.":     "api.example.com",
		"api.example.com:443":  "api.example.com",
		"api.example.com.:443": "api.example.com",
		"[::1]:443":            "::1",
		"::1":                  "::1",
		"":                     "",
	} {
		if got := hostOnly(in); got != want {
			t.Errorf("hostOnly(%q) = %q, want %q", in, got, want)
		}
	}
}
