package injector

import (
	"errors"
	"fmt"
	"net/http"
	"path"
	"strings"
)

// ErrRequestDenied: the request matches one of its rule's deny entries (a
// method and path the credential must never be used for, such as an endpoint
// that mints new credentials); the proxy answers 403 and injects nothing.
var ErrRequestDenied = errors.New("request denied by the rule's deny list")

const maxDeny = 64

// denyEntry is one compiled `deny` item: a method ("" = any) and a path
// prefix that matches at segment boundaries.
type denyEntry struct {
	method string
	prefix string
}

// parseDeny reads "[METHOD ]/path/prefix". METHOD is an HTTP method token or
// "*"; the path must be absolute and clean.
func parseDeny(s string) (denyEntry, error) {
	f := strings.Fields(s)
	var e denyEntry
	switch len(f) {
	case 1:
		e.prefix = f[0]
	case 2:
		e.method, e.prefix = strings.ToUpper(f[0]), f[1]
		if e.method == "*" {
			e.method = ""
		}
		for _, r := range e.method {
			if r < 'A' || r > 'Z' {
				return e, fmt.Errorf("%q: method %q is not an HTTP method; expected e.g. \"POST /v1/keys\"", s, f[0])
			}
		}
	default:
		return e, fmt.Errorf("%q: expected \"[METHOD] /path/prefix\", e.g. \"POST /v1/keys\"", s)
	}
	if !strings.HasPrefix(e.prefix, "/") || path.Clean(e.prefix) != strings.TrimSuffix(e.prefix, "/") && e.prefix != "/" {
		return e, fmt.Errorf("%q: path %q must be absolute and clean, e.g. /api/keys", s, e.prefix)
	}
	e.prefix = path.Clean(e.prefix)
	return e, nil
}

func compileDeny(list []string) []denyEntry {
	out := make([]denyEntry, 0, len(list))
	for _, s := range list {
		if e, err := parseDeny(s); err == nil { // validated by ValidateRule
			out = append(out, e)
		}
	}
	return out
}

func validateDeny(list []string) error {
	if len(list) > maxDeny {
		return fmt.Errorf("deny: %d entries, at most %d", len(list), maxDeny)
	}
	for i, s := range list {
		if _, err := parseDeny(s); err != nil {
			return fmt.Errorf("deny[%d]: %w", i, err)
		}
	}
	return nil
}

// denied reports the deny entry req matches. The path is compared cleaned
// and case-sensitively, both as decoded and as sent, so "//a/../keys" or a
// percent-encoded slash cannot step around an entry.
func denied(entries []denyEntry, req *http.Request) (string, bool) {
	if len(entries) == 0 || req.URL == nil {
		return "", false
	}
	candidates := []string{cleanPath(req.URL.Path), cleanPath(req.URL.EscapedPath())}
	for _, e := range entries {
		if e.method != "" && e.method != req.Method {
			continue
		}
		for _, p := range candidates {
			if e.prefix == "/" || p == e.prefix || strings.HasPrefix(p, e.prefix+"/") {
				return strings.TrimSpace(e.method + " " + e.prefix), true
			}
		}
	}
	return "", false
}

func cleanPath(p string) string {
	if p == "" {
		return "/"
	}
	return path.Clean("/" + p)
}
