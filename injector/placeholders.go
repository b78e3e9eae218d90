package injector

import (
	"encoding/base64"
	"net/http"
	"slices"
	"strings"
)

// hasClientCredential reports whether any of the headers carries a value
// that is neither empty nor a placeholder.
func hasClientCredential(h http.Header, keys []string) bool {
	for _, k := range keys {
		for _, v := range h[k] {
			if !isPlaceholderHeader(v) {
				return true
			}
		}
	}
	return false
}

// removePlaceholders deletes the placeholder values among keys, keeping
// real ones.
func removePlaceholders(h http.Header, keys []string) {
	for _, k := range keys {
		vs := h[k]
		kept := vs[:0]
		for _, v := range vs {
			if !isPlaceholderHeader(v) {
				kept = append(kept, v)
			}
		}
		if len(kept) == 0 {
			delete(h, k)
		} else {
			h[k] = kept
		}
	}
}

// isPlaceholderHeader reports whether a header value carries no real
// credential: empty, a placeholder, "<scheme> <placeholder>", or Basic
// credentials whose user or password is a placeholder.
func isPlaceholderHeader(v string) bool {
	_, ok := headerPlaceholder(v)
	return ok
}

// headerPlaceholder is isPlaceholderHeader that also returns the bare
// placeholder value found ("" when the header carries nothing at all).
func headerPlaceholder(v string) (string, bool) {
	v = strings.TrimSpace(v)
	if v == "" {
		return "", true
	}
	scheme, rest, ok := strings.Cut(v, " ")
	if !ok {
		if IsPlaceholder(v) {
			return v, true
		}
		// A bare scheme ("Bearer" with its token missing) carries nothing.
		return "", isAuthScheme(v)
	}
	rest = strings.TrimSpace(rest)
	switch {
	case rest == "":
		return "", true
	case IsPlaceholder(rest):
		return rest, true
	case IsPlaceholder(v): // the marker anywhere
		return v, true
	}
	if !strings.EqualFold(scheme, "basic") {
		return "", false
	}
	var buf [256]byte
	if base64.StdEncoding.DecodedLen(len(rest)) > len(buf) {
		return "", false
	}
	n, err := base64.StdEncoding.Decode(buf[:], []byte(rest))
	if err != nil {
		return "", false
	}
	user, pass, _ := strings.Cut(string(buf[:n]), ":")
	switch {
	case IsPlaceholder(pass):
		return pass, true
	case pass == "" && IsPlaceholder(user):
		return user, true
	}
	return "", false
}

// placeholderSuffixes returns the per-container suffixes of the
// placeholders among keys' values (see Applied.Placeholders).
func placeholderSuffixes(h http.Header, keys []string) []string {
	var out []string
	for _, k := range keys {
		for _, v := range h[k] {
			p, ok := headerPlaceholder(v)
			if !ok {
				continue
			}
			if sfx, ok := PlaceholderSuffix(p); ok && !slices.Contains(out, sfx) {
				out = append(out, sfx)
			}
		}
	}
	return out
}

func isAuthScheme(v string) bool {
	return strings.EqualFold(v, "bearer") || strings.EqualFold(v, "basic") || strings.EqualFold(v, "token")
}
