package injector

import (
	"net/http"
	"net/url"
	"strings"
	"testing"
)

// FuzzDenyAllowPath feeds arbitrary request targets and methods through
// the path normalizer and the deny and allow matchers. The invariants:
//
//   - no panic;
//   - normalizePath is idempotent and its result is normal (isNormalPath);
//     pathViews' views are all normal, and a view without '%' is its own
//     only view;
//   - completeness: for every view, a deny entry made of any prefix of that
//     view's segments (in upper case, with the method in another case)
//     denies the request; an allow entry made the same way, combined with
//     a deny entry equal to it, never lets the request through (deny wins);
//   - an allow list of "/" never refuses a request without overrides.
//
// Seeds live in testdata/fuzz/FuzzDenyAllowPath (run as unit tests without
// -fuzz); the f.Add lines below are the annotated core of them.
func FuzzDenyAllowPath(f *testing.F) {
	// method, request target (path and query, as a client sends it), prefix length
	f.Add("POST", "/v1/keys", uint8(2))                   // plain
	f.Add("post", "/V1/KEYS", uint8(2))                   // case
	f.Add("POST", "/v1/keys;x", uint8(2))                 // matrix parameter
	f.Add("POST", "/v1/keys.json", uint8(2))              // extension
	f.Add("POST", "/v1//keys", uint8(2))                  // duplicate slash
	f.Add("POST", "/v1/./keys", uint8(2))                 // dot segment
	f.Add("POST", "/x/../v1/keys", uint8(2))              // dot-dot
	f.Add("POST", "/v1%2Fkeys", uint8(2))                 // encoded slash
	f.Add("POST", "/v1%252Fkeys", uint8(2))               // double-encoded slash
	f.Add("POST", "/x/%2e%2e/v1/keys", uint8(2))          // encoded dot-dot
	f.Add("POST", "/v1\\keys", uint8(2))                  // backslash
	f.Add("POST", "/v1/keys;/../../x", uint8(2))          // parameter then climb
	f.Add("POST", "/v1/keys%00.png", uint8(2))            // NUL
	f.Add("GET", "/v1/messages?_method=DELETE", uint8(1)) // method override in the query
	f.Add("GET", "/%25252525252525252525", uint8(1))      // deep encoding
	f.Add("OPTIONS", "*", uint8(0))                       // asterisk form
	f.Add("GET", "/repos/o/r/actions/runners/registration-token", uint8(6))
	f.Fuzz(func(t *testing.T, method, target string, k uint8) {
		if n := normalizePath(target); normalizePath(n) != n || !isNormalPath(n) {
			t.Fatalf("normalizePath(%q) = %q, not idempotent or not normal", target, n)
		}
		u, err := url.ParseRequestURI(target)
		if err != nil || method == "" || !validMethodToken(method) {
			return // the HTTP server refuses these before any rule sees them
		}
		req := &http.Request{Method: method, Host: "api.example.com", URL: u, Header: http.Header{}}
		var buf [4]string
		views := pathViews(requestTarget(req), &buf)
		for _, v := range views {
			if !isNormalPath(v) {
				t.Fatalf("view %q of %q is not normal", v, target)
			}
			if !strings.Contains(v, "%") {
				var b2 [4]string
				if again := pathViews(v, &b2); len(again) != 1 || again[0] != v {
					t.Fatalf("views of the view %q = %q", v, again)
				}
			}
		}
		overridden := checkRequestPolicy(&compiledRule{name: "r", deny: []pathEntry{{segs: []string{"nothing-here-at-all"}}}}, req) != nil
		everything := &compiledRule{name: "r", allow: compilePathList([]string{"/"})}
		if err := checkRequestPolicy(everything, req); err != nil && !overridden {
			t.Fatalf("allow / refused %s %q: %v", method, target, err)
		}
		for _, v := range views {
			entry, ok := prefixEntry(v, int(k))
			if !ok {
				continue
			}
			deny := compilePathList([]string{strings.ToUpper(method) + " " + asciiUpper(entry)})
			if len(deny) != 1 {
				continue // a method token parsePathEntry does not take (non-letters)
			}
			req.Method = swapCase(method)
			if checkRequestPolicy(&compiledRule{name: "r", deny: deny}, req) == nil {
				t.Fatalf("%s %q (view %q) not denied by %q", req.Method, target, v, deny[0].text)
			}
			if checkRequestPolicy(&compiledRule{name: "r", deny: deny, allow: deny}, req) == nil {
				t.Fatalf("%s %q allowed although its deny entry %q matches", req.Method, target, deny[0].text)
			}
			req.Method = method
		}
	})
}

// prefixEntry returns the first k segments of the normal path v as a deny
// entry, if such an entry is valid (no '*', '%' or ';', no control
// characters or spaces).
func prefixEntry(v string, k int) (string, bool) {
	segs := strings.Split(strings.TrimPrefix(v, "/"), "/")
	if v == "/" {
		segs = nil
	}
	k = min(k, len(segs))
	e := "/" + strings.Join(segs[:k], "/")
	if f := strings.Fields(e); len(f) != 1 || f[0] != e {
		return "", false // a space would split the entry
	}
	if _, err := parsePathEntry(e); err != nil {
		return "", false
	}
	return e, true
}

func validMethodToken(m string) bool {
	for i := 0; i < len(m); i++ {
		if !isTokenChar(m[i]) {
			return false
		}
	}
	return true
}

func asciiUpper(s string) string {
	b := []byte(s)
	for i, c := range b {
		if c >= 'a' && c <= 'z' {
			b[i] = c - 'a' + 'A'
		}
	}
	return string(b)
}

func swapCase(s string) string {
	b := []byte(s)
	for i, c := range b {
		switch {
		case c >= 'a' && c <= 'z':
			b[i] = c - 'a' + 'A'
		case c >= 'A' && c <= 'Z':
			b[i] = c - 'A' + 'a'
		}
	}
	return string(b)
}
