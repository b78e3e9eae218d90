package injector

import (
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/textproto"
	"slices"
	"strings"
	"sync"
)

// Errors Apply returns, wrapped with context (rule, credential name and
// source, never a value). Match them with errors.Is.
var (
	// ErrNoRule: no rule names this host; nothing was injected.
	ErrNoRule = errors.New("no credential rule for host")
	// ErrHostMismatch: the request's Host header names another host than
	// the one it was routed to (SNI); the proxy answers 421.
	ErrHostMismatch = errors.New("request host does not match the routed host")
	// ErrNoCredential: the rule's credential is not configured for the
	// profile. Placeholders have been stripped; the request may be sent on
	// without a credential.
	ErrNoCredential = errors.New("credential not configured")
	// ErrMalformedCredential: the configured value cannot work (whitespace,
	// control characters, a placeholder, or the wrong kind for the rule's
	// format). Placeholders have been stripped; nothing was injected.
	ErrMalformedCredential = errors.New("malformed credential")
	// ErrClientCredentialRejected: the client sent a credential of its own
	// and the rule says reject; the proxy answers 403.
	ErrClientCredentialRejected = errors.New("client sent its own credential, which this rule rejects")
)

// Applied says what Apply did, for the audit line.
type Applied struct {
	Rule       string // Rule.Name of the matching rule; empty on ErrNoRule
	Credential string // credential name the rule uses (never its value)
	Injected   bool   // a real credential was written to the request
	Kept       bool   // the client's own credential was left in place (on_client_credential: keep)
	// Placeholders are the suffixes (PlaceholderSuffix) of the
	// per-container placeholders found in the headers the rule writes or
	// strips, deduplicated, in the order seen: who the placeholders were
	// handed to is the caller's to check. Placeholders are not secrets;
	// nothing else of a header value is reported.
	Placeholders []string
}

// Injector applies rules to requests. It is immutable and safe for
// concurrent use; build a new one to change rules (the Store reloads on
// its own).
type Injector struct {
	exact  map[string]*compiledRule
	wild   []*compiledRule // longest suffix first
	rules  []Rule
	store  *Store
	logger *slog.Logger

	mu      sync.Mutex
	missing map[[2]string]bool // (profile, credential) already reported missing
}

type compiledRule struct {
	rule     Rule
	name     string
	header   string   // canonical header written (unused for anthropic)
	strip    []string // canonical headers stripped, including every header the rule writes
	format   string
	onClient string
	tmplPre  string
	tmplPost string
	deny     []pathEntry
	allow    []pathEntry
	push     *pushScope // nil: pushes not limited
}

const (
	hdrAuthorization = "Authorization"
	hdrXAPIKey       = "X-Api-Key"
)

// New builds an Injector for exactly rules (pass MergeRules(DefaultRules(),
// configured) for the usual set) reading credentials from store. The store
// learns the rules' credential names and reloads if one is new.
func New(rules []Rule, store *Store, logger *slog.Logger) (*Injector, error) {
	if store == nil {
		return nil, errors.New("injector: nil credential store")
	}
	if err := ValidateRules(rules); err != nil {
		return nil, fmt.Errorf("injector: %w", err)
	}
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	inj := &Injector{exact: map[string]*compiledRule{}, rules: slices.Clone(rules), store: store,
		logger: logger.With("component", "injector"), missing: map[[2]string]bool{}}
	names := make([]string, 0, len(rules))
	for _, r := range rules {
		cr := compile(r)
		if strings.HasPrefix(cr.name, "*.") {
			inj.wild = append(inj.wild, cr)
		} else {
			inj.exact[cr.name] = cr
		}
		names = append(names, r.Credential)
	}
	slices.SortStableFunc(inj.wild, func(a, b *compiledRule) int { return len(b.name) - len(a.name) })
	if err := store.want(names); err != nil {
		return nil, fmt.Errorf("injector: loading credentials: %w", err)
	}
	return inj, nil
}

func compile(r Rule) *compiledRule {
	cr := &compiledRule{rule: r, name: r.Name(), format: r.Format, onClient: r.OnClientCredential, deny: compilePathList(r.Deny), allow: compilePathList(r.Allow),
		push: compilePush(r.Push)}
	if cr.format == "" {
		cr.format = FormatBearer
	}
	if cr.onClient == "" {
		cr.onClient = OnClientCredentialReplace
	}
	cr.header = canonicalHeader(r.Header)
	if cr.header == "" {
		cr.header = hdrAuthorization
		if cr.format == FormatXAPIKey {
			cr.header = hdrXAPIKey
		}
	}
	written := []string{cr.header}
	if cr.format == FormatAnthropic {
		written = []string{hdrAuthorization, hdrXAPIKey}
	}
	for _, h := range append(written, r.Strip...) {
		if h = canonicalHeader(h); !slices.Contains(cr.strip, h) {
			cr.strip = append(cr.strip, h)
		}
	}
	if cr.format == FormatTemplate {
		cr.tmplPre, cr.tmplPost, _ = strings.Cut(r.Template, TemplatePlaceholder)
	}
	return cr
}

func canonicalHeader(h string) string { return textproto.CanonicalMIMEHeaderKey(h) }

// Rules returns a copy of the rules in force.
func (i *Injector) Rules() []Rule { return slices.Clone(i.rules) }

// Match reports the rule that intercepts host (SNI or Host header, port and
// trailing dot tolerated, case-insensitive): an exact rule first, else the
// wildcard with the longest suffix.
func (i *Injector) Match(host string) (Rule, bool) {
	cr := i.match(hostOnly(host))
	if cr == nil {
		return Rule{}, false
	}
	return cr.rule, true
}

func (i *Injector) match(h string) *compiledRule {
	if cr, ok := i.exact[h]; ok {
		return cr
	}
	for _, cr := range i.wild {
		if matchHost(cr.name, h) {
			return cr
		}
	}
	return nil
}

// Apply prepares req, which the proxy routed to host (the TLS SNI), for
// profile ("" or "default" for the default profile):
//
//  1. the rule for host is found (ErrNoRule otherwise) and req.Host, or
//     req.URL.Host when req.Host is empty, must name the same host
//     (ErrHostMismatch) — call Apply before rewriting the URL to an
//     upstream override;
//  2. the request must pass the rule's request policy (ErrRequestDenied:
//     TRACE, TRACK or CONNECT; a deny entry matched, no allow entry
//     matched, a method or path override on a rule with a list);
//  3. a client credential (a non-placeholder value in a header the rule
//     writes or strips) is handled per OnClientCredential: reject →
//     ErrClientCredentialRejected; keep → placeholders removed, the
//     client's header left alone, Kept;
//  4. otherwise every header the rule writes or strips is removed, and the
//     real credential is written (ErrNoCredential or ErrMalformedCredential
//     leave the request stripped and uncredentialed).
func (i *Injector) Apply(req *http.Request, host, profile string) (Applied, error) {
	h := hostOnly(host)
	cr := i.match(h)
	if cr == nil {
		return Applied{}, fmt.Errorf("%w %q", ErrNoRule, h)
	}
	a := Applied{Rule: cr.name, Credential: cr.rule.Credential, Placeholders: placeholderSuffixes(req.Header, cr.strip)}
	if err := checkRequestHost(req, h); err != nil {
		return a, err
	}
	if req.Header == nil {
		req.Header = make(http.Header)
	}
	if err := checkRequestPolicy(cr, req); err != nil {
		return a, err
	}
	if hasClientCredential(req.Header, cr.strip) {
		switch cr.onClient {
		case OnClientCredentialReject:
			return a, fmt.Errorf("rule %s: %w", cr.name, ErrClientCredentialRejected)
		case OnClientCredentialKeep:
			removePlaceholders(req.Header, cr.strip)
			a.Kept = true
			return a, nil
		}
	}
	for _, k := range cr.strip {
		delete(req.Header, k)
	}
	return i.inject(req.Header, cr, profile, a)
}

func checkRequestHost(req *http.Request, routed string) error {
	got := req.Host
	if got == "" && req.URL != nil {
		got = req.URL.Host
	}
	if got == "" {
		return nil // HTTP/1.0 without Host: nothing to contradict the routed host
	}
	if hostOnly(got) != routed {
		return fmt.Errorf("%w: routed to %q, Host names %q", ErrHostMismatch, routed, hostOnly(got))
	}
	return nil
}

// inject writes the credential; the only caller of Secret.Reveal.
func (i *Injector) inject(hdr http.Header, cr *compiledRule, profile string, a Applied) (Applied, error) {
	e, ok := i.store.lookupEntry(profile, cr.rule.Credential)
	if !ok {
		i.warnMissing(cr, profile)
		return a, &CredentialError{Err: ErrNoCredential, Rule: cr.name, Credential: cr.rule.Credential,
			Profile: profileDisplay(profile), Problem: "is not configured"}
	}
	if e.err != nil {
		// Format-independent problems were logged once by Store.Reload.
		return a, newMalformed(cr, profile, e, problemKind(e.err), e.err.Error())
	}
	v := e.secret.Reveal()
	key, val := cr.header, ""
	switch cr.format {
	case FormatBearer:
		val = "Bearer " + v
	case FormatXAPIKey:
		val = v
	case FormatBasicXAccessToken:
		val = "Basic " + base64.StdEncoding.EncodeToString([]byte("x-access-token:"+v))
	case FormatTemplate:
		val = cr.tmplPre + v + cr.tmplPost
	case FormatAnthropic:
		switch {
		case strings.HasPrefix(v, anthropicOAuthPrefix):
			key, val = hdrAuthorization, "Bearer "+v
		case strings.HasPrefix(v, anthropicAPIKeyPrefix):
			key, val = hdrXAPIKey, v
		default:
			const kind = "is neither an Anthropic OAuth token (sk-ant-oat…) nor an API key (sk-ant-api…)"
			err := newMalformed(cr, profile, e, kind, kind)
			if e.formatWarned.CompareAndSwap(false, true) { // fast path; warnOnce also dedupes across reloads
				i.store.warnOnce("format|"+cr.name+"|"+err.Profile+"|"+e.source+"|"+e.secret.Fingerprint(),
					"credential malformed; requests go out without it", "rule", cr.name, "credential", e.name,
					"profile", err.Profile, "source", e.source, "problem", err.Detail)
			}
			return a, err
		}
	}
	hdr[key] = []string{val}
	a.Injected = true
	return a, nil
}

// warnMissing logs a missing credential once per (profile, credential).
func (i *Injector) warnMissing(cr *compiledRule, profile string) {
	k := [2]string{profile, cr.rule.Credential}
	i.mu.Lock()
	seen := i.missing[k]
	i.missing[k] = true
	i.mu.Unlock()
	if !seen {
		i.logger.Warn("credential not configured; requests go out without it", "rule", cr.name,
			"credential", cr.rule.Credential, "profile", profileDisplay(profile),
			"env", strings.Join(EnvNames(cr.rule.Credential), " or "), "file", "secrets/"+cr.rule.Credential)
	}
}

// RedactResponse replaces, in place, every header value that contains a
// known credential value (of any profile, or its git Basic form) with
// [REDACTED]. It does not depend on host: an upstream echoing any of our
// credentials is scrubbed.
func (i *Injector) RedactResponse(host string, h http.Header) {
	_ = host
	snap := i.store.snap.Load()
	if len(snap.redact) == 0 {
		return
	}
	for _, vs := range h {
		for j, v := range vs {
			if snap.containsKnown(v) {
				vs[j] = Redacted
			}
		}
	}
}
