//go:build e2e

package e2e

import (
	"encoding/json"
	"fmt"
	"strings"
	"testing"

	"github.com/clauderon/clauderond/scripts/fakeapi"
)

const messagesBody = `{"model":"claude-sonnet-4-5","max_tokens":64,"messages":[{"role":"user","content":"say hi"}]}`

// fromContainer matches audit records of one container.
func fromContainer(name string) func(auditRecord) bool {
	return func(r auditRecord) bool { return strings.TrimPrefix(r.Container, "/") == name }
}

// injected waits for the audit line of an intercepted request from
// container to host+path and checks it says the credential was injected.
func (s *suite) injected(t testing.TB, container, host, pathPrefix string, wantStatus int) auditRecord {
	t.Helper()
	r := s.waitAudit(t, fmt.Sprintf("%s %s%s", container, host, pathPrefix), func(r auditRecord) bool {
		return fromContainer(container)(r) && r.Host == host && strings.HasPrefix(r.Path, pathPrefix) && r.Decision == "intercept"
	})
	if !r.AuthInjected || r.Status != wantStatus || r.SNI != host || r.Rule == "" || r.Method == "" || r.SrcIP == "" {
		b, _ := json.Marshal(r)
		t.Errorf("audit record = %s; want auth_injected=true status=%d sni=%s and rule, method, src_ip set", b, wantStatus, host)
	}
	return r
}

// mustSucceed fails the test with the container output when it failed.
func mustSucceed(t testing.TB, r result, want string) {
	t.Helper()
	if r.Err != nil {
		t.Fatalf("container %s failed: %v\n%s", r.Name, r.Err, r.Output)
	}
	if !strings.Contains(r.Output, want) {
		t.Fatalf("container %s output lacks %q:\n%s", r.Name, want, r.Output)
	}
}

func TestClient_CurlViaClauderonRun(t *testing.T) {
	s := env(t)
	r := s.clauderonRun(t, "curl", nil, s.debianImage, "sh", "-c",
		`curl -sS --fail-with-body https://api.anthropic.com/v1/messages -H "Authorization: Bearer $CLAUDE_CODE_OAUTH_TOKEN" `+
			`-H 'anthropic-version: 2023-06-01' -H 'content-type: application/json' -d '`+messagesBody+`'`)
	mustSucceed(t, r, fakeapi.Reply)
	s.injected(t, r.Name, "api.anthropic.com", "/v1/messages", 200)
	s.assertNoSecretsIn(t, r)
}

func TestClient_CurlStreamingViaPlainDockerRun(t *testing.T) {
	s := env(t)
	flags := append(s.manualCA(t), "-e", "CLAUDE_CODE_OAUTH_TOKEN="+placeholder)
	body := strings.Replace(messagesBody, `"max_tokens"`, `"stream":true,"max_tokens"`, 1)
	r := s.dockerRun(t, "curl-sse", flags, s.debianImage, "sh", "-c",
		`curl -sSN --fail-with-body https://api.anthropic.com/v1/messages -H "Authorization: Bearer $CLAUDE_CODE_OAUTH_TOKEN" `+
			`-H 'content-type: application/json' -d '`+body+`'`)
	mustSucceed(t, r, "event: message_stop")
	for _, ev := range []string{"event: message_start", "event: content_block_delta", "event: message_delta"} {
		if !strings.Contains(r.Output, ev) {
			t.Errorf("SSE output lacks %q", ev)
		}
	}
	s.injected(t, r.Name, "api.anthropic.com", "/v1/messages", 200)
	s.assertNoSecretsIn(t, r)
}

func TestClient_GitCloneViaPlainDockerRun(t *testing.T) {
	s := env(t)
	flags := append(s.manualCA(t), "-e", "GITHUB_TOKEN=clauderon-proxy", "-e", "GIT_TERMINAL_PROMPT=0")
	r := s.dockerRun(t, "git", flags, s.debianImage, "sh", "-c",
		"git clone -q https://github.com/acme/private.git /tmp/private && cat /tmp/private/README.md")
	mustSucceed(t, r, gitMarker)
	s.injected(t, r.Name, "github.com", "/acme/private.git/info/refs", 200)
	s.injected(t, r.Name, "github.com", "/acme/private.git/git-upload-pack", 200)
	s.assertNoSecretsIn(t, r)
}

func TestClient_PythonUrllibAndRequests(t *testing.T) {
	s := env(t)
	script := `
import json, os, urllib.request, requests
body = json.loads('` + messagesBody + `')
req = urllib.request.Request("https://api.anthropic.com/v1/messages", data=json.dumps(body).encode(),
    headers={"Authorization": "Bearer " + os.environ["CLAUDE_CODE_OAUTH_TOKEN"], "content-type": "application/json"})
with urllib.request.urlopen(req, timeout=20) as resp:
    print("urllib", resp.status, json.load(resp)["content"][0]["text"])
r = requests.post("https://` + echoHost + `/v1/chat/completions", json={"model": "x"},
    headers={"Authorization": "Bearer " + os.environ["OPENAI_API_KEY"]}, timeout=20)
r.raise_for_status()
print("requests", r.status_code, r.json()["headers"]["Authorization"])
`
	r := s.clauderonRun(t, "python", nil, s.debianImage, "python3", "-c", script)
	mustSucceed(t, r, "urllib 200 "+fakeapi.Reply)
	if !strings.Contains(r.Output, "requests 200 Bearer <real:openai>") {
		t.Errorf("the echo upstream did not see the real OpenAI key injected:\n%s", r.Output)
	}
	s.injected(t, r.Name, "api.anthropic.com", "/v1/messages", 200)
	s.injected(t, r.Name, echoHost, "/v1/chat/completions", 200)
	s.assertNoSecretsIn(t, r)
}

func TestClient_NodeFetch(t *testing.T) {
	s := env(t)
	script := `
fetch("https://api.anthropic.com/v1/messages", {method: "POST",
  headers: {"authorization": "Bearer " + process.env.CLAUDE_CODE_OAUTH_TOKEN, "content-type": "application/json"},
  body: JSON.stringify(` + messagesBody + `)})
.then(async r => { const j = await r.json(); console.log("node", r.status, j.content[0].text); if (r.status !== 200) process.exit(1) })
.catch(e => { console.error("fetch failed:", e, e.cause); process.exit(1) })`
	flags := append(s.manualCA(t), "-e", "CLAUDE_CODE_OAUTH_TOKEN="+placeholder)
	r := s.dockerRun(t, "node", flags, s.debianImage, "node", "-e", script)
	mustSucceed(t, r, "node 200 "+fakeapi.Reply)
	s.injected(t, r.Name, "api.anthropic.com", "/v1/messages", 200)
	s.assertNoSecretsIn(t, r)
}

// TestClient_ClaudeCodePrintMode runs the real Claude Code CLI, unchanged,
// as a non-root user holding only the placeholder, with the HOME and
// claude.json that `clauderon run` provides.
func TestClient_ClaudeCodePrintMode(t *testing.T) {
	s := env(t)
	before := len(s.log.All())
	r := s.clauderonRun(t, "claude", []string{"-u", "1000:1000"}, s.debianImage,
		"claude", "-p", "say hi", "--dangerously-skip-permissions")
	mustSucceed(t, r, fakeapi.Reply)
	s.injected(t, r.Name, "api.anthropic.com", "/v1/messages", 200)
	for _, req := range s.log.All()[before:] {
		t.Logf("fake upstream saw: %s %s %s auth=%s status=%d unknown=%v", req.Server, req.Method, req.Path, req.Auth, req.Status, req.Unknown)
		if req.Auth == "placeholder" {
			t.Errorf("a placeholder reached the upstream on %s %s", req.Method, req.Path)
		}
	}
	s.assertNoSecretsIn(t, r)
}

// TestClient_ClaudeCodePlainDockerRun runs the same CLI with plain `docker
// run` and the CA handed over by hand, as a CI runner would.
func TestClient_ClaudeCodePlainDockerRun(t *testing.T) {
	s := env(t)
	flags := append(s.manualCA(t), "-u", "1000:1000", "-e", "HOME=/home/agent", "-e", "CLAUDE_CODE_OAUTH_TOKEN="+placeholder)
	r := s.dockerRun(t, "claude-plain", flags, s.debianImage, "claude", "-p", "say hi", "--dangerously-skip-permissions")
	mustSucceed(t, r, fakeapi.Reply)
	s.injected(t, r.Name, "api.anthropic.com", "/v1/messages", 200)
	s.assertNoSecretsIn(t, r)
}

// TestClient_PassthroughIsNotIntercepted checks egress.allow: the bytes go
// through untouched (end-to-end TLS with the upstream's own CA) and no
// credential is injected.
func TestClient_PassthroughIsNotIntercepted(t *testing.T) {
	s := env(t)
	r := s.dockerRun(t, "pass", []string{"-v", s.caFile + ":/upstream-ca.pem:ro", "-e", "SSL_CERT_FILE=/upstream-ca.pem"},
		// The name is fictional (no DNS answer), so dial any address: port
		// 443 lands on the terminator, which routes by SNI alone.
		s.scratchImage, "e2etool", "httpsget", "-connect", outsideIP+":443", "https://"+passHost+"/hello")
	mustSucceed(t, r, `"server":"echo"`)
	if strings.Contains(r.Output, "<real:") {
		t.Errorf("a credential was injected into passthrough traffic:\n%s", r.Output)
	}
	rec := s.waitAudit(t, "passthrough", func(a auditRecord) bool {
		return fromContainer(r.Name)(a) && a.SNI == passHost
	})
	if rec.Decision != "passthrough" || rec.AuthInjected {
		t.Errorf("audit = %+v, want decision passthrough without injection", rec)
	}
}

// TestClient_DeniedHostIsRefusedAndAudited: a name no rule or allow entry
// names is refused, and the refusal is audited.
func TestClient_DeniedHostIsRefusedAndAudited(t *testing.T) {
	s := env(t)
	// The name does not resolve (dnsredir denies it), so dial the gateway of
	// a real-looking address: what matters is the SNI the terminator sees.
	r := s.dockerRun(t, "deny", nil, s.scratchImage, "e2etool", "httpsget", "-connect", outsideIP+":443",
		"https://"+deniedHost+"/")
	if r.Err == nil {
		t.Fatalf("request to a denied host succeeded:\n%s", r.Output)
	}
	rec := s.waitAudit(t, "deny of "+deniedHost, func(a auditRecord) bool {
		return fromContainer(r.Name)(a) && a.SNI == deniedHost
	})
	if rec.Decision != "deny" {
		t.Errorf("audit decision = %q, want deny", rec.Decision)
	}
}
