package injector

import (
	"errors"
	"net/http"
	"net/http/httptest"
	"testing"
)

// TestPush_OnlyListedRepositories: with a push scope, a git push (both
// requests of the smart HTTP protocol, in any spelling) to an unlisted
// repository gets no credential; clones, fetches and listed pushes do.
func TestPush_OnlyListedRepositories(t *testing.T) {
	cr := compile(Rule{Host: "github.com", Credential: "github", Format: FormatBasicXAccessToken, Push: []string{"acme/app", "tools/*"}})
	for _, tc := range []struct {
		method, target string
		ok             bool
	}{
		{"GET", "/evil/exfil.git/info/refs?service=git-upload-pack", true},
		{"POST", "/evil/exfil.git/git-upload-pack", true},
		{"GET", "/acme/app.git/info/refs?service=git-receive-pack", true},
		{"POST", "/acme/app.git/git-receive-pack", true},
		{"POST", "/ACME/App/git-receive-pack", true},
		{"POST", "/tools/anything.git/git-receive-pack", true},
		{"GET", "/evil/exfil.git/info/refs?service=git-receive-pack", false},
		{"GET", "/evil/exfil.git/info/refs?service=GIT-RECEIVE-PACK", false},
		{"POST", "/evil/exfil.git/git-receive-pack", false},
		{"POST", "/acme/app.git/../../evil/exfil.git/git-receive-pack", false},
		{"POST", "/evil/exfil.git/git%2Dreceive%2Dpack", false},
		{"POST", "/acme/other.git/git-receive-pack", false},
		{"POST", "/git-receive-pack", false},
	} {
		req := httptest.NewRequest(tc.method, "https://github.com"+tc.target, nil)
		err := checkRequestPolicy(cr, req)
		if (err == nil) != tc.ok || (err != nil && !errors.Is(err, ErrRequestDenied)) {
			t.Errorf("%s %s: %v, want allowed=%v", tc.method, tc.target, err, tc.ok)
		}
	}
	unlimited := compile(Rule{Host: "github.com", Credential: "github", Format: FormatBasicXAccessToken})
	if err := checkRequestPolicy(unlimited, httptest.NewRequest(http.MethodPost, "https://github.com/evil/x.git/git-receive-pack", nil)); err != nil {
		t.Errorf("without a push scope pushes are not limited: %v", err)
	}
	none := compile(Rule{Host: "github.com", Credential: "github", Format: FormatBasicXAccessToken, Push: []string{}})
	if err := checkRequestPolicy(none, httptest.NewRequest(http.MethodPost, "https://github.com/acme/app.git/git-receive-pack", nil)); err == nil {
		t.Error("an empty push scope lets a push through")
	}
	for _, bad := range []string{"acme", "acme/app/x", "*/app", "../x"} {
		if err := ValidateRule(Rule{Host: "github.com", Credential: "github", Push: []string{bad}}); err == nil {
			t.Errorf("push entry %q accepted", bad)
		}
	}
}
