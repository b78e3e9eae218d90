// Package audit writes and reads audit.jsonl: one JSON object per line for
// every request the proxy handled, every connection it refused and every
// DNS decision.
//
// It owns the file format (Record), the writer (append-only, 0600,
// size-based rotation to audit.jsonl.1 … .N by atomic rename, fsync on
// rotation and Close) and the readers behind `clauderon audit` (Tail,
// Follow).
//
// What it promises and refuses:
//
//   - It never drops a record it was handed before Close: Write blocks its
//     caller for one write(2) of the line rather than shedding load. A
//     record that cannot be written even after reopening the file is
//     retried from memory and, past a bound, counted in Stats.Failed and
//     logged.
//   - A record is in the kernel when Write returns, so a daemon killed with
//     SIGKILL a moment after it recorded a request loses no line (only a
//     power cut can, before the next fsync). Why write-through rather than
//     a buffer flushed on a timer: the audit is the evidence of what a
//     container did, and the moment a daemon is most likely to be killed
//     is right after it answered something; a write(2) per request costs
//     about 2 µs. The terminator records an exchange when it ends, which is
//     just after the client read the last byte of the answer: a reader that
//     has just received a response waits (bounded) for its line rather than
//     reading the file once.
//   - It never writes a credential on purpose, and defends against writing
//     one by accident: Options.Scrub (the appliance passes the credential
//     store's redactor) runs over every string field, and query strings are
//     dropped from paths unless Options.KeepQuery is set.
//   - It never writes or reads through something planted at its paths (the
//     daemon runs as root in a state dir another user may once have owned):
//     files are opened with O_NOFOLLOW, the writer refuses anything but a
//     regular, singly linked file of the daemon's own user, and rotation
//     only renames and removes names, never following them.
//   - It does not decide what is audited or convert other packages' event
//     types: the appliance's adapters fill Records; this package imports
//     only the standard library.
package audit

import (
	"strings"
	"time"
)

// Decisions written in Record.Decision.
const (
	DecisionIntercept   = "intercept"
	DecisionPassthrough = "passthrough"
	DecisionDeny        = "deny"
	DecisionWouldDeny   = "would-deny"
	DecisionDNSAllow    = "dns-allow"
	DecisionDNSDeny     = "dns-deny"
)

// Kinds written in Record.Kind.
const (
	KindHTTP = "http" // one intercepted HTTP request
	KindConn = "conn" // one connection (passthrough splice, or refused before HTTP)
	KindDNS  = "dns"  // one DNS query
)

// Record is one audit line. Fields without omitempty are always present
// (error is "" when there was none), as the operator contract requires.
type Record struct {
	TS           time.Time `json:"ts"`
	Container    string    `json:"container"`              // container name; "" when the source is unknown
	ContainerID  string    `json:"container_id,omitempty"` // full Docker ID
	Profile      string    `json:"profile,omitempty"`      // credential profile in force
	Kind         string    `json:"kind,omitempty"`         // KindHTTP, KindConn, KindDNS
	SrcIP        string    `json:"src_ip"`                 // container address (with port for connections)
	OrigDst      string    `json:"orig_dst,omitempty"`     // address the container dialled (SO_ORIGINAL_DST)
	SNI          string    `json:"sni"`                    // TLS server name
	Host         string    `json:"host"`                   // HTTP Host, or the DNS name queried
	Method       string    `json:"method"`                 // HTTP method
	Path         string    `json:"path"`                   // HTTP path, without query unless Options.KeepQuery
	Status       int       `json:"status"`                 // HTTP status sent to the container (0 for connections)
	Decision     string    `json:"decision"`               // Decision* constants
	Rule         string    `json:"rule"`                   // rule or policy that decided
	AuthInjected bool      `json:"auth_injected"`          // a real credential was put on the request
	DurationMS   float64   `json:"duration_ms"`            // request or connection duration
	BytesIn      int64     `json:"bytes_in,omitempty"`     // bytes from the container
	BytesOut     int64     `json:"bytes_out,omitempty"`    // bytes to the container
	QType        string    `json:"qtype,omitempty"`        // DNS query type ("A", "AAAA")
	RCode        string    `json:"rcode,omitempty"`        // DNS response code ("NOERROR", "NXDOMAIN")
	Error        string    `json:"error"`                  // what went wrong; "" when nothing did
}

// scrubbed returns r with scrub applied to every string field, the time in
// UTC and, unless keepQuery, the query string cut from Path.
func (r Record) scrubbed(scrub func(string) string, keepQuery bool) Record {
	if !keepQuery {
		if i := strings.IndexByte(r.Path, '?'); i >= 0 {
			r.Path = r.Path[:i]
		}
	}
	r.TS = r.TS.UTC()
	if scrub == nil {
		return r
	}
	for _, p := range []*string{&r.Container, &r.ContainerID, &r.Profile, &r.Kind, &r.SrcIP, &r.OrigDst, &r.SNI,
		&r.Host, &r.Method, &r.Path, &r.Decision, &r.Rule, &r.QType, &r.RCode, &r.Error} {
		if *p != "" {
			*p = scrub(*p)
		}
	}
	return r
}

// Filter selects records for Tail and Follow. Empty fields match anything.
type Filter struct {
	// Container matches the container name exactly, or a prefix (at least
	// 4 characters) of its ID.
	Container string
	// Host matches Host or SNI, case-insensitively; "*.example.com"
	// matches any name under example.com.
	Host string
	// Decision matches Record.Decision exactly.
	Decision string
}

// Match reports whether r passes the filter.
func (f Filter) Match(r Record) bool {
	if f.Container != "" && r.Container != f.Container &&
		!(len(f.Container) >= 4 && strings.HasPrefix(r.ContainerID, f.Container)) {
		return false
	}
	if f.Decision != "" && r.Decision != f.Decision {
		return false
	}
	if f.Host != "" && !hostMatch(f.Host, r.Host) && !hostMatch(f.Host, r.SNI) {
		return false
	}
	return true
}

func hostMatch(pattern, host string) bool {
	if host == "" {
		return false
	}
	pattern, host = strings.ToLower(strings.TrimSuffix(pattern, ".")), strings.ToLower(strings.TrimSuffix(host, "."))
	if h, _, ok := strings.Cut(host, ":"); ok && !strings.Contains(h, "[") {
		host = h
	}
	if suffix, ok := strings.CutPrefix(pattern, "*"); ok {
		return len(host) > len(suffix) && strings.HasSuffix(host, suffix)
	}
	return pattern == host
}
