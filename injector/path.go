package injector

import (
	"net/http"
	"slices"
	"strings"
)

// Request paths are matched against deny and allow entries in every form an
// upstream might read them in, because a proxy that reads a path one way and
// a server that reads it another is how deny lists are stepped around.

// requestTarget is the path as it goes upstream: the opaque target or the
// escaped path (what URL.RequestURI writes).
func requestTarget(req *http.Request) string {
	if req.URL.Opaque != "" {
		return req.URL.Opaque
	}
	return req.URL.EscapedPath()
}

// pathViews returns the normalized readings of target, using buf for
// storage: as sent; percent-decoded once (an encoded slash or dot is then
// one); decoded until nothing more decodes (servers that decode twice);
// and decoded once, cut at the first ';' or NUL (servers that drop what
// follows). Duplicates are left out. A target already in normal form is its
// only view, and costs no allocation.
func pathViews(target string, buf *[4]string) []string {
	if strings.IndexByte(target, '%') < 0 && isNormalPath(target) {
		buf[0] = target
		return buf[:1]
	}
	once := unescapeOnce(target)
	cut := once
	if i := strings.IndexAny(cut, ";\x00"); i >= 0 {
		cut = cut[:i]
	}
	views := buf[:0]
	for _, v := range [...]string{target, once, unescapeAll(once), cut} {
		if v = normalizePath(v); !slices.Contains(views, v) {
			views = append(views, v)
		}
	}
	return views
}

// normalizePath maps a path to the form entries are matched against: '\'
// read as '/' (as IIS and some frameworks do), each segment cut at ';' or
// NUL (path parameters, C strings), empty and "." segments dropped, ".."
// resolved without climbing above the root, no trailing slash. It does not
// decode and does not change case (matching ignores case). It is
// idempotent, and returns p itself when p is already normal.
func normalizePath(p string) string {
	if isNormalPath(p) {
		return p
	}
	segs := make([]string, 0, 8)
	for seg := range strings.FieldsFuncSeq(p, func(r rune) bool { return r == '/' || r == '\\' }) {
		if i := strings.IndexAny(seg, ";\x00"); i >= 0 {
			seg = seg[:i]
		}
		switch seg {
		case "", ".":
		case "..":
			if len(segs) > 0 {
				segs = segs[:len(segs)-1]
			}
		default:
			segs = append(segs, seg)
		}
	}
	return "/" + strings.Join(segs, "/")
}

// isNormalPath reports whether normalizePath would return p unchanged:
// absolute, no '\', ';' or NUL, no empty, "." or ".." segment, and no
// trailing slash except for "/" itself.
func isNormalPath(p string) bool {
	if p == "/" {
		return true
	}
	if len(p) < 2 || p[0] != '/' || p[len(p)-1] == '/' || strings.ContainsAny(p, "\\;\x00") {
		return false
	}
	for seg := range strings.SplitSeq(p[1:], "/") {
		if seg == "" || seg == "." || seg == ".." {
			return false
		}
	}
	return true
}

// unescapeOnce decodes every valid %XX in s once; anything else, including
// an invalid escape, stays as it is.
func unescapeOnce(s string) string {
	i := strings.IndexByte(s, '%')
	if i < 0 {
		return s
	}
	b := make([]byte, 0, len(s))
	b = append(b, s[:i]...)
	for ; i < len(s); i++ {
		if s[i] == '%' && i+2 < len(s) && isHex(s[i+1]) && isHex(s[i+2]) {
			b = append(b, unhex(s[i+1])<<4|unhex(s[i+2]))
			i += 2
			continue
		}
		b = append(b, s[i])
	}
	return string(b)
}

// maxUnescapeRounds bounds unescapeAll: each round at least shortens the
// string, but a crafted "%25252525…" would otherwise take one per layer.
const maxUnescapeRounds = 8

// unescapeAll decodes s until a round changes nothing (or
// maxUnescapeRounds rounds).
func unescapeAll(s string) string {
	for range maxUnescapeRounds {
		d := unescapeOnce(s)
		if d == s {
			return s
		}
		s = d
	}
	return s
}

func isHex(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'
}

func unhex(c byte) byte {
	switch {
	case c >= '0' && c <= '9':
		return c - '0'
	case c >= 'a' && c <= 'f':
		return c - 'a' + 10
	}
	return c - 'A' + 10
}
