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
