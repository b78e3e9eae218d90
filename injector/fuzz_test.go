package injector

import (
	"errors"
	"log/slog"
	"net/http"
	"net/url"
	"strings"
	"testing"
)

// FuzzRuleParse feeds arbitrary rule fields, a request host and a
// credential value through ValidateRule, New, Match and Apply. The
// invariants: no panic; a rule that validates builds an Injector; Match
// agrees with the documented host semantics; a credential is never written
// for a host the rule does not match; an injected header value never
// carries CR, LF or NUL; a valid template has exactly one placeholder.
//
// Seeds live in testdata/fuzz/FuzzRuleParse (run as unit tests without
// -fuzz); the f.Add lines below are the annotated core of them.
func FuzzRuleParse(f *testing.F) {
	// host, credential, header, format, template, strip (comma-separated), on_client_credential, request host, credential value
	f.Add("api.anthropic.com", "anthropic", "", "anthropic", "", "Authorization,X-Api-Key", "", "api.anthropic.com", "sk-ant-oat01-abc") // default OAuth
	f.Add("api.anthropic.com", "anthropic", "", "anthropic", "", "", "replace", "API.ANTHROPIC.COM.:443", "sk-ant-api03-abc")            // API key, odd host spelling
	f.Add("*.example.com", "corp", "Private-Token", "template", "token {{credential}}", "", "keep", "a.example.com", "tok")              // wildcard + template
	f.Add("*.example.com", "corp", "", "bearer", "", "", "", "example.com", "tok")                                                       // wildcard never matches bare domain
	f.Add("github.com", "github", "", "basic-x-access-token", "", "Authorization", "reject", "github.com.evil.com", "ghp_x")             // lookalike host
	f.Add("h.example.com", "x", "X-K", "template", "{{credential}}\r\nX-Evil: 1", "", "", "h.example.com", "v")                          // header injection via template
	f.Add("h.example.com", "x", "", "x-api-key", "", "", "", "h.example.com", "v\r\nX-Evil: 1")                                          // header injection via value
	f.Add("h.example.com", "../../etc", "", "", "", "", "", "h.example.com", "v")                                                        // path traversal in credential name
	f.Add("[::1]", "x", "Host", "", "", "Content-Length", "", "[::1]:443", "v")                                                          // IP literal, framing headers
	f.Add("*.", "x", "", "template", "{{credential}}{{credential}}", "", "", "", "")                                                     // degenerate
	f.Fuzz(func(t *testing.T, host, cred, header, format, template, strip, onClient, reqHost, value string) {
		r := Rule{Host: host, Credential: cred, Header: header, Format: format, Template: template, OnClientCredential: onClient}
		if strip != "" {
			r.Strip = strings.Split(strip, ",")
		}
		if err := ValidateRule(r); err != nil {
			return
		}
		if format == FormatTemplate {
			if strings.Count(template, TemplatePlaceholder) != 1 || strings.ContainsAny(template, "\r\n\x00") {
				t.Fatalf("template %q validated", template)
			}
		}
		store, err := NewStore(StoreOptions{Environ: func() []string { return []string{EnvNames(cred)[0] + "=" + value} }})
		if err != nil {
			t.Fatalf("NewStore: %v", err)
		}
		inj, err := New([]Rule{r}, store, slog.New(slog.DiscardHandler))
		if err != nil {
			t.Fatalf("valid rule %+v rejected by New: %v", r, err)
		}
		_, matched := inj.Match(reqHost)
		if matched != referenceMatch(r.Host, reqHost) {
			t.Fatalf("Match(%q) for pattern %q = %v, reference says %v", reqHost, r.Host, matched, !matched)
		}
		req := &http.Request{Host: reqHost, URL: &url.URL{}, Header: http.Header{"Authorization": {"Bearer " + PlaceholderAnthropicOAuth}}}
		a, err := inj.Apply(req, reqHost, "")
		if !matched && !errors.Is(err, ErrNoRule) {
			t.Fatalf("Apply on unmatched host %q = %+v, %v; want ErrNoRule", reqHost, a, err)
		}
		if value != "" && !a.Injected {
			for k, vs := range req.Header {
				for _, v := range vs {
					if strings.Contains(v, value) && !strings.Contains("Bearer "+PlaceholderAnthropicOAuth, value) {
						t.Fatalf("credential written to %s although nothing was injected (%v)", k, err)
					}
				}
			}
		}
		if a.Injected {
			for k, vs := range req.Header {
				for _, v := range vs {
					if strings.ContainsAny(v, "\r\n\x00") {
						t.Fatalf("header %s value has CR/LF/NUL", k)
					}
				}
			}
		}
	})
}

// referenceMatch restates the host semantics independently of matchHost.
func referenceMatch(pattern, reqHost string) bool {
	p := strings.ToLower(strings.TrimSuffix(pattern, "."))
	h := reqHost
	if i := strings.LastIndex(h, ":"); i >= 0 && strings.Count(h, ":") == 1 {
		h = h[:i]
	} else if strings.HasPrefix(h, "[") {
		if j := strings.Index(h, "]"); j >= 0 {
			h = h[1:j]
		}
	}
	h = strings.ToLower(strings.TrimSuffix(h, "."))
	if rest, ok := strings.CutPrefix(p, "*."); ok {
		labels := strings.TrimSuffix(h, "."+rest)
		return labels != h && labels != ""
	}
	return p == h
}

// FuzzClientCredential feeds arbitrary client header values (a trust
// boundary: the container controls them, including base64 it wants us to
// decode) through the placeholder detection and Apply. Invariants: no
// panic; a bare placeholder is always recognised; a value that is not a
// placeholder is never silently replaced under "reject".
func FuzzClientCredential(f *testing.F) {
	f.Add("Bearer " + PlaceholderAnthropicOAuth)
	f.Add("Basic eC1hY2Nlc3MtdG9rZW46Y2xhdWRlcm9uLXByb3h5") // x-access-token:clauderon-proxy
	f.Add("Basic !!!notbase64")
	f.Add("Basic " + strings.Repeat("QUFB", 200)) // longer than the decode buffer
	f.Add("token clauderon-proxy")
	f.Add("Bearer")
	f.Add("  \t ")
	f.Add("sk-ant-api03-client-own")
	store, err := NewStore(StoreOptions{Environ: func() []string { return []string{"GITHUB_TOKEN=ghp_real"} }})
	if err != nil {
		f.Fatal(err)
	}
	inj, err := New([]Rule{{Host: "api.github.com", Credential: "github", OnClientCredential: OnClientCredentialReject}}, store, nil)
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, v string) {
		placeholder := isPlaceholderHeader(v)
		if IsPlaceholder(v) && !placeholder {
			t.Fatalf("bare placeholder %q not recognised", v)
		}
		req := &http.Request{Host: "api.github.com", URL: &url.URL{}, Header: http.Header{"Authorization": {v}}}
		a, err := inj.Apply(req, "api.github.com", "")
		switch {
		case placeholder && (err != nil || req.Header.Get("Authorization") != "Bearer ghp_real"):
			t.Fatalf("placeholder %q: Apply = %+v, %v, header %q", v, a, err, req.Header.Get("Authorization"))
		case !placeholder && !errors.Is(err, ErrClientCredentialRejected):
			t.Fatalf("client credential %q: Apply = %+v, %v; want rejected", v, a, err)
		}
	})
}
