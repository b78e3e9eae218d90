package session

import (
	"context"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"syscall"
	"testing"

	"github.com/clauderon/clauderond/appliance/api"
)

// workspaceManager is newManager with a WorkspacesDir of the test's own.
func workspaceManager(t *testing.T, d *fakeDocker) (*Manager, string) {
	t.Helper()
	m := newManager(t, d, stateDir(t))
	m.opts.WorkspacesDir = filepath.Join(t.TempDir(), "workspaces")
	return m, m.opts.WorkspacesDir
}

func asPeer(uid, gid uint32) context.Context {
	return api.WithPeer(context.Background(), api.Peer{UID: uid, GID: gid, PID: 1})
}

// TestWorkspace_PrepareThenCreateMountsTheCloneAsItsOwner: the directory
// is made for the caller, and the session mounts it read-write at the
// workdir and runs the agent as its owner.
func TestWorkspace_PrepareThenCreateMountsTheCloneAsItsOwner(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("chown to another uid needs root")
	}
	d := newFakeDocker()
	m, root := workspaceManager(t, d)
	ctx := asPeer(4242, 4343)
	ws, err := m.PrepareWorkspace(ctx, "job")
	if err != nil {
		t.Fatal(err)
	}
	if ws.Path != filepath.Join(root, "job") || ws.UID != 4242 || ws.GID != 4343 {
		t.Fatalf("workspace = %+v", ws)
	}
	fi, _ := os.Stat(root)
	if fi.Mode().Perm() != workspacesMode {
		t.Errorf("workspaces dir mode %o, want %o", fi.Mode().Perm(), workspacesMode)
	}
	if out, err := exec.Command("git", "init", "-q", ws.Path).CombinedOutput(); err != nil {
		t.Fatalf("git init: %v %s", err, out)
	}
	exec.Command("chown", "-R", "4242:4343", ws.Path).Run()
	se, err := m.Create(ctx, api.CreateRequest{Name: "job", Prompt: "p", Workspace: ws.Path, Repo: "/home/u/app", Branch: "clauderon/job"})
	if err != nil {
		t.Fatal(err)
	}
	if se.User != "4242:4343" || se.Branch != "clauderon/job" || se.Repo != "/home/u/app" || se.Workspace != ws.Path {
		t.Errorf("session = %+v", se)
	}
	c, _ := d.find(ContainerName("job"))
	if c.cfg.User != "4242:4343" {
		t.Errorf("agent runs as %q, want the clone's owner", c.cfg.User)
	}
	found := false
	for _, mnt := range c.hc.Mounts {
		if mnt.Target == "/workspace" {
			found = mnt.Source == ws.Path && !mnt.ReadOnly
		}
		if strings.HasPrefix(mnt.Source, "/home/u/app") {
			t.Errorf("the user's repository is mounted: %+v", mnt)
		}
	}
	if !found {
		t.Errorf("the clone is not mounted read-write at /workspace: %+v", c.hc.Mounts)
	}
	if list, _ := m.List(context.Background()); len(list) != 1 || list[0].Branch != "clauderon/job" {
		t.Errorf("List = %+v, want the repo and branch recorded", list)
	}
	if err := m.Remove(context.Background(), "job"); err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(ws.Path); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("workspace after rm: %v, want it gone", err)
	}
}

// TestWorkspace_RefusesWhatIsNotThePreparedClone: another path, a
// replaced directory, a directory without a repository, a root-owned one.
func TestWorkspace_RefusesWhatIsNotThePreparedClone(t *testing.T) {
	d := newFakeDocker()
	m, root := workspaceManager(t, d)
	ctx := asPeer(uint32(os.Getuid()), uint32(os.Getgid()))
	if os.Geteuid() == 0 {
		ctx = asPeer(4242, 4242)
	}
	if _, err := m.PrepareWorkspace(ctx, "a"); err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, ws, want string
		setup          func()
	}{
		{"elsewhere", "/home/u/app", "not the one prepared", nil},
		{"another session's", filepath.Join(root, "b"), "not the one prepared", nil},
		{"no repository", filepath.Join(root, "a"), "holds no git repository", nil},
		{"replaced by a symlink", filepath.Join(root, "a"), "must be a directory", func() {
			os.RemoveAll(filepath.Join(root, "a"))
			os.Symlink("/etc", filepath.Join(root, "a"))
		}},
	} {
		if tc.setup != nil {
			tc.setup()
		}
		_, err := m.Create(ctx, api.CreateRequest{Name: "a", Prompt: "p", Workspace: tc.ws})
		if err == nil || !strings.Contains(err.Error(), tc.want) || !errors.Is(err, api.ErrInvalid) {
			t.Errorf("%s: err = %v, want %q", tc.name, err, tc.want)
		}
	}
	if len(d.containers) != 0 {
		t.Errorf("containers were created: %d", len(d.containers))
	}
}

// TestCheckRootOwnedPath: a workspaces dir under a directory another user
// can write (so could swap) is refused, and so is a symlinked one.
func TestCheckRootOwnedPath(t *testing.T) {
	base := t.TempDir()
	good := filepath.Join(base, "ok")
	os.Mkdir(good, 0o755)
	if err := checkRootOwnedPath(good); err != nil {
		t.Errorf("a private path: %v", err)
	}
	open := filepath.Join(base, "open")
	os.Mkdir(open, 0o777)
	os.Chmod(open, 0o777)
	if err := checkRootOwnedPath(filepath.Join(open)); err == nil || !strings.Contains(err.Error(), "writable by group or others") {
		t.Errorf("a world-writable path: %v", err)
	}
	link := filepath.Join(base, "link")
	os.Symlink(good, link)
	if err := checkRootOwnedPath(link); err == nil || !strings.Contains(err.Error(), "not a directory") {
		t.Errorf("a symlink: %v", err)
	}
	if os.Geteuid() == 0 {
		other := filepath.Join(base, "other")
		os.Mkdir(other, 0o755)
		os.Chown(other, 4242, 4242)
		if err := checkRootOwnedPath(filepath.Join(other)); err == nil || !strings.Contains(err.Error(), "belongs to uid 4242") {
			t.Errorf("a path another user owns: %v", err)
		}
	}
}

func TestControl_StopStartRestart(t *testing.T) {
	d := newFakeDocker()
	m := newManager(t, d, stateDir(t))
	ctx := context.Background()
	if _, err := m.Create(ctx, api.CreateRequest{Name: "s", Prompt: "p"}); err != nil {
		t.Fatal(err)
	}
	for _, step := range []struct{ action, want string }{
		{api.ActionStop, "exited"}, {api.ActionStart, "running"}, {api.ActionRestart, "running"}, {api.ActionStop, "exited"},
	} {
		se, err := m.Control(ctx, "s", step.action)
		if err != nil || se.State != step.want {
			t.Fatalf("%s: %+v %v, want %s", step.action, se, err, step.want)
		}
	}
	if _, err := m.Control(ctx, "nope", api.ActionStop); !errors.Is(err, api.ErrNotFound) {
		t.Errorf("unknown session: %v", err)
	}
	if _, err := m.Control(ctx, "s", "pause"); !errors.Is(err, api.ErrInvalid) {
		t.Errorf("unknown action: %v", err)
	}
}

// TestClaudeJSON_TemplateKeptAndDialogsSkipped: the operator's edits to
// state_dir/claude.json reach every container, with the keys that keep
// an interactive --dangerously-skip-permissions session out of dialogs
// added unless the template sets them.
func TestClaudeJSON_TemplateKeptAndDialogsSkipped(t *testing.T) {
	got, err := claudeJSONFor([]byte(`{"theme":"dark","bypassPermissionsModeAccepted":false,"projects":{"/other":{"x":1}}}`), "/workspace")
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`"theme": "dark"`, `"bypassPermissionsModeAccepted": false`, `"hasCompletedOnboarding": true`,
		`"/workspace": {`, `"hasTrustDialogAccepted": true`, `"hasCompletedProjectOnboarding": true`, `"/other"`} {
		if !strings.Contains(string(got), want) {
			t.Errorf("claude.json lacks %s:\n%s", want, got)
		}
	}
	got, err = claudeJSONFor([]byte("not json"), "/workspace")
	if err == nil || !strings.Contains(string(got), `"bypassPermissionsModeAccepted": true`) {
		t.Errorf("a broken template: %v\n%s", err, got)
	}
}

func TestRunArgs_UserAndItsClaudeJSON(t *testing.T) {
	m := newManager(t, newFakeDocker(), stateDir(t))
	ra, err := m.RunArgs(context.Background(), api.RunRequest{User: "1001:1002"})
	if err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(strings.Join(ra.Args, " "), "--user 1001:1002") {
		t.Errorf("RunArgs = %v, want --user 1001:1002", ra.Args)
	}
	if os.Geteuid() == 0 {
		fi, err := os.Stat(runArgsClaudeJSON(t, ra.Args))
		if err != nil {
			t.Fatal(err)
		}
		if st := fi.Sys().(*syscall.Stat_t); st.Uid != 1001 || st.Gid != 1002 {
			t.Errorf("the run's claude.json belongs to %d:%d, want the run's user 1001:1002", st.Uid, st.Gid)
		}
	}
	if _, err := m.RunArgs(context.Background(), api.RunRequest{User: "0"}); !errors.Is(err, api.ErrInvalid) {
		t.Errorf("RunArgs as root: %v, want refused", err)
	}
}

// TestWorkspace_AnotherTenantCannotSwapTheWorkspace: between alice's
// PrepareWorkspace and her Create (the clone takes a while), bob asked for
// a workspace of the same name. The leftover was replaced by a directory
// of bob's, and alice's session then ran (with her profile) as bob on
// content bob controls and reads.
func TestWorkspace_AnotherTenantCannotSwapTheWorkspace(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("chown to another uid needs root")
	}
	d := newFakeDocker()
	m, _ := workspaceManager(t, d)
	alice, bob := asPeer(4242, 4242), asPeer(5353, 5353)
	ws, err := m.PrepareWorkspace(alice, "job")
	if err != nil {
		t.Fatal(err)
	}
	initAs := func(dir, owner string) {
		if out, err := exec.Command("git", "init", "-q", dir).CombinedOutput(); err != nil {
			t.Fatalf("git init: %v %s", err, out)
		}
		exec.Command("chown", "-R", owner, dir).Run()
	}
	initAs(ws.Path, "4242:4242")
	if _, err := m.PrepareWorkspace(bob, "job"); err == nil {
		initAs(ws.Path, "5353:5353") // bob fills the directory he got
	}
	se, err := m.Create(alice, api.CreateRequest{Name: "job", Prompt: "p", Workspace: ws.Path, Branch: "clauderon/job"})
	if err == nil && se.User != "4242:4242" {
		t.Fatalf("alice's session runs as %s on bob's directory", se.User)
	}
	if err != nil {
		t.Fatalf("alice's own workspace was refused: %v", err)
	}
	// And a directory of bob's under alice's name is refused outright.
	m2, root2 := workspaceManager(t, newFakeDocker())
	if _, err := m2.PrepareWorkspace(bob, "x"); err != nil {
		t.Fatal(err)
	}
	initAs(filepath.Join(root2, "x"), "5353:5353")
	if _, err := m2.Create(alice, api.CreateRequest{Name: "x", Prompt: "p", Workspace: filepath.Join(root2, "x")}); err == nil || !errors.Is(err, api.ErrInvalid) {
		t.Errorf("alice's session on bob's workspace: %v, want a refusal", err)
	}
}
