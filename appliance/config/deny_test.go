package config

import (
	"strings"
	"testing"
)

func TestRules_DenyEntries(t *testing.T) {
	ok := "rules:\n  - host: api.example.com\n    credential: example\n    deny: [\"POST /v1/keys\", \"/admin\"]\n"
	cfg, err := load(t, ok, nil)
	if err != nil {
		t.Fatalf("valid deny list: %v", err)
	}
	if got := cfg.Rules[0].Deny; len(got) != 2 || got[0] != "POST /v1/keys" {
		t.Errorf("Deny = %q", got)
	}
	for _, bad := range []string{"v1/keys", "POST /a/../b", "POST  /x y", "POST //x"} {
		text := "rules:\n  - host: api.example.com\n    credential: example\n    deny: [\"" + bad + "\"]\n"
		_, err := load(t, text, nil)
		if err == nil || !strings.Contains(err.Error(), "rules[0].deny[0]") {
			t.Errorf("deny %q: err = %v, want one naming rules[0].deny[0]", bad, err)
		}
	}
}

func TestRules_AllowEntriesAndPublicSuffixes(t *testing.T) {
	ok := "rules:\n  - host: api.example.com\n    credential: example\n    allow: [\"POST /v1/messages\", \"GET /repos/*/*/pulls\"]\n"
	cfg, err := load(t, ok, nil)
	if err != nil {
		t.Fatalf("valid allow list: %v", err)
	}
	if got := cfg.Rules[0].Allow; len(got) != 2 || got[1] != "GET /repos/*/*/pulls" {
		t.Errorf("Allow = %q", got)
	}
	for _, bad := range []string{"/v1/%6beys", "/v1/keys;x", `/v1\keys`} {
		text := "rules:\n  - host: api.example.com\n    credential: example\n    allow: [\"" + strings.ReplaceAll(bad, `\`, `\\`) + "\"]\n"
		if _, err := load(t, text, nil); err == nil || !strings.Contains(err.Error(), "rules[0].allow[0]") {
			t.Errorf("allow %q: err = %v, want one naming rules[0].allow[0]", bad, err)
		}
	}
	for _, tc := range []struct{ text, key string }{
		{"rules:\n  - host: \"*.github.io\"\n    credential: example\n", "rules[0].host"},
		{"rules:\n  - host: \"*.co.uk\"\n    credential: example\n", "rules[0].host"},
		{"egress:\n  allow: [\"*.githubusercontent.com\"]\n", "egress.allow[0]"},
	} {
		if _, err := load(t, tc.text, nil); err == nil || !strings.Contains(err.Error(), tc.key) || !strings.Contains(err.Error(), "public suffix") {
			t.Errorf("%q: err = %v, want a public-suffix refusal naming %s", tc.text, err, tc.key)
		}
	}
	if _, err := load(t, "egress:\n  allow: [\"*.pythonhosted.org\"]\nrules:\n  - host: \"*.example.com\"\n    credential: example\n", nil); err != nil {
		t.Errorf("wildcards under ordinary domains: %v", err)
	}
}

func TestRules_PushScope(t *testing.T) {
	cfg, err := load(t, "rules:\n  - host: github.com\n    credential: github\n    format: basic-x-access-token\n    push: [acme/app, \"tools/*\"]\n", nil)
	if err != nil {
		t.Fatal(err)
	}
	if got := cfg.Rules[0].Push; len(got) != 2 || got[1] != "tools/*" {
		t.Errorf("Push = %q", got)
	}
	if _, err := load(t, "rules:\n  - host: github.com\n    credential: github\n    push: [acme]\n", nil); err == nil || !strings.Contains(err.Error(), "rules[0].push[0]") {
		t.Errorf("a push entry without a repository: %v", err)
	}
}
