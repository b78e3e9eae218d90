package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/clauderon/clauderond/appliance/api"
)

// A repository session works on a clone of the user's repository in a
// directory the daemon prepares (root-owned parent, so nobody can swap the
// mount source), never on the repository itself: its .git, hooks and
// config stay out of the container. The CLI does the git work as the user
// who runs it: clone, branch, and fetching the session's branch back.

// repoInfo is the repository a session starts from.
type repoInfo struct {
	top  string // work tree root
	head string // commit the session starts at
}

// git runs git with args; the error carries git's own message.
func git(ctx context.Context, args ...string) (string, error) {
	cmd := exec.CommandContext(ctx, "git", args...)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	if err := cmd.Run(); err != nil {
		msg := strings.TrimSpace(errb.String())
		if msg == "" {
			msg = err.Error()
		}
		return "", fmt.Errorf("git %s: %s", strings.Join(args, " "), msg)
	}
	return strings.TrimSpace(out.String()), nil
}

// inspectRepo checks path is a git work tree with a commit and no
// uncommitted changes to tracked files (they would not reach the session).
func inspectRepo(ctx context.Context, path string) (repoInfo, error) {
	abs, err := filepath.Abs(path)
	if err != nil {
		return repoInfo{}, err
	}
	if fi, err := os.Stat(abs); err != nil || !fi.IsDir() {
		return repoInfo{}, fmt.Errorf("--repo %s: not a directory", abs)
	}
	top, err := git(ctx, "-C", abs, "rev-parse", "--show-toplevel")
	if err != nil {
		return repoInfo{}, fmt.Errorf("--repo %s is not a git repository (or git is not installed): %w", abs, err)
	}
	head, err := git(ctx, "-C", top, "rev-parse", "--verify", "HEAD^{commit}")
	if err != nil {
		return repoInfo{}, fmt.Errorf("repository %s has no commit yet; commit something first", top)
	}
	dirty, err := git(ctx, "-C", top, "status", "--porcelain", "--untracked-files=no")
	if err != nil {
		return repoInfo{}, err
	}
	if dirty != "" {
		return repoInfo{}, fmt.Errorf("repository %s has uncommitted changes; the session starts from a commit, so commit or stash them first:\n%s", top, dirty)
	}
	return repoInfo{top: top, head: head}, nil
}

// cloneInto clones repo at its HEAD into ws (the empty directory the daemon
// prepared), on branch clauderon/<name>, with the user's git identity, an
// uploads directory and /.clauderon/ ignored. A root caller hands the clone
// to the workspace's owner.
func cloneInto(ctx context.Context, r repoInfo, ws api.Workspace, branch string) error {
	if _, err := git(ctx, "clone", "--quiet", "--local", "--no-checkout", r.top, ws.Path); err != nil {
		return err
	}
	// As root the clone sits in a directory that already belongs to the
	// session's user, which git calls dubious ownership; it is ours.
	inWS := []string{"-C", ws.Path}
	if os.Geteuid() == 0 {
		inWS = append(inWS, "-c", "safe.directory="+ws.Path)
	}
	if _, err := git(ctx, append(inWS, "checkout", "--quiet", "-b", branch, r.head)...); err != nil {
		return err
	}
	for _, k := range []string{"user.name", "user.email"} {
		v, _ := git(ctx, "-C", r.top, "config", k)
		if v == "" {
			v = map[string]string{"user.name": "clauderon agent", "user.email": "agent@clauderon.invalid"}[k]
		}
		if _, err := git(ctx, append(inWS, "config", k, v)...); err != nil {
			return err
		}
	}
	if err := os.MkdirAll(filepath.Join(ws.Path, ".clauderon", "uploads"), 0o755); err != nil {
		return fmt.Errorf("creating the uploads directory in the workspace: %w", err)
	}
	f, err := os.OpenFile(filepath.Join(ws.Path, ".git", "info", "exclude"), os.O_APPEND|os.O_CREATE|os.O_WRONLY, 0o644)
	if err != nil {
		return fmt.Errorf("ignoring .clauderon/ in the workspace: %w", err)
	}
	_, err = f.WriteString("/.clauderon/\n")
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return err
	}
	if os.Geteuid() == 0 {
		if out, err := exec.CommandContext(ctx, "chown", "-R", strconv.Itoa(ws.UID)+":"+strconv.Itoa(ws.GID), ws.Path).CombinedOutput(); err != nil {
			return fmt.Errorf("giving the workspace to uid %d: %v: %s", ws.UID, err, out)
		}
	}
	return nil
}

// fetchBack brings the session's branch from its workspace into the
// repository (as the caller). A root caller reads another user's clone,
// which git refuses unless told it is safe.
func fetchBack(ctx context.Context, se api.Session) error {
	if se.Workspace == "" || se.Repo == "" || se.Branch == "" {
		return nil
	}
	if _, err := os.Stat(filepath.Join(se.Workspace, ".git")); errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("the workspace %s is gone", se.Workspace)
	}
	args := []string{"-C", se.Repo, "fetch", "--quiet"}
	if os.Geteuid() == 0 {
		// git drops -c settings for the local upload-pack it spawns, so
		// the exception goes on that command itself.
		args = append(args, "--upload-pack", "git -c safe.directory='*' upload-pack")
	}
	args = append(args, se.Workspace, "+"+se.Branch+":"+se.Branch)
	if _, err := git(ctx, args...); err != nil {
		return fmt.Errorf("bringing branch %s back into %s: %w", se.Branch, se.Repo, err)
	}
	return nil
}
