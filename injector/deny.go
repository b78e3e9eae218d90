package injector

import (
	"errors"
	"fmt"
	"net/http"
	"path"
	"strings"
)

// ErrRequestDenied: the request is one its rule's credential must never be
// used for (it matches a deny entry, matches no allow entry, is a TRACE,
// TRACK or CONNECT, or carries a method or path override the upstream might
// act on); the proxy answers 403 and injects nothing.
var ErrRequestDenied = errors.New("request refused by the rule's deny list or allow list")

const maxPathList = 64

// pathEntry is one compiled `deny` or `allow` item: a method ("" = any) and
// the segments of a path prefix, where "*" matches any one segment. No
// segments is "/", which matches every path.
type pathEntry struct {
	method string
	segs   []string
	text   string // as configured, for error messages
}

// parsePathEntry reads "[METHOD ]/path/prefix". METHOD is an HTTP method
// token or "*"; the path must be absolute, clean and written decoded (no
// '%', ';' or '\'), and may use "*" as a whole segment.
func parsePathEntry(s string) (pathEntry, error) {
	f := strings.Fields(s)
	var e pathEntry
	var p string
	switch len(f) {
	case 1:
		p = f[0]
	case 2:
		e.method, p = strings.ToUpper(f[0]), f[1]
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
	if !strings.HasPrefix(p, "/") || path.Clean(p) != strings.TrimSuffix(p, "/") && p != "/" {
		return e, fmt.Errorf("%q: path %q must be absolute and clean, e.g. /api/keys", s, p)
	}
	if i := strings.IndexFunc(p, func(r rune) bool { return r <= ' ' || r == 0x7f || strings.ContainsRune(`%;\`, r) }); i >= 0 {
		return e, fmt.Errorf("%q: path %q has %q; write the path decoded, without parameters", s, p, p[i])
	}
	for seg := range strings.SplitSeq(strings.Trim(path.Clean(p), "/"), "/") {
		if seg == "" {
			continue
		}
		if seg != "*" && strings.Contains(seg, "*") {
			return e, fmt.Errorf("%q: '*' must be a whole segment, e.g. /repos/*/*/keys", s)
		}
		e.segs = append(e.segs, seg)
	}
	e.text = strings.TrimSpace(e.method + " " + path.Clean(p))
	return e, nil
}

func compilePathList(list []string) []pathEntry {
	out := make([]pathEntry, 0, len(list))
	for _, s := range list {
		if e, err := parsePathEntry(s); err == nil { // validated by ValidateRule
			out = append(out, e)
		}
	}
	return out
}

func validatePathList(key string, list []string) error {
	if len(list) > maxPathList {
		return fmt.Errorf("%s: %d entries, at most %d", key, len(list), maxPathList)
	}
	for i, s := range list {
		if _, err := parsePathEntry(s); err != nil {
			return fmt.Errorf("%s[%d]: %w", key, i, err)
		}
	}
	return nil
}

// matches reports whether the entry covers method and the normalized path
// p (see normalizePath). The comparison ignores case. With ext, the
// entry's last segment also matches a path segment that continues with '.'
// ("keys" matches "keys.json"), as frameworks that route by extension read
// it.
func (e *pathEntry) matches(method, p string, ext bool) bool {
	if e.method != "" && e.method != method {
		return false
	}
	rest := p
	for i, want := range e.segs {
		if len(rest) < 2 { // "" or "/": no segment left
			return false
		}
		seg := rest[1:]
		rest = ""
		if j := strings.IndexByte(seg, '/'); j >= 0 {
			seg, rest = seg[:j], seg[j:]
		}
		switch {
		case want == "*", strings.EqualFold(seg, want):
		case ext && i == len(e.segs)-1 && len(seg) > len(want) && seg[len(want)] == '.' && strings.EqualFold(seg[:len(want)], want):
		default:
			return false
		}
	}
	return true
}

// hasPathPolicy reports whether the rule restricts paths at all; requests
// to rules without lists skip every check below.
func (cr *compiledRule) hasPathPolicy() bool {
	return len(cr.deny) > 0 || len(cr.allow) > 0 || cr.push != nil
}

// checkRequestPolicy refuses what the rule's credential must never be used
// for: TRACE, TRACK and CONNECT on any rule (an upstream echoing the request
// would hand the credential back); and, on rules with a deny or allow list,
// method and path overrides, a path that matches a deny entry in any of the
// ways an upstream may read it, or one that does not match an allow entry
// in all of them.
func checkRequestPolicy(cr *compiledRule, req *http.Request) error {
	method := strings.ToUpper(req.Method)
	switch method {
	case "TRACE", "TRACK", http.MethodConnect:
		return fmt.Errorf("rule %s: method %s is never sent with a credential: %w", cr.name, method, ErrRequestDenied)
	}
	if !cr.hasPathPolicy() {
		return nil
	}
	if h, ok := overrideHeader(req.Header); ok {
		return fmt.Errorf("rule %s: header %s could change the method or path the upstream acts on: %w", cr.name, h, ErrRequestDenied)
	}
	if req.URL == nil {
		return fmt.Errorf("rule %s: request without a target: %w", cr.name, ErrRequestDenied)
	}
	if q, ok := overrideParam(req.URL.RawQuery); ok {
		return fmt.Errorf("rule %s: query parameter %s could change the method the upstream acts on: %w", cr.name, q, ErrRequestDenied)
	}
	var buf [4]string
	views := pathViews(requestTarget(req), &buf)
	for i := range cr.deny {
		for _, v := range views {
			if cr.deny[i].matches(method, v, true) {
				return fmt.Errorf("rule %s: %s matches deny entry %q: %w", cr.name, method, cr.deny[i].text, ErrRequestDenied)
			}
		}
	}
	if len(cr.allow) > 0 && !allowedAll(cr.allow, method, views) {
		return fmt.Errorf("rule %s: %s matches no allow entry: %w", cr.name, method, ErrRequestDenied)
	}
	return checkPush(cr, views, req.URL.RawQuery)
}

// allowedAll reports whether every view of the path matches some allow
// entry (an upstream may act on any of them).
func allowedAll(allow []pathEntry, method string, views []string) bool {
	for _, v := range views {
		ok := false
		for i := range allow {
			if allow[i].matches(method, v, false) {
				ok = true
				break
			}
		}
		if !ok {
			return false
		}
	}
	return true
}

// overrideNames are headers (and query parameters) that frameworks and
// proxies read as the "real" method or path of a request. They are
// compared ignoring case, with '_' and '-' alike (CGI and Rack turn both
// into '_').
var overrideNames = []string{
	"x-http-method-override", "x-http-method", "x-method-override", "x-original-method",
	"x-original-url", "x-rewrite-url",
}

func overrideHeader(h http.Header) (string, bool) {
	for k := range h {
		if len(k) < len("x-http-method") || k[0] != 'X' && k[0] != 'x' {
			continue
		}
		for _, o := range overrideNames {
			if equalFoldDash(k, o) {
				return o, true
			}
		}
	}
	return "", false
}

// overrideParam looks for a `_method` query parameter (Rails, Laravel,
// Express's method-override) or one named like an override header. Keys
// are split at '&' and ';' (servers differ) and decoded as far as they
// decode.
func overrideParam(rawQuery string) (string, bool) {
	for rawQuery != "" {
		var kv string
		if i := strings.IndexAny(rawQuery, "&;"); i >= 0 {
			kv, rawQuery = rawQuery[:i], rawQuery[i+1:]
		} else {
			kv, rawQuery = rawQuery, ""
		}
		k, _, _ := strings.Cut(kv, "=")
		k = strings.TrimSpace(unescapeAll(strings.ReplaceAll(k, "+", " ")))
		if strings.EqualFold(k, "_method") {
			return "_method", true
		}
		for _, o := range overrideNames[:4] {
			if equalFoldDash(k, o) {
				return o, true
			}
		}
	}
	return "", false
}

// equalFoldDash compares ASCII case-insensitively with '_' equal to '-'.
func equalFoldDash(a, b string) bool {
	if len(a) != len(b) {
		return false
	}
	for i := 0; i < len(a); i++ {
		if foldDash(a[i]) != foldDash(b[i]) {
			return false
		}
	}
	return true
}

func foldDash(c byte) byte {
	switch {
	case c >= 'A' && c <= 'Z':
		return c + 'a' - 'A'
	case c == '_':
		return '-'
	}
	return c
}
