package injector

import (
	"log/slog"
	"net/http"
	"net/url"
	"testing"
)

// BenchmarkApply measures the per-request cost on the hot path (run with
// -benchmem; the target is under 10 allocations per request).
func BenchmarkApply(b *testing.B) {
	store, err := NewStore(StoreOptions{Environ: func() []string { return allReal }})
	if err != nil {
		b.Fatal(err)
	}
	inj, err := New(append(DefaultRules(), Rule{Host: "*.corp.example.com", Credential: "corp"}), store, slog.New(slog.DiscardHandler))
	if err != nil {
		b.Fatal(err)
	}
	cases := []struct {
		name, host, profile string
		auth                []string
	}{
		{"anthropic_oauth", "api.anthropic.com", "", []string{"Bearer " + PlaceholderAnthropicOAuth}},
		{"github_git_basic", "github.com", "", []string{"Basic eC1hY2Nlc3MtdG9rZW46Y2xhdWRlcm9uLXByb3h5"}},
		{"openai_no_client_header", "api.openai.com", "", nil},
		{"wildcard_no_credential", "a.corp.example.com", "", nil},
		{"named_profile_missing", "api.openai.com", "team-a", nil},
	}
	for _, c := range cases {
		b.Run(c.name, func(b *testing.B) {
			req := &http.Request{Method: "POST", Host: c.host, URL: &url.URL{Path: "/v1/messages"}, Header: http.Header{
				"Accept": {"text/event-stream"}, "Content-Type": {"application/json"}, "User-Agent": {"claude-cli/2.1"},
			}}
			b.ReportAllocs()
			for b.Loop() {
				if c.auth != nil {
					req.Header["Authorization"] = c.auth
				}
				_, _ = inj.Apply(req, c.host, c.profile)
			}
		})
	}
}
