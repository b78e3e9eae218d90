package injector

import (
	"fmt"
	"net/url"
	"regexp"
	"strings"
)

// A rule's push scope (Rule.Push) limits git pushes over smart HTTP to
// the repositories it lists: clone and fetch (git-upload-pack) go
// anywhere the token may read, a push (git-receive-pack) only to "owner/repo"
// or "owner/*" entries. A push is recognised on every view of the path the
// deny lists check (case, ".git", dot segments, encodings), by its service:
// GET …/info/refs?service=git-receive-pack and POST …/git-receive-pack.

var pushEntryRE = regexp.MustCompile(`^[A-Za-z0-9_.-]+/([A-Za-z0-9_.-]+|\*)$`)

func validatePush(list []string) error {
	for i, e := range list {
		if !pushEntryRE.MatchString(e) || strings.HasPrefix(e, ".") {
			return fmt.Errorf("push[%d]: %q is not owner/repo or owner/*", i, e)
		}
	}
	return nil
}

// pushScope is a compiled Rule.Push; nil means pushes are not limited.
type pushScope struct{ entries []string }

func compilePush(list []string) *pushScope {
	if list == nil {
		return nil
	}
	out := &pushScope{}
	for _, e := range list {
		out.entries = append(out.entries, strings.ToLower(strings.TrimSuffix(e, ".git")))
	}
	return out
}

// isPush reports whether a request (a normalized path view and its raw
// query) is part of a git push, and to which "owner/repo".
func isPush(view, rawQuery string) (repo string, ok bool) {
	p := strings.ToLower(view)
	switch {
	case strings.HasSuffix(p, "/git-receive-pack"):
		p = strings.TrimSuffix(p, "/git-receive-pack")
	case strings.HasSuffix(p, "/info/refs") && receivePackService(rawQuery):
		p = strings.TrimSuffix(p, "/info/refs")
	default:
		return "", false
	}
	segs := strings.Split(strings.Trim(p, "/"), "/")
	if len(segs) < 2 {
		return p, true // a push to no repository we can name: refused below
	}
	return segs[0] + "/" + strings.TrimSuffix(segs[1], ".git"), true
}

func receivePackService(rawQuery string) bool {
	q, err := url.ParseQuery(rawQuery)
	if err != nil {
		return strings.Contains(strings.ToLower(rawQuery), "git-receive-pack")
	}
	for _, v := range q["service"] {
		if strings.EqualFold(v, "git-receive-pack") {
			return true
		}
	}
	return false
}

// allows reports whether repo ("owner/repo", lower case) is in scope.
func (s *pushScope) allows(repo string) bool {
	owner, _, _ := strings.Cut(repo, "/")
	for _, e := range s.entries {
		if e == repo || e == owner+"/*" {
			return true
		}
	}
	return false
}

// checkPush refuses a push outside the rule's scope on any view of the
// path.
func checkPush(cr *compiledRule, views []string, rawQuery string) error {
	if cr.push == nil {
		return nil
	}
	for _, v := range views {
		if repo, ok := isPush(v, rawQuery); ok && !cr.push.allows(repo) {
			return fmt.Errorf("rule %s: git push to %s is outside the rule's push scope (push: %v): %w",
				cr.name, repo, cr.rule.Push, ErrRequestDenied)
		}
	}
	return nil
}
