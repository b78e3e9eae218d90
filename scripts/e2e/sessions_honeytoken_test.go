//go:build e2e

package e2e

import (
	"encoding/json"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/clauderon/clauderond/scripts/fakeapi"
)

var perContainerPlaceholder = regexp.MustCompile(`TOKEN=(sk-ant-oat01-clauderon-proxy-placeholder-[0-9a-f]{10})\b`)

// TestHoneytoken_AnotherContainersPlaceholder: two `clauderon run`
// containers get placeholders of their own; container 2 sends container
// 1's (handed to it by the test, as a copy out of container 1 would be).
// The request still goes out with container 2's credential (the injector
// strips any placeholder), and its audit line names container 1 in
// placeholder_from.
func TestHoneytoken_AnotherContainersPlaceholder(t *testing.T) {
	s := env(t)
	// Container 1: one request of its own (so the daemon has seen and
	// bound it), then its placeholder on stdout, then it stays up.
	c1 := s.clauderonRun(t, "honey1", []string{"-d"}, s.debianImage, "sh", "-c",
		`curl -sS -o /dev/null https://api.anthropic.com/v1/messages -H "Authorization: Bearer $CLAUDE_CODE_OAUTH_TOKEN" `+
			`-H 'content-type: application/json' -d '`+messagesBody+`'; echo "TOKEN=$CLAUDE_CODE_OAUTH_TOKEN"; sleep 300`)
	if c1.Err != nil {
		t.Fatalf("clauderon run -d: %v\n%s", c1.Err, c1.Output)
	}
	own := s.injected(t, c1.Name, "api.anthropic.com", "/v1/messages", 200)
	if own.PlaceholderFrom != "" {
		t.Errorf("container 1's own placeholder was reported as from %q", own.PlaceholderFrom)
	}
	var token1 string
	deadline := time.Now().Add(30 * time.Second)
	for token1 == "" {
		out, _ := docker(t, 10*time.Second, "logs", c1.Name)
		if m := perContainerPlaceholder.FindStringSubmatch(out); m != nil {
			token1 = m[1]
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("container 1 never printed a per-container placeholder:\n%s", out)
		}
		time.Sleep(200 * time.Millisecond)
	}

	c2 := s.clauderonRun(t, "honey2", []string{"-e", "LEAKED=" + token1}, s.debianImage, "sh", "-c",
		`echo "TOKEN=$CLAUDE_CODE_OAUTH_TOKEN"; `+
			`curl -sS --fail-with-body https://api.anthropic.com/v1/messages -H "Authorization: Bearer $LEAKED" `+
			`-H 'content-type: application/json' -d '`+messagesBody+`'`)
	mustSucceed(t, c2, fakeapi.Reply)
	if m := perContainerPlaceholder.FindStringSubmatch(c2.Output); m == nil || m[1] == token1 {
		t.Errorf("container 2's own placeholder %v, want one of its own, not container 1's %s", m, token1)
	}
	r := s.injected(t, c2.Name, "api.anthropic.com", "/v1/messages", 200)
	if r.PlaceholderFrom != c1.Name {
		b, _ := json.Marshal(r)
		t.Errorf("container 2's audit line %s: placeholder_from %q, want container 1 %q", b, r.PlaceholderFrom, c1.Name)
	}
	s.assertNoSecretsIn(t, c2)
	if log := s.logTail(400); !strings.Contains(log, "placeholder_from="+c1.Name) && !strings.Contains(log, `"placeholder_from":"`+c1.Name+`"`) {
		t.Errorf("the daemon log does not warn about %s's placeholder:\n%s", c1.Name, s.logTail(40))
	}
}
