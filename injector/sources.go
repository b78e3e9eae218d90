package injector

import (
	"errors"
	"fmt"
	"slices"
	"strings"
)

// Placeholder values handed to containers instead of real credentials
// (DESIGN.md). Anything containing PlaceholderMarker, equal to
// PlaceholderGitHub, or PlaceholderGitHub with a per-container suffix
// ("clauderon-proxy-" and PlaceholderSuffixLen lower-case hex digits) is
// treated as a placeholder wherever it appears.
const (
	PlaceholderAnthropicOAuth = "sk-ant-oat01-clauderon-proxy-placeholder"
	PlaceholderOpenAI         = "sk-openai-clauderon-proxy-placeholder"
	PlaceholderGitHub         = "clauderon-proxy"
	PlaceholderMarker         = "clauderon-proxy-placeholder"
)

// Per-container placeholders (honeytokens). Containers clauderond creates
// or prepares get the reference values above with "-" and a suffix of
// their own appended (WithPlaceholderSuffix), so that a placeholder seen
// where it does not belong names the container it came from. The suffix is
// not a secret: it is PlaceholderSuffixLen lower-case hex digits (the
// appliance derives it with a keyed MAC). The plain reference values keep
// working for images that hard-code them.
const PlaceholderSuffixLen = 10

// referencePlaceholders are the values a per-container suffix is appended to.
var referencePlaceholders = [...]string{PlaceholderAnthropicOAuth, PlaceholderOpenAI, PlaceholderGitHub}

// IsPlaceholderSuffix reports whether s has the form of a per-container
// suffix: PlaceholderSuffixLen lower-case hex digits.
func IsPlaceholderSuffix(s string) bool {
	if len(s) != PlaceholderSuffixLen {
		return false
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !(c >= '0' && c <= '9' || c >= 'a' && c <= 'f') {
			return false
		}
	}
	return true
}

// WithPlaceholderSuffix returns env with suffix appended ("-" + suffix) to
// every value that is one of the reference placeholders; other values are
// kept. A fresh map. An invalid suffix (see IsPlaceholderSuffix) leaves the
// values alone.
func WithPlaceholderSuffix(env map[string]string, suffix string) map[string]string {
	out := make(map[string]string, len(env))
	for k, v := range env {
		if IsPlaceholderSuffix(suffix) && slices.Contains(referencePlaceholders[:], v) {
			v += "-" + suffix
		}
		out[k] = v
	}
	return out
}

// PlaceholderSuffix returns the per-container suffix of a bare placeholder
// value: one of the reference values, "-", then the suffix and nothing
// else. ok is false for the plain reference values and anything else.
func PlaceholderSuffix(v string) (suffix string, ok bool) {
	for _, ref := range referencePlaceholders {
		if rest, found := strings.CutPrefix(v, ref+"-"); found && IsPlaceholderSuffix(rest) {
			return rest, true
		}
	}
	return "", false
}

// Placeholders returns the environment given to containers in place of
// real credentials. A fresh map on every call.
func Placeholders() map[string]string {
	return map[string]string{
		"CLAUDE_CODE_OAUTH_TOKEN": PlaceholderAnthropicOAuth,
		"OPENAI_API_KEY":          PlaceholderOpenAI,
		"GITHUB_TOKEN":            PlaceholderGitHub,
		"GH_TOKEN":                PlaceholderGitHub,
	}
}

// IsPlaceholder reports whether a bare credential value (no auth scheme) is
// one of ours.
func IsPlaceholder(v string) bool {
	if v == PlaceholderGitHub || strings.Contains(v, PlaceholderMarker) {
		return true
	}
	rest, ok := strings.CutPrefix(v, PlaceholderGitHub+"-")
	return ok && IsPlaceholderSuffix(rest)
}

// builtinEnv maps the well-known credential names to their environment
// variables, in priority order (first non-empty wins).
var builtinEnv = map[string][]string{
	"anthropic": {"CLAUDE_CODE_OAUTH_TOKEN", "ANTHROPIC_API_KEY"},
	"openai":    {"OPENAI_API_KEY"},
	"github":    {"GITHUB_TOKEN", "GH_TOKEN"},
	"npm":       {"NPM_TOKEN"},
}

// BuiltinCredentials are the names every Store resolves, whether or not a
// rule uses them.
func BuiltinCredentials() []string { return []string{"anthropic", "openai", "github", "npm"} }

// EnvNames returns the environment variables consulted for credential name,
// in priority order: the built-in list, or the name upper-cased with '-'
// and '.' turned into '_'. A named profile P reads
// CLAUDERON_PROFILE_<P>_<ENV> for each of these instead.
func EnvNames(name string) []string {
	if e, ok := builtinEnv[name]; ok {
		return e
	}
	return []string{envStem(name)}
}

// FileNames returns the file names (under secrets/, or
// secrets/profiles/<P>/) consulted for credential name, in priority order:
// the name itself, then each environment variable name lower-cased
// (secrets/anthropic, secrets/claude_code_oauth_token,
// secrets/anthropic_api_key).
func FileNames(name string) []string {
	out := []string{name}
	for _, e := range EnvNames(name) {
		if f := strings.ToLower(e); f != name {
			out = append(out, f)
		}
	}
	return out
}

// credentialForFile maps a file name found in a secrets directory to the
// credential it holds ("github_token" → "github").
func credentialForFile(file string) string {
	for name, envs := range builtinEnv {
		for _, e := range envs {
			if strings.ToLower(e) == file {
				return name
			}
		}
	}
	return file
}

func envStem(name string) string {
	return strings.Map(func(r rune) rune {
		switch {
		case r == '-' || r == '.':
			return '_'
		case r >= 'a' && r <= 'z':
			return r - 'a' + 'A'
		}
		return r
	}, name)
}

// ProfileEnvPrefix starts every environment variable of a named profile.
const ProfileEnvPrefix = "CLAUDERON_PROFILE_"

// DefaultProfile is the profile name used when a container names none.
const DefaultProfile = "default"

// profileKey is the profile's identity across sources: upper case with '-'
// and '.' as '_' (as in its environment variables). "" for the default.
func profileKey(p string) string {
	if p == "" || p == DefaultProfile {
		return ""
	}
	return envStem(p)
}

// ValidateProfileName checks a profile name as containers and directories
// spell it: [a-z0-9][a-z0-9_.-]*, at most 64 bytes.
func ValidateProfileName(p string) error {
	if err := validateCredentialName(p); err != nil {
		return fmt.Errorf("profile %w", err)
	}
	return nil
}

// errPlaceholderValue and friends describe why a value cannot be a
// credential; none of them includes the value.
var errPlaceholderValue = errors.New("is a clauderon placeholder, not a real credential")

// checkValue applies the format-independent checks: not empty, not a
// placeholder, printable ASCII without whitespace.
func checkValue(v string) error {
	if v == "" {
		return errors.New("is empty")
	}
	if IsPlaceholder(v) {
		return errPlaceholderValue
	}
	for i := 0; i < len(v); i++ {
		c := v[i]
		switch {
		case c == ' ' || c == '\t' || c == '\r' || c == '\n':
			return &valueProblem{"contains whitespace", fmt.Sprintf(" at byte %d of %d", i, len(v))}
		case c < 0x20 || c == 0x7f:
			return &valueProblem{"contains a control character", fmt.Sprintf(" 0x%02x at byte %d of %d", c, i, len(v))}
		case c > 0x7e:
			return &valueProblem{"contains a non-ASCII byte", fmt.Sprintf(" at byte %d of %d", i, len(v))}
		}
	}
	return nil
}

// valueProblem is a checkValue finding: kind is what a client may be told;
// where adds the position and the value's length, for the operator only
// (the length narrows a brute force, the position hints at the value).
type valueProblem struct{ kind, where string }

func (p *valueProblem) Error() string { return p.kind + p.where }

// problemKind is the client-safe part of a checkValue error.
func problemKind(err error) string {
	var p *valueProblem
	if errors.As(err, &p) {
		return p.kind
	}
	return err.Error()
}

// Anthropic credential prefixes.
const (
	anthropicOAuthPrefix  = "sk-ant-oat"
	anthropicAPIKeyPrefix = "sk-ant-api"
)

// credentialKind classifies a value for status output.
func credentialKind(v string) string {
	switch {
	case strings.HasPrefix(v, anthropicOAuthPrefix):
		return "oauth"
	case strings.HasPrefix(v, anthropicAPIKeyPrefix), strings.HasPrefix(v, "sk-"):
		return "api-key"
	case strings.HasPrefix(v, "ghp_"), strings.HasPrefix(v, "gho_"), strings.HasPrefix(v, "ghu_"),
		strings.HasPrefix(v, "ghs_"), strings.HasPrefix(v, "github_pat_"):
		return "github-token"
	case strings.HasPrefix(v, "npm_"):
		return "npm-token"
	}
	return "token"
}
