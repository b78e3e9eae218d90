//go:build e2e

package e2e

import (
	"context"
	"encoding/json"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/clauderon/clauderond/appliance/api"
	"github.com/clauderon/clauderond/scripts/fakeapi"
)

// sessionName is a session name whose container (clauderon-<name>) the
// suite's sweep removes by prefix; rm -f at the end of the test.
func (s *suite) sessionName(t *testing.T, role string) string {
	t.Helper()
	name := "e2e-" + role + "-" + randomHex(3)
	t.Cleanup(func() {
		ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
		defer cancel()
		s.cli(ctx, "rm", "-f", name)
	})
	return name
}

// gitRepo makes a repository with one commit.
func gitRepo(t *testing.T, dir string) {
	t.Helper()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	for _, args := range [][]string{{"init", "-q", "-b", "main"}, {"config", "user.name", "E2E User"}, {"config", "user.email", "e2e@example.com"}} {
		gitIn(t, dir, args...)
	}
	if err := os.WriteFile(filepath.Join(dir, "README.md"), []byte("# e2e\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	gitIn(t, dir, "add", "README.md")
	gitIn(t, dir, "commit", "-q", "-m", "initial")
}

func gitIn(t *testing.T, dir string, args ...string) string {
	t.Helper()
	out, err := exec.Command("git", append([]string{"-C", dir}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("git %v: %v\n%s", args, err, out)
	}
	return strings.TrimSpace(string(out))
}

// sessionByName reads one session through `clauderon list --json`.
func (s *suite) sessionByName(t *testing.T, name string) api.Session {
	t.Helper()
	out, err := s.cli(context.Background(), "list", "--json")
	if err != nil {
		t.Fatalf("clauderon list: %v\n%s", err, out)
	}
	var ss []api.Session
	if err := json.Unmarshal([]byte(out), &ss); err != nil {
		t.Fatalf("list --json: %v\n%s", err, out)
	}
	for _, se := range ss {
		if se.Name == name {
			return se
		}
	}
	t.Fatalf("no session %s in %s", name, out)
	return api.Session{}
}

// TestSession_PrintModeOnTheUsersRepository is the CI user's run:
// `clauderon create --repo R --print --prompt P` with the real Claude Code.
// The fake API answers with tool calls (Write, then Bash git commit) that
// Claude Code executes in its container; the final text reaches stdout,
// the exit code is the agent's, the file is in the session's clone and the
// commit is on branch clauderon/<name> of the user's repository.
func TestSession_PrintModeOnTheUsersRepository(t *testing.T) {
	s := env(t)
	repo := filepath.Join(s.tmp, "repos", randomHex(4))
	gitRepo(t, repo)
	name := s.sessionName(t, "print")
	ctx, cancel := context.WithTimeout(context.Background(), 4*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, filepath.Join(s.bin, "clauderon"), "create", "--name", name, "--repo", repo,
		"--image", s.debianImage, "--print", "--prompt", "Please create e2e-write:hello.txt and commit it.")
	cmd.Env = append(os.Environ(), "CLAUDERON_SOCKET="+s.socket())
	var stdout, stderr strings.Builder
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	err := cmd.Run()
	t.Logf("stdout:\n%s\nstderr:\n%s", stdout.String(), stderr.String())
	if err != nil {
		t.Fatalf("clauderon create --print: %v; daemon log:\n%s", err, s.logTail(30))
	}
	if !strings.Contains(stdout.String(), fakeapi.ScriptDone) {
		t.Errorf("stdout lacks the agent's final answer %q", fakeapi.ScriptDone)
	}
	se := s.sessionByName(t, name)
	if se.State != "exited" || se.ExitCode != 0 || se.Branch != "clauderon/"+name || se.Workspace == "" {
		t.Errorf("session = %+v, want exited(0) on branch clauderon/%s with a workspace", se, name)
	}
	if got, err := os.ReadFile(filepath.Join(se.Workspace, "hello.txt")); err != nil || string(got) != fakeapi.WriteContent {
		t.Errorf("the file Claude Code wrote in the session's clone: %q %v", got, err)
	}
	if got := gitIn(t, repo, "show", "clauderon/"+name+":hello.txt"); got+"\n" != fakeapi.WriteContent {
		t.Errorf("branch clauderon/%s of the user's repository has hello.txt = %q", name, got)
	}
	if got := gitIn(t, repo, "log", "-1", "--format=%s", "clauderon/"+name); got != "agent: add hello.txt" {
		t.Errorf("branch clauderon/%s ends with %q, want the agent's commit", name, got)
	}
	if gitIn(t, repo, "rev-parse", "--abbrev-ref", "HEAD") != "main" || gitIn(t, repo, "status", "--porcelain") != "" {
		t.Error("the user's own checkout was changed")
	}
	s.injected(t, se.Container, "api.anthropic.com", "/v1/messages", 200)

	// rm keeps the branch and removes the clone.
	if out, err := s.cli(ctx, "rm", name); err != nil {
		t.Fatalf("clauderon rm: %v\n%s", err, out)
	}
	if _, err := os.Stat(se.Workspace); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("the clone survived rm: %v", err)
	}
	gitIn(t, repo, "rev-parse", "--verify", "clauderon/"+name)
}

// TestSession_PrintModeExitCode: a failing agent's exit code is
// clauderon's, and the session records it.
func TestSession_PrintModeExitCode(t *testing.T) {
	s := env(t)
	name := s.sessionName(t, "fail")
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	out, err := s.cli(ctx, "create", "--no-repo", "--name", name, "--image", s.debianImage, "--print", "--prompt", fakeapi.FailMarker)
	var ee *exec.ExitError
	if !errors.As(err, &ee) || ee.ExitCode() == 0 {
		t.Fatalf("create --print with a failing agent: %v, want its non-zero exit code\n%s", err, out)
	}
	if se := s.sessionByName(t, name); se.State != "exited" || se.ExitCode != ee.ExitCode() {
		t.Errorf("session = %+v; clauderon exited %d, want the agent's recorded code", se, ee.ExitCode())
	}
	if strings.Contains(out, "clauderon: ") {
		t.Errorf("clauderon itself reported an error instead of passing the agent's code on:\n%s", out)
	}
}

// TestSession_InteractiveInTmux attaches to an interactive session in a
// real terminal (tmux), types a prompt and reads the screen: the answer
// from the fake API appears, and no onboarding, trust or
// bypass-permissions dialog stands in the way.
func TestSession_InteractiveInTmux(t *testing.T) {
	s := env(t)
	if _, err := exec.LookPath("tmux"); err != nil {
		t.Fatalf("tmux is needed (apt-get install tmux): %v", err)
	}
	name := s.sessionName(t, "tty")
	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	if out, err := s.cli(ctx, "create", "--no-repo", "--name", name, "--image", s.debianImage, "--prompt", "say hi"); err != nil {
		t.Fatalf("create: %v\n%s", err, out)
	}
	tm := "clauderon-e2e-" + randomHex(3)
	tmux := func(args ...string) string {
		out, err := exec.CommandContext(ctx, "tmux", append([]string{"-L", tm}, args...)...).CombinedOutput()
		if err != nil {
			t.Fatalf("tmux %v: %v\n%s", args, err, out)
		}
		return string(out)
	}
	attach := filepath.Join(s.bin, "clauderon") + " --socket " + s.socket() + " attach " + name
	tmux("new-session", "-d", "-s", "e2e", "-x", "160", "-y", "48", attach)
	t.Cleanup(func() { exec.Command("tmux", "-L", tm, "kill-server").Run() })
	screen := func() string { return tmux("capture-pane", "-p", "-t", "e2e") }
	waitScreen := func(what string, ok func(string) bool) string {
		t.Helper()
		deadline := time.Now().Add(60 * time.Second)
		for {
			sc := screen()
			if ok(sc) {
				return sc
			}
			for _, dialog := range []string{"Quick safety check", "Do you trust", "No, exit", "Yes, I accept", "Select login method", "Choose the text style"} {
				if strings.Contains(sc, dialog) {
					t.Fatalf("the session shows a dialog (%q) instead of the conversation:\n%s", dialog, sc)
				}
			}
			if time.Now().After(deadline) {
				t.Fatalf("%s: not on screen within 60s:\n%s\ndaemon log:\n%s", what, sc, s.logTail(20))
			}
			time.Sleep(300 * time.Millisecond)
		}
	}
	// The initial prompt's answer, then a prompt typed at the keyboard.
	waitScreen("the answer to the initial prompt", func(sc string) bool {
		return strings.Contains(sc, "Hello from the fake Anthropic API") && strings.Contains(sc, "bypass permissions on")
	})
	deadline := time.Now().Add(30 * time.Second)
	for !strings.Contains(screen(), "say hi again") {
		if time.Now().After(deadline) {
			t.Fatalf("typed text never showed up:\n%s", screen())
		}
		tmux("send-keys", "-t", "e2e", "C-u")
		for _, r := range "say hi again" {
			tmux("send-keys", "-t", "e2e", "-l", string(r))
			time.Sleep(30 * time.Millisecond)
		}
		time.Sleep(time.Second)
	}
	tmux("send-keys", "-t", "e2e", "Enter")
	sc := waitScreen("the fake API's answer", func(sc string) bool {
		return strings.Count(sc, "Hello from the fake Anthropic API") >= 1 && strings.Contains(sc, "say hi again")
	})
	t.Logf("screen:\n%s", sc)
	s.injected(t, "clauderon-"+name, "api.anthropic.com", "/v1/messages", 200)
}
