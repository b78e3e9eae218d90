package main

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/clauderon/clauderond/appliance/api"
)

// testRepo makes a git repository with one commit.
func testRepo(t *testing.T) string {
	t.Helper()
	dir := t.TempDir()
	for _, args := range [][]string{
		{"init", "-q", "-b", "main"},
		{"config", "user.name", "Test User"},
		{"config", "user.email", "test@example.com"},
	} {
		mustGit(t, dir, args...)
	}
	os.WriteFile(filepath.Join(dir, "README.md"), []byte("hello\n"), 0o644)
	mustGit(t, dir, "add", "README.md")
	mustGit(t, dir, "commit", "-q", "-m", "first")
	return dir
}

func mustGit(t *testing.T, dir string, args ...string) string {
	t.Helper()
	out, err := exec.Command("git", append([]string{"-C", dir}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("git %v: %v\n%s", args, err, out)
	}
	return strings.TrimSpace(string(out))
}

// TestCreate_RepoPrintClonesFollowsAndFetchesBack: create --repo --print
// clones the repository into the prepared workspace on clauderon/NAME,
// streams the output, brings the branch (with the agent's commit) back
// into the repository and exits with the agent's code.
func TestCreate_RepoPrintClonesFollowsAndFetchesBack(t *testing.T) {
	h := newHarness(t)
	repo := testRepo(t)
	h.fb.printExit = 3
	// The "agent": a commit made in the workspace before the session ends
	// (the fake's session is exited as soon as it is created).
	agentCommits := func(ws string) {
		os.WriteFile(filepath.Join(ws, "hello.txt"), []byte("from the agent\n"), 0o644)
		mustGit(t, ws, "add", "hello.txt")
		mustGit(t, ws, "commit", "-q", "-m", "agent's change")
	}
	h.fb.afterCreate = func(req api.CreateRequest) { agentCommits(req.Workspace) }
	code, out, errOut := h.run("create", "--name", "job", "--repo", repo, "--print", "--prompt", "add hello.txt")
	if code != 3 {
		t.Fatalf("create --print exit %d, want the agent's 3; stderr:\n%s", code, errOut)
	}
	if !strings.Contains(out, "log of job follow=true") {
		t.Errorf("the session's output was not streamed: %q", out)
	}
	req := h.fb.created[0]
	if req.Workspace != filepath.Join(h.fb.wsRoot, "job") || req.Repo != repo || req.Branch != "clauderon/job" {
		t.Errorf("request = %+v, want the prepared workspace, the repository and branch clauderon/job", req)
	}
	ws := req.Workspace
	if got := mustGit(t, ws, "rev-parse", "--abbrev-ref", "HEAD"); got != "clauderon/job" {
		t.Errorf("workspace is on %q, want clauderon/job", got)
	}
	if got := mustGit(t, ws, "config", "user.email"); got != "test@example.com" {
		t.Errorf("workspace identity %q, want the user's", got)
	}
	if fi, err := os.Stat(filepath.Join(ws, ".clauderon", "uploads")); err != nil || !fi.IsDir() {
		t.Errorf("no .clauderon/uploads in the workspace: %v", err)
	}
	if st := mustGit(t, ws, "status", "--porcelain"); st != "" {
		t.Errorf("the workspace is not clean (.clauderon/ should be ignored): %q", st)
	}
	if got := mustGit(t, repo, "log", "-1", "--format=%s", "clauderon/job"); got != "agent's change" {
		t.Errorf("branch clauderon/job in the repository ends with %q, want the agent's commit", got)
	}
	if got := mustGit(t, repo, "rev-parse", "--abbrev-ref", "HEAD"); got != "main" {
		t.Errorf("the repository's own checkout moved to %q", got)
	}
}

func TestCreate_RefusesDirtyOrMissingRepo(t *testing.T) {
	h := newHarness(t)
	repo := testRepo(t)
	os.WriteFile(filepath.Join(repo, "README.md"), []byte("changed\n"), 0o644)
	code, _, errOut := h.run("create", "--name", "d", "--repo", repo, "--prompt", "p")
	if code != 1 || !strings.Contains(errOut, "uncommitted changes") || !strings.Contains(errOut, "README.md") {
		t.Errorf("dirty repo: %d %q", code, errOut)
	}
	code, _, errOut = h.run("create", "--name", "d", "--repo", filepath.Join(repo, "nope"), "--prompt", "p")
	if code != 1 || !strings.Contains(errOut, "not a directory") {
		t.Errorf("missing repo: %d %q", code, errOut)
	}
	code, _, errOut = h.run("create", "--name", "d", "--repo", t.TempDir(), "--prompt", "p")
	if code != 1 || !strings.Contains(errOut, "not a git repository") {
		t.Errorf("not a repo: %d %q", code, errOut)
	}
	if len(h.fb.created) != 0 {
		t.Errorf("sessions were created: %+v", h.fb.created)
	}
}

func TestRm_FetchesTheBranchOrDeletesIt(t *testing.T) {
	h := newHarness(t)
	repo := testRepo(t)
	if code, _, errOut := h.run("create", "--name", "keep", "--repo", repo, "--prompt", "p"); code != 0 {
		t.Fatalf("create: %s", errOut)
	}
	ws := filepath.Join(h.fb.wsRoot, "keep")
	os.WriteFile(filepath.Join(ws, "x"), []byte("x\n"), 0o644)
	mustGit(t, ws, "add", "x")
	mustGit(t, ws, "commit", "-q", "-m", "work")
	if code, _, errOut := h.run("rm", "keep"); code != 0 {
		t.Fatalf("rm: %s", errOut)
	}
	if got := mustGit(t, repo, "log", "-1", "--format=%s", "clauderon/keep"); got != "work" {
		t.Errorf("after rm the branch ends with %q, want the session's commit", got)
	}
	if code, _, errOut := h.run("create", "--name", "drop", "--repo", repo, "--prompt", "p"); code != 0 {
		t.Fatalf("create: %s", errOut)
	}
	mustGit(t, repo, "branch", "clauderon/drop")
	if code, _, errOut := h.run("rm", "--delete-branch", "drop"); code != 0 {
		t.Fatalf("rm --delete-branch: %s", errOut)
	}
	if out, err := exec.Command("git", "-C", repo, "rev-parse", "--verify", "-q", "clauderon/drop").CombinedOutput(); err == nil {
		t.Errorf("branch clauderon/drop survived rm --delete-branch: %s", out)
	}
}

func TestCpAndExecArgs(t *testing.T) {
	h := newHarness(t)
	if code, _, errOut := h.run("create", "--no-repo", "--name", "s", "--prompt", "p"); code != 0 {
		t.Fatal(errOut)
	}
	h.fb.sessions[0].User = "1000:1000"
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"cp", "spec.pdf", "s:"}, "cp spec.pdf clauderon-s:/uploads/"},
		{[]string{"cp", "s:out/report.md", "."}, "cp clauderon-s:/uploads/out/report.md ."},
		{[]string{"exec", "s", "--", "git", "log"}, "exec -i --user 1000:1000 clauderon-s git log"},
	} {
		h.execs = nil
		code, _, errOut := h.run(tc.args...)
		if code != 0 || len(h.execs) != 1 || strings.Join(h.execs[0], " ") != tc.want {
			t.Errorf("%v: %d %q execs %v, want docker %s", tc.args, code, errOut, h.execs, tc.want)
		}
	}
	for _, bad := range [][]string{{"cp", "a", "b"}, {"cp", "s:a", "s:b"}, {"cp", "s:../../etc/passwd", "."}} {
		if code, _, _ := h.run(bad...); code != 2 {
			t.Errorf("%v = %d, want usage error 2", bad, code)
		}
	}
	if code, out, _ := h.run("stop", "s"); code != 0 || !strings.Contains(out, "exited") {
		t.Errorf("stop = %d %q", code, out)
	}
	if code, _, errOut := h.run("exec", "s", "--", "true"); code != 1 || !strings.Contains(errOut, "clauderon start s") {
		t.Errorf("exec in a stopped session = %d %q", code, errOut)
	}
	if got := runUser([]string{"--rm", "-u", "1001:1001", "img"}); got != "1001:1001" {
		t.Errorf("runUser = %q", got)
	}
	if got := runUser([]string{"--user=agent", "img"}); got != "agent" {
		t.Errorf("runUser = %q", got)
	}
}

// TestFetchBack_HostileCloneRunsNothingOnTheHost: the agent owns its clone
// and can rewrite .git/config. `git fetch <clone>` ran git upload-pack in
// the clone with that config; with lazy fetching on (git without the 2024
// upload-pack fix, simulated with GIT_NO_LAZY_FETCH=0), a promisor remote's
// uploadpack named there ran on the host as the user (root under sudo)
// once the agent deleted an object. fetchBack must run nothing the clone
// configures, and still bring a normal branch back despite such a config.
func TestFetchBack_HostileCloneRunsNothingOnTheHost(t *testing.T) {
	t.Setenv("GIT_NO_LAZY_FETCH", "0")
	tmp := t.TempDir()
	marker := filepath.Join(tmp, "pwned")
	evil := filepath.Join(tmp, "evil.sh")
	os.WriteFile(evil, []byte("#!/bin/sh\necho \"$0 $*\" >> "+marker+"\n"), 0o755)
	hooks := filepath.Join(tmp, "hooks")
	os.Mkdir(hooks, 0o755)
	for _, h := range []string{"reference-transaction", "post-checkout", "pre-auto-gc", "post-update"} {
		os.Symlink(evil, filepath.Join(hooks, h))
	}

	setup := func(t *testing.T, dropObject bool) (repo, ws string) {
		repo = testRepo(t)
		ws = filepath.Join(t.TempDir(), "ws")
		mustGit(t, tmp, "clone", "-q", "--local", "--no-checkout", repo, ws)
		mustGit(t, ws, "checkout", "-q", "-b", "clauderon/s", "main")
		os.WriteFile(filepath.Join(ws, "work.txt"), []byte("the agent's work\n"), 0o644)
		mustGit(t, ws, "add", "work.txt")
		mustGit(t, ws, "commit", "-q", "-m", "agent")
		// What a hostile agent writes into its clone's config.
		for _, kv := range [][2]string{
			{"core.repositoryformatversion", "1"},
			{"extensions.partialClone", "origin"},
			{"remote.origin.promisor", "true"},
			{"remote.origin.uploadpack", evil},
			{"core.fsmonitor", evil},
			{"core.alternateRefsCommand", evil},
			{"uploadpack.packObjectsHook", evil},
			{"core.sshCommand", evil},
			{"core.hooksPath", hooks},
		} {
			mustGit(t, ws, "config", kv[0], kv[1])
		}
		if dropObject {
			blob := mustGit(t, ws, "rev-parse", "HEAD:work.txt")
			os.Remove(filepath.Join(ws, ".git", "objects", blob[:2], blob[2:]))
		}
		os.Remove(marker)
		return repo, ws
	}
	se := func(repo, ws string) api.Session {
		return api.Session{Name: "s", Workspace: ws, Repo: repo, Branch: "clauderon/s"}
	}

	t.Run("lazy fetch of a deleted object", func(t *testing.T) {
		repo, ws := setup(t, true)
		_ = fetchBack(t.Context(), se(repo, ws)) // may fail: the object is gone
		if b, err := os.ReadFile(marker); err == nil {
			t.Fatalf("fetching the session's branch back ran the clone's configured command on the host:\n%s", b)
		}
	})
	t.Run("intact clone, hostile config", func(t *testing.T) {
		repo, ws := setup(t, false)
		if err := fetchBack(t.Context(), se(repo, ws)); err != nil {
			t.Fatalf("fetchBack: %v", err)
		}
		if b, err := os.ReadFile(marker); err == nil {
			t.Fatalf("fetching the session's branch back ran the clone's configured command on the host:\n%s", b)
		}
		if got := mustGit(t, repo, "log", "-1", "--format=%s", "clauderon/s"); got != "agent" {
			t.Errorf("branch clauderon/s in the repository ends with %q, want the agent's commit", got)
		}
	})
	t.Run("a symlinked ref is refused", func(t *testing.T) {
		repo, ws := setup(t, false)
		ref := filepath.Join(ws, ".git", "refs", "heads", "clauderon", "s")
		os.Remove(ref)
		os.Symlink(filepath.Join(repo, ".git", "refs", "heads", "main"), ref)
		if err := fetchBack(t.Context(), se(repo, ws)); err == nil || !strings.Contains(err.Error(), "symlink") {
			t.Errorf("fetchBack through a symlinked ref: %v, want a refusal", err)
		}
	})
}

// TestRm_AnotherUsersRepositorySessionIsNotFetchedIntoByUs: removing a
// session someone else owns (an administrator, or root under sudo) does
// not write into that user's repository; it is refused without -f.
func TestRm_AnotherUsersRepositorySessionIsNotFetchedIntoByUs(t *testing.T) {
	h := newHarness(t)
	h.fb.sessions = append(h.fb.sessions, api.Session{Name: "theirs", Container: "clauderon-theirs", State: "running",
		Repo: "/home/alice/app", Branch: "clauderon/theirs", Workspace: "/var/lib/clauderon-workspaces/theirs", Owner: "alice", OwnerUID: "424242"})
	code, _, errOut := h.run("rm", "theirs")
	if code != 1 || !strings.Contains(errOut, "belongs to alice") {
		t.Fatalf("rm of another's session = %d %q, want a refusal naming the owner", code, errOut)
	}
	code, _, errOut = h.run("rm", "-f", "theirs")
	if code != 0 || !strings.Contains(errOut, "not fetching branch clauderon/theirs") {
		t.Errorf("rm -f = %d %q", code, errOut)
	}
}

// TestCloneInto_SharesNoObjectFileWithTheRepository: the agent owns the
// clone; a hard-linked object file would let it rewrite the user's
// repository's objects in place.
func TestCloneInto_SharesNoObjectFileWithTheRepository(t *testing.T) {
	repo := testRepo(t)
	ws := filepath.Join(t.TempDir(), "ws")
	os.Mkdir(ws, 0o700)
	r, err := inspectRepo(context.Background(), repo)
	if err != nil {
		t.Fatal(err)
	}
	if err := cloneInto(context.Background(), r, api.Workspace{Path: ws, UID: os.Getuid(), GID: os.Getgid()}, "clauderon/x"); err != nil {
		t.Fatal(err)
	}
	filepath.Walk(filepath.Join(ws, ".git", "objects"), func(p string, fi os.FileInfo, err error) error {
		if err == nil && fi.Mode().IsRegular() {
			if st, ok := fi.Sys().(*syscall.Stat_t); ok && st.Nlink > 1 {
				t.Errorf("%s has %d links: shared with the user's repository", p, st.Nlink)
			}
		}
		return nil
	})
}
