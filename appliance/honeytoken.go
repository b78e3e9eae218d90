package appliance

import (
	"context"
	"log/slog"
	"net/netip"
	"strings"
	"sync"

	"github.com/clauderon/clauderond/injector"
)

// Per-container placeholders (honeytokens): every container clauderond
// creates or prepares holds placeholders of its own (appliance/session,
// placeholder.go). One showing up where it does not belong means a
// placeholder was copied out of its container: clauderond looks for them
//
//   - in the credential headers the injector strips (it reports the
//     suffixes it saw in injector.Applied.Placeholders; a placeholder-shaped
//     value clauderond never issued is reported as "unknown"),
//   - in DNS query names (dnsredir events) and in TLS server names
//     (tlsmitm events, passthrough included): any run of hex digits that
//     holds a suffix clauderond issued,
//
// and when the suffix belongs to another container than the sender, the
// audit line gets placeholder_from (the container, or session, it was
// handed to), clauderon_placeholder_mismatch_total{seen_in} counts it, and
// the log warns once per (sender, owner) pair. Request bodies are not
// searched: that would mean buffering every body. Nothing is refused:
// the sender gets its own profile's credential either way, the line is the
// evidence.

// placeholderTag separates the injector's rule from the suffixes it saw in
// the rule string injectorAdapter.Apply hands to tlsmitm; fromTLS cuts it
// off (the same path "would-deny:" takes). A rule name never holds a NUL.
const placeholderTag = "\x00placeholders="

// Where a foreign placeholder was seen (the metric's seen_in label).
const (
	seenInHeader = "header"
	seenInSNI    = "sni"
	seenInDNS    = "dns"
)

// maxWarnedPairs bounds the (sender, owner) pairs remembered for warn-once;
// past it the set starts over (a pair may then be logged again).
const maxWarnedPairs = 4096

// maxNameCandidates bounds the suffix lookups for one name.
const maxNameCandidates = 64

// placeholderWatch resolves per-container placeholder suffixes to the
// container they were handed to and reports those seen elsewhere.
type placeholderWatch struct {
	records *containerRecords
	table   identitySource // names DNS senders by address; may be nil
	log     *slog.Logger

	mu     sync.Mutex
	warned map[[2]string]bool
}

func newPlaceholderWatch(records *containerRecords, table identitySource, log *slog.Logger) *placeholderWatch {
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &placeholderWatch{records: records, table: table, log: log.With("component", "honeytoken"), warned: map[[2]string]bool{}}
}

// foreign returns placeholder_from for the suffixes seen from a sender
// (container ID and name, else its source address): the owner of the first
// suffix that is not the sender's own; "" when there is none.
// unknownToo reports a suffix clauderond never issued as "unknown" (for a
// placeholder-shaped header value; a name's hex runs are only candidates).
func (w *placeholderWatch) foreign(senderID, senderName string, src netip.Addr, seenIn string, suffixes []string, unknownToo bool) string {
	if w == nil || len(suffixes) == 0 || w.records == nil {
		return ""
	}
	m := w.records.m.Load()
	if m == nil {
		return "" // no session manager: no per-container placeholders issued
	}
	if senderID == "" && src.IsValid() && w.table != nil {
		if c, ok := w.table.Lookup(src); ok {
			senderID, senderName = c.ID, c.Name
		}
	}
	own, _ := m.Vouch(senderID)
	for _, sfx := range suffixes {
		if own.Placeholder != "" && sfx == own.Placeholder {
			continue
		}
		o, ok := m.PlaceholderOwner(context.Background(), sfx)
		if ok && senderID != "" && o.ContainerID == senderID {
			continue
		}
		if !ok && !unknownToo {
			continue
		}
		from := "unknown"
		if ok {
			from = o.Display()
		}
		w.warnOnce(senderID, senderName, src, seenIn, sfx, from, o.Owner, o.Session, o.Profile)
		return from
	}
	return ""
}

func (w *placeholderWatch) warnOnce(senderID, senderName string, src netip.Addr, seenIn, sfx, from, fromOwner, fromSession, fromProfile string) {
	sender := senderID
	if sender == "" {
		sender = senderName
	}
	if sender == "" && src.IsValid() {
		sender = src.String()
	}
	k := [2]string{sender, from}
	w.mu.Lock()
	seen := w.warned[k]
	if !seen {
		if len(w.warned) >= maxWarnedPairs {
			clear(w.warned)
		}
		w.warned[k] = true
	}
	w.mu.Unlock()
	if seen {
		return
	}
	w.log.Warn("a container used a placeholder clauderond handed to another container; it was copied out of that container",
		"container", senderName, "container_id", senderID, "src_ip", addrString(src), "seen_in", seenIn,
		"placeholder_from", from, "from_owner", fromOwner, "from_session", fromSession, "from_profile", fromProfile,
		"suffix", sfx)
}

func addrString(a netip.Addr) string {
	if !a.IsValid() {
		return ""
	}
	return a.String()
}

// suffixCandidates returns every PlaceholderSuffixLen-long window of the
// runs of hex digits in a name (case-folded), at most maxNameCandidates:
// where a placeholder suffix could hide in a DNS or server name.
func suffixCandidates(name string) []string {
	const n = injector.PlaceholderSuffixLen
	var out []string
	run := 0
	for i := 0; i <= len(name); i++ {
		if i < len(name) && isHexDigit(name[i]) {
			run++
			continue
		}
		for start := i - run; run >= n && start+n <= i; start++ {
			if len(out) == maxNameCandidates {
				return out
			}
			out = append(out, strings.ToLower(name[start:start+n]))
		}
		run = 0
	}
	return out
}

func isHexDigit(c byte) bool {
	return c >= '0' && c <= '9' || c >= 'a' && c <= 'f' || c >= 'A' && c <= 'F'
}

// tagPlaceholders appends the suffixes the injector saw to the rule string
// handed to tlsmitm (see placeholderTag).
func tagPlaceholders(rule string, suffixes []string) string {
	if len(suffixes) == 0 {
		return rule
	}
	return rule + placeholderTag + strings.Join(suffixes, ",")
}

// cutPlaceholders splits a tagged rule string.
func cutPlaceholders(rule string) (string, []string) {
	r, tag, ok := strings.Cut(rule, placeholderTag)
	if !ok {
		return rule, nil
	}
	var out []string
	for _, s := range strings.Split(tag, ",") {
		if injector.IsPlaceholderSuffix(s) {
			out = append(out, s)
		}
	}
	return r, out
}
