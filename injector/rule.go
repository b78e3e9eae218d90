package injector

import (
	"errors"
	"fmt"
	"net/netip"
	"strings"

	"golang.org/x/net/publicsuffix"
)

// Formats a Rule can write its credential in.
const (
	FormatBearer            = "bearer"               // Authorization: Bearer <cred>
	FormatXAPIKey           = "x-api-key"            // X-Api-Key: <cred>
	FormatBasicXAccessToken = "basic-x-access-token" // Authorization: Basic base64("x-access-token:<cred>") (git over HTTPS)
	FormatAnthropic         = "anthropic"            // sk-ant-oat… → Authorization: Bearer; sk-ant-api… → X-Api-Key
	FormatTemplate          = "template"             // Header: Template with {{credential}} replaced
)

// TemplatePlaceholder marks where a template rule puts the credential.
const TemplatePlaceholder = "{{credential}}"

// Values of Rule.OnClientCredential: what to do when the client sent a
// credential of its own (a value that is not a placeholder).
const (
	OnClientCredentialReplace = "replace" // default: strip the client's credential, inject ours
	OnClientCredentialKeep    = "keep"    // the client's own (non-placeholder) credential goes through untouched
	OnClientCredentialReject  = "reject"  // a client credential is refused (ErrClientCredentialRejected)
)

// Limits that keep rules small and header values sane.
const (
	maxHostLen     = 253
	maxNameLen     = 64
	maxHeaderLen   = 128
	maxTemplateLen = 1024
	maxStrip       = 32
)

// Rule binds one credential to one host pattern and says how to write it.
// The field tags match the config file keys.
type Rule struct {
	// Host is an exact host name ("api.anthropic.com") or "*.suffix", which
	// matches any name ending in ".suffix" but never suffix itself.
	// Matching is case-insensitive and tolerates a trailing dot.
	Host string `yaml:"host" mapstructure:"host" json:"host"`
	// Credential names the credential in the Store ("anthropic", "openai",
	// "github", "npm", or any name made of [a-z0-9._-]).
	Credential string `yaml:"credential" mapstructure:"credential" json:"credential"`
	// Header is the header written; empty means the format's default
	// (Authorization, or X-Api-Key for x-api-key). Must be empty for the
	// anthropic format, which picks the header from the credential.
	Header string `yaml:"header" mapstructure:"header" json:"header,omitempty"`
	// Format is one of the Format* constants; empty means bearer.
	Format string `yaml:"format" mapstructure:"format" json:"format,omitempty"`
	// Template is the header value for Format "template"; it must contain
	// {{credential}} exactly once and no CR, LF or other control character.
	Template string `yaml:"template" mapstructure:"template" json:"template,omitempty"`
	// Strip lists headers removed before injection (where containers put
	// their placeholders). The header written is always stripped too.
	Strip []string `yaml:"strip" mapstructure:"strip" json:"strip,omitempty"`
	// OnClientCredential is "replace" (default), "keep" or "reject".
	OnClientCredential string `yaml:"on_client_credential" mapstructure:"on_client_credential" json:"on_client_credential,omitempty"`
	// Deny lists requests the credential is never used for, as
	// "[METHOD] /path/prefix" (e.g. "POST /api/oauth/claude_cli/create_api_key",
	// "DELETE /repos"): they are refused with 403 and nothing is injected.
	// METHOD is any HTTP method or "*" (any), compared in upper case. The
	// path is written decoded and clean; "*" as a whole segment matches any
	// one segment ("/repos/*/*/keys"). An entry matches whole segments,
	// ignoring case, and its last segment also matches that segment
	// followed by '.' ("/v1/keys" covers "/v1/keys.json" and "/v1/keys/x",
	// not "/v1/keyring"). The request path is matched in every form an
	// upstream might read it: as sent, percent-decoded (once, and until
	// nothing decodes, so "%2F" is a slash), with '\' as '/', ";params"
	// cut from each segment (and everything after the first ';'), duplicate
	// slashes collapsed and dot segments resolved; any form that matches
	// denies. At most 64 entries.
	Deny []string `yaml:"deny" mapstructure:"deny" json:"deny,omitempty"`
	// Allow, when not empty, lists the only requests the credential is
	// used for, in Deny's syntax: anything else is refused with 403 and
	// nothing is injected. Every form of the request path (see Deny) must
	// match an entry, and entries match whole segments only (no '.'
	// extension). Deny wins over Allow. At most 64 entries.
	//
	// A rule with a Deny or Allow list also refuses requests that could
	// make the upstream act on another method or path than the one checked:
	// the headers X-HTTP-Method-Override, X-HTTP-Method, X-Method-Override,
	// X-Original-Method, X-Original-URL and X-Rewrite-URL (any case, '_'
	// for '-'), and a `_method` (or override-header-named) query parameter.
	// Every rule refuses TRACE, TRACK and CONNECT.
	Allow []string `yaml:"allow" mapstructure:"allow" json:"allow,omitempty"`
	// Push, when set (even empty), limits git pushes over smart HTTP
	// (git-receive-pack) to the repositories it lists, "owner/repo" or
	// "owner/*"; clones and fetches are not limited. Unset, a push goes
	// wherever the token may write. For github.com.
	Push []string `yaml:"push" mapstructure:"push" json:"push,omitempty"`
}

// Name is how the rule appears in audit lines and status: its normalized
// host pattern.
func (r Rule) Name() string { return normalizeHost(r.Host) }

// DefaultRules are the built-in rules. Config rules for the same host
// replace them (see MergeRules), deny lists included: a configured rule
// for one of these hosts starts from an empty deny list.
//
// Their deny lists keep the injected credential off the endpoints that
// mint or manage credentials, so a container cannot turn the proxy's
// credential into one of its own that outlives the session:
//
//   - api.anthropic.com: /api/oauth/claude_cli/create_api_key (an API key
//     minted from the OAuth token), /v1/oauth/token (token exchange and
//     refresh), /v1/organizations (the Admin API: API keys, users,
//     invites, workspaces).
//   - api.openai.com: /v1/organization/admin_api_keys,
//     /v1/organization/projects/*/api_keys and
//     /v1/organization/projects/*/service_accounts (creating a service
//     account returns an API key).
//   - api.github.com: /authorizations and /applications (OAuth tokens),
//     POST and DELETE /user/keys (account SSH keys), /user/gpg_keys,
//     POST /user/ssh_signing_keys, POST /repos/*/*/keys (deploy keys),
//     /repos/*/*/actions/runners/{registration-token,remove-token,
//     generate-jitconfig} and the same under /orgs/*/actions/runners
//     (self-hosted runner tokens), /app/installations/*/access_tokens.
//   - registry.npmjs.org: /-/npm/v1/tokens (npm token create, list,
//     revoke).
//   - github.com: none (git over HTTPS mints nothing).
func DefaultRules() []Rule {
	return []Rule{
		{Host: "api.anthropic.com", Credential: "anthropic", Format: FormatAnthropic, Strip: []string{"Authorization", "X-Api-Key"},
			Deny: []string{"/api/oauth/claude_cli/create_api_key", "/v1/oauth/token", "/v1/organizations"}},
		{Host: "api.openai.com", Credential: "openai", Format: FormatBearer, Strip: []string{"Authorization"},
			Deny: []string{"/v1/organization/admin_api_keys", "/v1/organization/projects/*/api_keys",
				"/v1/organization/projects/*/service_accounts"}},
		{Host: "api.github.com", Credential: "github", Format: FormatBearer, Strip: []string{"Authorization"},
			Deny: []string{"/authorizations", "/applications", "POST /user/keys", "DELETE /user/keys", "/user/gpg_keys",
				"POST /user/ssh_signing_keys", "POST /repos/*/*/keys",
				"/repos/*/*/actions/runners/registration-token", "/repos/*/*/actions/runners/remove-token",
				"/repos/*/*/actions/runners/generate-jitconfig",
				"/orgs/*/actions/runners/registration-token", "/orgs/*/actions/runners/remove-token",
				"/orgs/*/actions/runners/generate-jitconfig", "/app/installations/*/access_tokens"}},
		{Host: "github.com", Credential: "github", Format: FormatBasicXAccessToken, Strip: []string{"Authorization"}},
		{Host: "registry.npmjs.org", Credential: "npm", Format: FormatBearer, Strip: []string{"Authorization"},
			Deny: []string{"/-/npm/v1/tokens"}},
	}
}

// MergeRules returns the default rules overridden by configured ones: a
// configured rule replaces the default with the same host pattern, and the
// others are appended in order.
func MergeRules(defaults, configured []Rule) []Rule {
	out := make([]Rule, 0, len(defaults)+len(configured))
	byHost := make(map[string]int, len(defaults))
	for _, r := range defaults {
		byHost[normalizeHost(r.Host)] = len(out)
		out = append(out, r)
	}
	for _, r := range configured {
		if i, ok := byHost[normalizeHost(r.Host)]; ok {
			out[i] = r
			continue
		}
		byHost[normalizeHost(r.Host)] = len(out)
		out = append(out, r)
	}
	return out
}

// ValidateRule checks one rule. Errors name the offending field as the
// config key ("host: …", "template: …").
func ValidateRule(r Rule) error {
	if err := validateHostPattern(r.Host); err != nil {
		return fmt.Errorf("host: %w", err)
	}
	if err := validateCredentialName(r.Credential); err != nil {
		return fmt.Errorf("credential: %w", err)
	}
	if err := validateFormat(r); err != nil {
		return err
	}
	if len(r.Strip) > maxStrip {
		return fmt.Errorf("strip: %d headers, at most %d", len(r.Strip), maxStrip)
	}
	for i, h := range r.Strip {
		if err := validateHeaderName(h); err != nil {
			return fmt.Errorf("strip[%d]: %w", i, err)
		}
	}
	if err := validatePathList("deny", r.Deny); err != nil {
		return err
	}
	if err := validatePathList("allow", r.Allow); err != nil {
		return err
	}
	if err := validatePush(r.Push); err != nil {
		return err
	}
	switch r.OnClientCredential {
	case "", OnClientCredentialReplace, OnClientCredentialKeep, OnClientCredentialReject:
	default:
		return fmt.Errorf("on_client_credential: %q is not replace, keep or reject", r.OnClientCredential)
	}
	return nil
}

// ValidateRules checks every rule and that no two rules share a host
// pattern. Errors name the rule by index ("rules[2].host: …").
func ValidateRules(rules []Rule) error {
	seen := make(map[string]int, len(rules))
	for i, r := range rules {
		if err := ValidateRule(r); err != nil {
			return fmt.Errorf("rules[%d].%w", i, err)
		}
		h := normalizeHost(r.Host)
		if j, dup := seen[h]; dup {
			return fmt.Errorf("rules[%d].host: %q is already the host of rules[%d]", i, r.Host, j)
		}
		seen[h] = i
	}
	return nil
}

func validateFormat(r Rule) error {
	switch r.Format {
	case "", FormatBearer, FormatXAPIKey, FormatBasicXAccessToken:
		if r.Template != "" {
			return fmt.Errorf("template: only allowed with format %q", FormatTemplate)
		}
	case FormatAnthropic:
		if r.Header != "" {
			return fmt.Errorf("header: must be empty for format %q (the credential's kind picks Authorization or X-Api-Key)", FormatAnthropic)
		}
		if r.Template != "" {
			return fmt.Errorf("template: only allowed with format %q", FormatTemplate)
		}
	case FormatTemplate:
		if err := validateTemplate(r.Template); err != nil {
			return fmt.Errorf("template: %w", err)
		}
	default:
		return fmt.Errorf("format: %q is not one of bearer, x-api-key, basic-x-access-token, anthropic, template", r.Format)
	}
	if r.Header != "" {
		if err := validateHeaderName(r.Header); err != nil {
			return fmt.Errorf("header: %w", err)
		}
	}
	return nil
}

// validateTemplate requires exactly one {{credential}}, no other "{{" or
// "}}" (a typo such as "{{ credential }}" would otherwise send a literal),
// and only header-value characters (no CR, LF, NUL or other controls).
func validateTemplate(t string) error {
	if t == "" {
		return errors.New("empty; expected e.g. \"token {{credential}}\"")
	}
	if len(t) > maxTemplateLen {
		return fmt.Errorf("%d bytes, at most %d", len(t), maxTemplateLen)
	}
	if n := strings.Count(t, TemplatePlaceholder); n != 1 {
		return fmt.Errorf("must contain %s exactly once, found %d", TemplatePlaceholder, n)
	}
	rest := strings.Replace(t, TemplatePlaceholder, "", 1)
	if strings.Contains(rest, "{{") || strings.Contains(rest, "}}") {
		return fmt.Errorf("contains a brace pair other than %s", TemplatePlaceholder)
	}
	for i := 0; i < len(t); i++ {
		if c := t[i]; c != '\t' && (c < 0x20 || c == 0x7f) {
			return fmt.Errorf("contains control character 0x%02x at byte %d (CR/LF would split the header)", c, i)
		}
	}
	return nil
}

// validateHostPattern accepts a DNS name or "*." followed by a DNS name of
// at least two labels that is not a public suffix (*.github.io would send
// the credential to anyone's site). IP literals are refused: credentials are bound to
// names, and a client never sends an IP as SNI.
func validateHostPattern(h string) error {
	if h == "" {
		return errors.New("empty; expected e.g. api.example.com or *.example.com")
	}
	n := normalizeHost(h)
	name, wild := strings.CutPrefix(n, "*.")
	if _, err := netip.ParseAddr(name); err == nil {
		return fmt.Errorf("%q is an IP address; rules name hosts", h)
	}
	if err := validateDNSName(name); err != nil {
		return fmt.Errorf("%q: %w", h, err)
	}
	if wild && !strings.Contains(name, ".") {
		return fmt.Errorf("%q: a wildcard needs a suffix of at least two labels", h)
	}
	if wild && isPublicSuffix(name) {
		return fmt.Errorf("%q: %s is a public suffix (anyone can register a name under it); name the hosts instead", h, name)
	}
	return nil
}

// isPublicSuffix reports whether name is on the public suffix list (ICANN
// or private section, e.g. "co.uk", "github.io"), or under one of its
// wildcard entries.
func isPublicSuffix(name string) bool {
	ps, _ := publicsuffix.PublicSuffix(name)
	return ps == name
}

func validateDNSName(name string) error {
	if name == "" || len(name) > maxHostLen {
		return fmt.Errorf("name length %d not in 1..%d", len(name), maxHostLen)
	}
	for label := range strings.SplitSeq(name, ".") {
		if label == "" || len(label) > 63 {
			return errors.New("empty or over-long label")
		}
		if label[0] == '-' || label[len(label)-1] == '-' {
			return fmt.Errorf("label %q starts or ends with '-'", label)
		}
		for i := 0; i < len(label); i++ {
			c := label[i]
			if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '-' || c == '_') {
				return fmt.Errorf("label %q has character %q", label, c)
			}
		}
	}
	return nil
}

// validateCredentialName keeps names usable as file names (no path
// separators, no "..") and environment variable stems.
func validateCredentialName(n string) error {
	if n == "" || len(n) > maxNameLen {
		return fmt.Errorf("name length %d not in 1..%d", len(n), maxNameLen)
	}
	if n[0] == '.' || n[0] == '-' {
		return fmt.Errorf("%q must start with a letter or digit", n)
	}
	for i := 0; i < len(n); i++ {
		c := n[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_' || c == '-' || c == '.') {
			return fmt.Errorf("%q: only a-z, 0-9, '_', '-', '.' allowed", n)
		}
	}
	return nil
}

// forbiddenHeaders are never written or stripped by a rule: they frame the
// request or route it.
var forbiddenHeaders = map[string]bool{
	"Host": true, "Content-Length": true, "Transfer-Encoding": true, "Connection": true,
	"Upgrade": true, "Te": true, "Trailer": true, "Keep-Alive": true, "Proxy-Connection": true,
	"Content-Type": true, "Expect": true,
}

func validateHeaderName(h string) error {
	if h == "" || len(h) > maxHeaderLen {
		return fmt.Errorf("header name length %d not in 1..%d", len(h), maxHeaderLen)
	}
	for i := 0; i < len(h); i++ {
		if !isTokenChar(h[i]) {
			return fmt.Errorf("header name %q has invalid character %q", h, h[i])
		}
	}
	if forbiddenHeaders[canonicalHeader(h)] {
		return fmt.Errorf("header %q frames or routes the request; a rule may not touch it", h)
	}
	return nil
}

// isTokenChar reports whether c may appear in an HTTP token (RFC 9110).
func isTokenChar(c byte) bool {
	if c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' {
		return true
	}
	return strings.IndexByte("!#$%&'*+-.^_`|~", c) >= 0
}

// normalizeHost lower-cases h and drops one trailing dot. It allocates only
// when h has upper-case letters.
func normalizeHost(h string) string {
	h = strings.TrimSuffix(h, ".")
	for i := 0; i < len(h); i++ {
		if c := h[i]; c >= 'A' && c <= 'Z' {
			return strings.ToLower(h)
		}
	}
	return h
}

// hostOnly strips a port from a Host header or authority ("h:443",
// "[::1]:443") and normalizes the name.
func hostOnly(hostport string) string {
	h := hostport
	if i := strings.LastIndexByte(h, ':'); i >= 0 && !strings.Contains(h[i:], "]") {
		if strings.Count(h, ":") == 1 || strings.HasPrefix(h, "[") {
			h = h[:i]
		}
	}
	h = strings.TrimPrefix(strings.TrimSuffix(h, "]"), "[")
	return normalizeHost(h)
}

// matchHost reports whether the normalized host matches the normalized
// pattern: exact, or "*.suffix" with at least one label before the suffix.
func matchHost(pattern, host string) bool {
	if suffix, ok := strings.CutPrefix(pattern, "*"); ok {
		// suffix starts with '.', so host == "example.com" never matches "*.example.com".
		return len(host) > len(suffix) && strings.HasSuffix(host, suffix)
	}
	return pattern == host
}
