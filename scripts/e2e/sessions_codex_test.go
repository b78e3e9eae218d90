//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/clauderon/clauderond/scripts/fakeapi"
)

// agentImage is the sessions' default image, the one `clauderon image
// build` makes (Debian + Claude Code + the Codex CLI at pinned versions).
const agentImage = "clauderon-agent:latest"

var (
	agentImageOnce sync.Once
	agentImageErr  error
)

// agentImage makes sure clauderon-agent:latest is built from the pinned
// versions: `bin/clauderon image build` is a no-op when the image is up to
// date and builds it otherwise (a fresh CI machine: debootstrap from the
// Debian mirror and npm, a few minutes cold, cached under
// /var/cache/clauderon/agent-image). A failed build fails the test; it is
// never a skip.
func (s *suite) agentImage(t *testing.T) {
	t.Helper()
	agentImageOnce.Do(func() {
		start := time.Now()
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Minute)
		defer cancel()
		cmd := exec.CommandContext(ctx, filepath.Join(s.bin, "clauderon"), "image", "build", "--tag", agentImage)
		out, err := cmd.CombinedOutput()
		fmt.Fprintf(os.Stderr, "e2e: bin/clauderon image build (%.1fs): %s", time.Since(start).Seconds(), lastLines(string(out), 3))
		if err != nil {
			agentImageErr = fmt.Errorf("bin/clauderon image build: %w\n%s", err, lastLines(string(out), 40))
		}
	})
	if agentImageErr != nil {
		t.Fatal(agentImageErr)
	}
}

func lastLines(s string, n int) string {
	ls := lines(s)
	if len(ls) > n {
		ls = ls[len(ls)-n:]
	}
	return strings.Join(ls, "\n") + "\n"
}

// TestSession_CodexPrintMode is `clauderon create --agent codex --print`
// with the real Codex CLI in the default agent image: Codex holds only the
// placeholder OPENAI_API_KEY, streams POST /v1/responses from
// api.openai.com through clauderond, which injects the real key; the fake
// OpenAI API answers only that key. The answer reaches stdout, clauderon
// exits 0, the audit says the credential was injected, Codex asked no other
// host, and the real key is nowhere in the session's output, container or
// ~/.codex.
func TestSession_CodexPrintMode(t *testing.T) {
	s := env(t)
	s.agentImage(t)
	name := s.sessionName(t, "codex")
	before := len(s.log.All())
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(s.bin, "clauderon"), "create", "--no-repo", "--name", name,
		"--agent", "codex", "--print", "--prompt", "say hi")
	cmd.Env = append(os.Environ(), "CLAUDERON_SOCKET="+s.socket())
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	start := time.Now()
	err := cmd.Run()
	t.Logf("clauderon create --agent codex --print (%.1fs)\nstdout:\n%s\nstderr:\n%s", time.Since(start).Seconds(), stdout.String(), stderr.String())
	reqs := s.log.All()[before:]
	t.Logf("upstream requests: %v", fakeapi.Paths(reqs))
	if err != nil {
		var ee *exec.ExitError
		code := -1
		if errors.As(err, &ee) {
			code = ee.ExitCode()
		}
		t.Fatalf("clauderon create --agent codex --print exited %d (%v), want 0; daemon log:\n%s", code, err, s.logTail(30))
	}
	if !strings.Contains(stdout.String(), fakeapi.OpenAIReply) {
		t.Errorf("stdout lacks the fake OpenAI API's answer %q", fakeapi.OpenAIReply)
	}
	se := s.sessionByName(t, name)
	if se.State != "exited" || se.ExitCode != 0 || se.Agent != "codex" {
		t.Errorf("session = %+v, want a codex session exited(0)", se)
	}
	s.injected(t, se.Container, "api.openai.com", "/v1/responses", 200)

	// The fake saw the real key on every request, never a placeholder.
	var streamed int
	for _, r := range reqs {
		if r.Host != "api.openai.com" {
			b, _ := json.Marshal(r)
			t.Errorf("Codex reached another host (the seeded config turns off analytics, feedback, the update check and the plugin sync): %s", b)
			continue
		}
		if r.Auth != "real" {
			b, _ := json.Marshal(r)
			t.Errorf("api.openai.com got a request without the real key: %s", b)
		}
		if r.Server == "openai" && r.Method == "POST" && r.Path == "/v1/responses" && r.Stream && r.Status == 200 {
			streamed++
		}
		if r.Unknown {
			t.Logf("Codex called a path the fake does not know: %s %s", r.Method, r.Path)
		}
	}
	if streamed == 0 {
		t.Errorf("the fake OpenAI API answered no streamed POST /v1/responses with the real key")
	}

	// Nothing denied: Codex did not try chatgpt.com or ab.chatgpt.com.
	for _, r := range s.audit(t) {
		if fromContainer(se.Container)(r) && strings.Contains(r.Decision, "deny") {
			b, _ := json.Marshal(r)
			t.Errorf("Codex tried a denied host (the seeded config should keep it quiet): %s", b)
		}
	}

	s.assertNoSecretsIn(t, result{Name: se.Container, Output: stdout.String() + stderr.String()})
	codexHome := filepath.Join(s.state, "sessions", name, "codex")
	var files int
	werr := filepath.WalkDir(codexHome, func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.Type().IsRegular() {
			return err
		}
		data, err := os.ReadFile(p)
		if err != nil {
			return err
		}
		files++
		if n := s.findSecret(data); n != "" {
			t.Errorf("SECRET LEAK: the real %s token is in the session's ~/.codex: %s", n, p)
		}
		return nil
	})
	if werr != nil || files == 0 {
		t.Errorf("scanning the session's ~/.codex %s: %d files, %v", codexHome, files, werr)
	}
}
