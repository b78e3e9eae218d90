package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

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
//
// The objects are copied, never hard-linked: a hard link would make the
// clone's object files the repository's own inodes, and the agent (running
// as the clone's owner) could rewrite objects of the user's repository.
func cloneInto(ctx context.Context, r repoInfo, ws api.Workspace, branch string) error {
	if _, err := git(ctx, "clone", "--quiet", "--no-hardlinks", "--no-checkout", r.top, ws.Path); err != nil {
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
// repository (as the caller).
//
// The clone is the agent's: it may have rewritten its .git/config, hooks
// and refs. A plain `git fetch <clone>` runs git upload-pack inside the
// clone with the clone's own config, and a git without the 2024
// lazy-fetch fix then runs a command named there (a promisor remote's
// uploadpack) on the host, as the user (as root under sudo). So git never
// runs in the clone: the CLI reads the branch's commit from the clone's
// ref files itself and fetches from a throwaway repository of its own
// whose only link to the clone is objects/info/alternates (object data,
// no config).
func fetchBack(ctx context.Context, se api.Session) error {
	if se.Workspace == "" || se.Repo == "" || se.Branch == "" {
		return nil
	}
	gitDir := filepath.Join(se.Workspace, ".git")
	if _, err := os.Stat(gitDir); errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("the workspace %s is gone", se.Workspace)
	}
	if err := fetchFromClone(ctx, gitDir, se.Repo, se.Branch); err != nil {
		return fmt.Errorf("bringing branch %s back into %s: %w", se.Branch, se.Repo, err)
	}
	return nil
}

func fetchFromClone(ctx context.Context, gitDir, repo, branch string) error {
	if _, err := git(ctx, "check-ref-format", "--branch", branch); err != nil || strings.HasPrefix(branch, "-") {
		return fmt.Errorf("%q is not a branch name", branch)
	}
	objects := filepath.Join(gitDir, "objects")
	if strings.ContainsAny(objects, "\n\r\"") {
		return fmt.Errorf("workspace path %q cannot be named in objects/info/alternates", objects)
	}
	tip, err := readBranchTip(gitDir, branch)
	if err != nil {
		return err
	}
	shim, err := os.MkdirTemp("", "clauderon-fetch-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(shim)
	if _, err := git(ctx, "init", "--quiet", "--bare", shim); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(shim, "objects", "info", "alternates"), []byte(objects+"\n"), 0o644); err != nil {
		return err
	}
	ref := "refs/heads/" + branch
	if _, err := git(ctx, "--git-dir", shim, "update-ref", ref, tip); err != nil {
		return err
	}
	_, err = git(ctx, "-C", repo, "fetch", "--quiet", "--no-recurse-submodules", shim, "+"+ref+":"+ref)
	return err
}

// maxRefFile bounds what readBranchTip reads from the agent's clone.
const maxRefFile = 64 << 20

// readBranchTip returns the commit id branch names in the (untrusted)
// repository gitDir, from its loose ref or packed-refs, reading only
// regular files and never running git there. A symbolic ref is refused.
func readBranchTip(gitDir, branch string) (string, error) {
	ref := "refs/heads/" + branch
	data, err := readRegular(filepath.Join(gitDir, filepath.FromSlash(ref)))
	if err == nil {
		id := strings.TrimSpace(string(data))
		if !isObjectID(id) {
			return "", fmt.Errorf("%s in the workspace is not a plain commit id", ref)
		}
		return id, nil
	}
	if !errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("reading %s in the workspace: %w", ref, err)
	}
	packed, err := readRegular(filepath.Join(gitDir, "packed-refs"))
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return "", fmt.Errorf("reading packed-refs in the workspace: %w", err)
	}
	for _, line := range strings.Split(string(packed), "\n") {
		id, name, ok := strings.Cut(strings.TrimRight(line, "\r"), " ")
		if ok && name == ref && isObjectID(id) {
			return id, nil
		}
	}
	return "", fmt.Errorf("branch %s not found in the workspace", branch)
}

// readRegular reads a regular file (not a symlink, FIFO or device) of at
// most maxRefFile bytes.
func readRegular(path string) ([]byte, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if err != nil {
		if errors.Is(err, syscall.ELOOP) {
			return nil, fmt.Errorf("%s is a symlink", filepath.Base(path))
		}
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() || fi.Size() > maxRefFile {
		return nil, fmt.Errorf("%s is not a regular file of at most %d bytes", filepath.Base(path), maxRefFile)
	}
	return io.ReadAll(io.LimitReader(f, maxRefFile))
}

func isObjectID(s string) bool {
	if len(s) != 40 && len(s) != 64 {
		return false
	}
	for _, c := range s {
		if (c < '0' || c > '9') && (c < 'a' || c > 'f') {
			return false
		}
	}
	return true
}

// invokingUID is the user behind this CLI: under sudo, the one who ran
// sudo.
func invokingUID() string {
	if os.Geteuid() == 0 {
		if u := os.Getenv("SUDO_UID"); u != "" {
			return u
		}
	}
	return strconv.Itoa(os.Getuid())
}
