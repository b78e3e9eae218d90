package config

import (
	"strings"
	"testing"
)

// TestLoad_AuditBudget: the per-source audit budget has sane defaults,
// can be set or turned off, and bad values name their key.
func TestLoad_AuditBudget(t *testing.T) {
	tests := []struct {
		name       string
		yaml       string
		env        map[string]string
		wantRate   float64
		wantBurst  int
		wantErrSub string
	}{
		{name: "defaults", wantRate: 200, wantBurst: 2000},
		{name: "set", yaml: "audit: {rate_per_second: 50.5, burst: 100}\n", wantRate: 50.5, wantBurst: 100},
		{name: "off", yaml: "audit: {rate_per_second: 0, burst: 0}\n", wantRate: 0, wantBurst: 0},
		{name: "env", env: map[string]string{"CLAUDERON_AUDIT_RATE_PER_SECOND": "10", "CLAUDERON_AUDIT_BURST": "20"}, wantRate: 10, wantBurst: 20},
		{name: "negative_rate", yaml: "audit: {rate_per_second: -1}\n", wantErrSub: "audit.rate_per_second: -1 is not a rate"},
		{name: "no_burst", yaml: "audit: {rate_per_second: 10, burst: 0}\n", wantErrSub: "audit.burst: 0 is less than 1"},
		{name: "typo", yaml: "audit: {rate_per_sec: 10}\n", wantErrSub: "audit.rate_per_sec: unknown config key; did you mean audit.rate_per_second?"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c, err := load(t, tt.yaml, tt.env)
			if tt.wantErrSub != "" {
				if err == nil || !strings.Contains(err.Error(), tt.wantErrSub) {
					t.Fatalf("err = %v, want %q", err, tt.wantErrSub)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if c.Audit.RatePerSecond != tt.wantRate || c.Audit.Burst != tt.wantBurst {
				t.Errorf("audit = %+v, want rate %v burst %d", c.Audit, tt.wantRate, tt.wantBurst)
			}
		})
	}
}
