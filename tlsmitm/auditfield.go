package tlsmitm

import (
	"net/http"
	"strings"
)

// Limits on the audit fields a client controls (Path, Host, SNI, Method)
// and on Err, which can quote them.
const (
	maxAuditField = 512
	maxAuditErr   = 2048
	truncatedMark = "…[truncated]"
)

// boundEvent makes the client-controlled fields of ev bounded and
// printable before any Auditor sees them; Server.audit calls it for every
// Event.
func boundEvent(ev *Event) {
	ev.Path = auditField(ev.Path, maxAuditField)
	ev.Host = auditField(ev.Host, maxAuditField)
	ev.SNI = auditField(ev.SNI, maxAuditField)
	ev.Method = auditField(ev.Method, maxAuditField)
	ev.Err = auditField(ev.Err, maxAuditErr)
}

// auditField returns s cut to at most max bytes, with truncatedMark
// appended when it was cut, and with every byte outside printable ASCII
// written as \xNN. A field already short and printable is returned as it
// is, without allocating.
func auditField(s string, max int) string {
	if len(s) <= max && printableASCII(s) {
		return s
	}
	const hexDigits = "0123456789abcdef"
	var b strings.Builder
	b.Grow(min(len(s), max) + len(truncatedMark))
	for i := 0; i < len(s); i++ {
		c := s[i]
		n := 1
		if c < 0x20 || c > 0x7e {
			n = 4
		}
		if b.Len()+n > max {
			b.WriteString(truncatedMark)
			break
		}
		if n == 1 {
			b.WriteByte(c)
		} else {
			b.WriteString(`\x`)
			b.WriteByte(hexDigits[c>>4])
			b.WriteByte(hexDigits[c&0xf])
		}
	}
	return b.String()
}

func printableASCII(s string) bool {
	for i := 0; i < len(s); i++ {
		if c := s[i]; c < 0x20 || c > 0x7e {
			return false
		}
	}
	return true
}

// wirePath is the request path as the client sent it: percent-encoding
// kept, query and fragment cut (a query may hold secrets). It is the
// origin-form request-target (h2's :path), else the escaped URL path.
func wirePath(r *http.Request) string {
	p := r.RequestURI
	if !strings.HasPrefix(p, "/") {
		if r.URL == nil {
			return ""
		}
		return r.URL.EscapedPath()
	}
	if i := strings.IndexAny(p, "?#"); i >= 0 {
		p = p[:i]
	}
	return p
}
