package injector

import (
	"errors"
	"fmt"
)

func newMalformed(cr *compiledRule, profile string, e *entry, kind, detail string) *CredentialError {
	return &CredentialError{Err: ErrMalformedCredential, Rule: cr.name, Credential: e.name,
		Profile: profileDisplay(profile), Source: e.source, Problem: kind, Detail: detail}
}

// CredentialError says why a matching rule injected nothing: Err is
// ErrNoCredential or ErrMalformedCredential. Its Error text reaches the
// client (a 403 body): it names the rule, the credential, the profile and
// the kind of problem only, never the value, where it came from (a host
// path) or anything measured on it (its length). LogDetail adds the source
// and the exact finding for the daemon's log.
type CredentialError struct {
	Err        error
	Rule       string // Rule.Name
	Credential string // credential name
	Profile    string // "default" or the profile name
	Source     string // "env X" or "file /path"; empty when not configured. Log only.
	Problem    string // the kind of problem, e.g. "contains whitespace"
	Detail     string // Problem with its position and the value's length. Log only.
}

func (e *CredentialError) Error() string {
	if errors.Is(e.Err, ErrNoCredential) {
		return fmt.Sprintf("rule %s: %v: %q for profile %s", e.Rule, e.Err, e.Credential, e.Profile)
	}
	return fmt.Sprintf("rule %s: %v: %q (profile %s) %s", e.Rule, e.Err, e.Credential, e.Profile, e.Problem)
}

// LogDetail is Error plus what only the operator may see: where the
// credential comes from and exactly what is wrong with it, or where it is
// looked for when missing. Still never the value.
func (e *CredentialError) LogDetail() string {
	if errors.Is(e.Err, ErrNoCredential) {
		return fmt.Sprintf("%s (set %s or secrets/%s)", e.Error(), EnvNames(e.Credential)[0], e.Credential)
	}
	return fmt.Sprintf("rule %s: %v: %q (profile %s) from %s %s", e.Rule, e.Err, e.Credential, e.Profile, e.Source, e.Detail)
}

func (e *CredentialError) Unwrap() error { return e.Err }

func profileDisplay(p string) string {
	if p == "" {
		return DefaultProfile
	}
	return p
}
