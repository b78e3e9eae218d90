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
//   - It never drops a record it was handed before Close (unless its
//     source is over budget, below): Write blocks its caller for one
//     write(2) of the line rather than shedding load. A
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
//   - No tenant can fill the disk and rotate older evidence away: every
//     string field is cut to MaxFieldBytes (Error to MaxErrorBytes) after
//     scrubbing, marked "…[truncated]", and each source (container ID,
//     else source IP) has a line budget (Options.RatePerSecond, Burst).
//     Lines past it are not written; the source gets one
//     DecisionAuditDropped line per second with their count, and
//     Stats.RateLimited counts them, so nothing disappears silently. The
//     writer's own lines and lines without a source are never limited.
//   - It is tamper-evident when given a Key (LoadOrCreateKey; the
//     appliance always does): each line ends in
//     "chain": hex HMAC-SHA256(key, previous MAC || the line without its
//     chain member). The chain runs across rotated files; a
//     DecisionChainStart line opens every file and every start, naming
//     what it continues from, so a chain that restarts (a file removed or
//     moved) is visible. Writer.Verify reports the first line altered,
//     removed, inserted or reordered, and a tail cut after the writer's
//     last line. It is evidence against whoever can write the files but
//     not read the key; root can read the key (forward the lines off the
//     host for that).
//   - No line can steer a terminal: besides encoding/json's escapes, DEL
//     and every non-printable non-ASCII rune (C1, bidi and other format
//     characters, U+2028/2029) are written as \uXXXX (SafeJSON).
//   - It does not decide what is audited or convert other packages' event
//     types: the appliance's adapters fill Records; this package imports
//     only the standard library.
package audit

import (
	"strings"
	"time"
	"unicode/utf8"
)

// Decisions written in Record.Decision.
const (
	DecisionIntercept   = "intercept"
	DecisionPassthrough = "passthrough"
	DecisionDeny        = "deny"
	DecisionWouldDeny   = "would-deny"
	DecisionDNSAllow    = "dns-allow"
	DecisionDNSDeny     = "dns-deny"
	// DecisionChainStart marks a line the writer adds itself where a chain
	// (re)starts: at Open, at the top of each rotated file, and after the
	// file was moved or removed. PrevFile and PrevChain say what it
	// continues from; Rule says why (ChainStart* constants).
	DecisionChainStart = "audit-chain-start"
	// DecisionAuditDropped is the summary line written in place of the
	// lines one source had over its rate budget; Dropped is their count.
	DecisionAuditDropped = "audit-dropped"
)

// Reasons written in Rule of a DecisionChainStart line.
const (
	ChainStartOpen     = "daemon-start" // the writer opened; continues from the last line on disk
	ChainStartRotation = "rotation"     // first line of a fresh file after rotation
	ChainStartMoved    = "file-moved"   // the file was moved or removed behind the writer
	ChainStartNew      = "new-chain"    // nothing to continue from (first start, or an unchained last line)
)

// Kinds written in Record.Kind.
const (
	KindHTTP = "http"  // one intercepted HTTP request
	KindConn = "conn"  // one connection (passthrough splice, or refused before HTTP)
	KindDNS  = "dns"   // one DNS query
	KindLog  = "audit" // a line of the audit log's own (chain start, drop summary)
)

// Record is one audit line. Fields without omitempty are always present
// (error is "" when there was none), as the operator contract requires.
type Record struct {
	TS          time.Time `json:"ts"`
	Container   string    `json:"container"`              // container name; "" when the source is unknown
	ContainerID string    `json:"container_id,omitempty"` // full Docker ID
	Profile     string    `json:"profile,omitempty"`      // credential profile in force
	Owner       string    `json:"owner,omitempty"`        // user who made the container through clauderond
	// Namespace, Pod and ServiceAccount name a Kubernetes pod (node mode).
	Namespace      string  `json:"namespace,omitempty"`
	Pod            string  `json:"pod,omitempty"`
	ServiceAccount string  `json:"service_account,omitempty"`
	Kind           string  `json:"kind,omitempty"`       // KindHTTP, KindConn, KindDNS
	SrcIP          string  `json:"src_ip"`               // container address (with port for connections)
	OrigDst        string  `json:"orig_dst,omitempty"`   // address the container dialled (SO_ORIGINAL_DST)
	SNI            string  `json:"sni"`                  // TLS server name
	Host           string  `json:"host"`                 // HTTP Host, or the DNS name queried
	Method         string  `json:"method"`               // HTTP method
	Path           string  `json:"path"`                 // HTTP path, without query unless Options.KeepQuery
	Status         int     `json:"status"`               // HTTP status sent to the container (0 for connections)
	Decision       string  `json:"decision"`             // Decision* constants
	Rule           string  `json:"rule"`                 // rule or policy that decided
	AuthInjected   bool    `json:"auth_injected"`        // a real credential was put on the request
	DurationMS     float64 `json:"duration_ms"`          // request or connection duration
	BytesIn        int64   `json:"bytes_in,omitempty"`   // bytes from the container
	BytesOut       int64   `json:"bytes_out,omitempty"`  // bytes to the container
	QType          string  `json:"qtype,omitempty"`      // DNS query type ("A", "AAAA")
	RCode          string  `json:"rcode,omitempty"`      // DNS response code ("NOERROR", "NXDOMAIN")
	Error          string  `json:"error"`                // what went wrong; "" when nothing did
	Dropped        uint64  `json:"dropped,omitempty"`    // DecisionAuditDropped: lines not written
	PrevFile       string  `json:"prev_file,omitempty"`  // DecisionChainStart: file the chain continues from
	PrevChain      string  `json:"prev_chain,omitempty"` // DecisionChainStart: the MAC it continues from ("" for a new chain)
	// PlaceholderFrom names the container (or session) another
	// container's per-container placeholder was issued to, when this
	// line's request, server name or DNS name carried it; "unknown" for a
	// placeholder-shaped value clauderond never issued.
	PlaceholderFrom string `json:"placeholder_from,omitempty"`
	// Chain is the line's chain MAC, hex HMAC-SHA256(key, previous line's
	// MAC || this line without its chain member); always the line's last
	// member, set by the writer (ignored in Records handed to Write).
	Chain string `json:"chain,omitempty"`
}

// Bounds on what one line may hold, whatever the producer sent: a tenant
// must not be able to fill the disk (and rotate older evidence away) with
// a few huge requests.
const (
	MaxFieldBytes = 1 << 10 // every string field but Error
	MaxErrorBytes = 2 << 10 // Error
	// maxScrubInput bounds the text the scrubber runs over; the final cut
	// to MaxFieldBytes happens after scrubbing, so a secret straddling a
	// cut is never written half-redacted.
	maxScrubInput = 64 << 10
	truncMark     = "…[truncated]"
)

// scrubbed returns r with scrub applied to every string field, each field
// cut to its bound (after scrubbing), the time in UTC and, unless
// keepQuery, the query string cut from Path. Chain is cleared: only the
// writer sets it.
func (r Record) scrubbed(scrub func(string) string, keepQuery bool) Record {
	if !keepQuery {
		if i := strings.IndexByte(r.Path, '?'); i >= 0 {
			r.Path = r.Path[:i]
		}
	}
	r.TS = r.TS.UTC()
	r.Chain = ""
	for _, p := range []*string{&r.Container, &r.ContainerID, &r.Profile, &r.Owner, &r.Namespace, &r.Pod, &r.ServiceAccount, &r.Kind, &r.SrcIP, &r.OrigDst, &r.SNI,
		&r.Host, &r.Method, &r.Path, &r.Decision, &r.Rule, &r.QType, &r.RCode, &r.PrevFile, &r.PrevChain, &r.PlaceholderFrom, &r.Error} {
		if *p == "" {
			continue
		}
		limit := MaxFieldBytes
		if p == &r.Error {
			limit = MaxErrorBytes
		}
		if scrub != nil {
			*p = scrub(truncate(*p, maxScrubInput))
		}
		*p = truncate(*p, limit)
	}
	return r
}

// truncate cuts s to at most limit bytes on a rune boundary, ending in
// truncMark when it cut.
func truncate(s string, limit int) string {
	if len(s) <= limit {
		return s
	}
	cut := limit - len(truncMark)
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + truncMark
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
	// Owner, if set, matches Record.Owner exactly: a tenant's view.
	Owner string
}

// Match reports whether r passes the filter.
func (f Filter) Match(r Record) bool {
	if f.Owner != "" && r.Owner != f.Owner {
		return false
	}
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
