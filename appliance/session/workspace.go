package session

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"

	"github.com/clauderon/clauderond/appliance/api"
)

// A session created with --repo works on a clone of the caller's
// repository that lives in WorkspacesDir/<name>, not on the repository
// itself, and that clone is the only host directory mounted read-write:
//
//   - The mount source is a path only root can change: WorkspacesDir and
//     every parent belong to root and are writable by nobody else, and
//     <name> (owned by the caller, who fills it) cannot be renamed or
//     replaced by the caller because its parent is root's. A source under
//     the caller's own directories could be swapped for a symlink to the
//     state dir between the daemon's check and Docker's mount (or before
//     any later restart), and the agent would read the real secrets.
//   - The caller's repository, its .git, hooks and config are never mounted:
//     an agent cannot plant a hook that runs on the host at the user's next
//     git command. The CLI fetches the session's branch back into the
//     repository (clauderon/<name>), as the user, when a print session ends
//     and on `clauderon rm`.
//
// The clone belongs to the caller (uid and gid from SO_PEERCRED), and the
// agent runs as that user so git and the agent can write there. A root
// caller's clone goes to sessions.user.

// workspacesMode is WorkspacesDir's mode: others may traverse to their
// own clone, not list or write.
const workspacesMode = 0o711

// workspaceOwner is who a caller's clone belongs to.
func (m *Manager) workspaceOwner(ctx context.Context) (uid, gid int, err error) {
	if p, ok := api.PeerFrom(ctx); ok && p.UID != 0 {
		return int(p.UID), int(p.GID), nil
	}
	uid, gid, ok := numericIDs(m.opts.User)
	if !ok {
		return 0, 0, fmt.Errorf("sessions.user %q is a name; a root caller's repository session needs uid:gid (e.g. 1000:1000): %w", m.opts.User, api.ErrInvalid)
	}
	return uid, gid, nil
}

// PrepareWorkspace creates the empty directory WorkspacesDir/<name>, owned
// by the caller, for the caller to clone its repository into; Create then
// mounts it. A leftover directory of that name without a session (a create
// that failed) is replaced.
func (m *Manager) PrepareWorkspace(ctx context.Context, name string) (api.Workspace, error) {
	if !nameRE.MatchString(name) {
		return api.Workspace{}, fmt.Errorf("session name %q must be 1-63 of a-z A-Z 0-9 _ . - starting with a letter or digit: %w", name, api.ErrInvalid)
	}
	uid, gid, err := m.workspaceOwner(ctx)
	if err != nil {
		return api.Workspace{}, err
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if _, err := m.st.get(ctx, name); err == nil {
		return api.Workspace{}, fmt.Errorf("session %q: %w (remove it with: clauderon rm %s)", name, api.ErrConflict, name)
	}
	root, err := m.openWorkspaces()
	if err != nil {
		return api.Workspace{}, err
	}
	defer root.Close()
	// A leftover that is another user's may be a clone that user is
	// filling right now (PrepareWorkspace, then Create): replacing it
	// would hand their session a directory of ours.
	if fi, err := root.Lstat(name); err == nil {
		if st, ok := fi.Sys().(*syscall.Stat_t); ok && int(st.Uid) != uid && st.Uid != 0 {
			return api.Workspace{}, fmt.Errorf("workspace %s is being prepared by another user: %w", filepath.Join(m.opts.WorkspacesDir, name), api.ErrConflict)
		}
	}
	if err := root.RemoveAll(name); err != nil {
		return api.Workspace{}, fmt.Errorf("removing a leftover workspace %s: %w", filepath.Join(m.opts.WorkspacesDir, name), err)
	}
	if err := root.Mkdir(name, 0o700); err != nil {
		return api.Workspace{}, fmt.Errorf("creating workspace %s: %w", filepath.Join(m.opts.WorkspacesDir, name), err)
	}
	if err := root.Lchown(name, uid, gid); err != nil {
		return api.Workspace{}, fmt.Errorf("giving workspace %s to uid %d: %w", filepath.Join(m.opts.WorkspacesDir, name), uid, err)
	}
	return api.Workspace{Path: filepath.Join(m.opts.WorkspacesDir, name), UID: uid, GID: gid}, nil
}

// openWorkspaces creates WorkspacesDir when missing and opens it after
// checking it and its parents (see checkRootOwnedPath).
func (m *Manager) openWorkspaces() (*os.Root, error) {
	dir := m.opts.WorkspacesDir
	if dir == "" {
		return nil, fmt.Errorf("sessions.workspaces_dir is not set: %w", api.ErrUnavailable)
	}
	if err := os.MkdirAll(dir, workspacesMode); err != nil {
		return nil, fmt.Errorf("creating sessions.workspaces_dir %s: %w", dir, err)
	}
	if err := os.Chmod(dir, workspacesMode); err != nil {
		return nil, fmt.Errorf("chmod %o %s: %w", workspacesMode, dir, err)
	}
	if err := checkRootOwnedPath(dir); err != nil {
		return nil, err
	}
	return os.OpenRoot(dir)
}

// checkRootOwnedPath accepts dir when it and every parent are real
// directories owned by the daemon's user (root) and not writable by group
// or others (sticky directories such as /tmp excepted: nobody can rename
// another's entry there).
func checkRootOwnedPath(dir string) error {
	for d := filepath.Clean(dir); ; d = filepath.Dir(d) {
		fi, err := os.Lstat(d)
		if err != nil {
			return fmt.Errorf("sessions.workspaces_dir %s: %w", dir, err)
		}
		st, ok := fi.Sys().(*syscall.Stat_t)
		switch {
		case !fi.IsDir():
			return fmt.Errorf("sessions.workspaces_dir %s: %s is not a directory (a symlink?); use a path of real directories: %w", dir, d, api.ErrInvalid)
		case ok && int(st.Uid) != os.Geteuid():
			return fmt.Errorf("sessions.workspaces_dir %s: %s belongs to uid %d, who could swap a session's mount for another directory; use a path owned by root, e.g. /var/lib/clauderon-workspaces: %w", dir, d, st.Uid, api.ErrInvalid)
		case fi.Mode().Perm()&0o022 != 0 && fi.Mode()&fs.ModeSticky == 0:
			return fmt.Errorf("sessions.workspaces_dir %s: %s is writable by group or others (mode %04o); use a path nobody but root can write: %w", dir, d, fi.Mode().Perm(), api.ErrInvalid)
		}
		if d == "/" {
			return nil
		}
	}
}

// workspaceFor checks a create request's workspace: it must be the
// directory PrepareWorkspace made for this session, still a directory
// (not replaced), owned by a non-root user, who the agent then runs as.
func (m *Manager) workspaceFor(ctx context.Context, req api.CreateRequest) (user string, err error) {
	want := filepath.Join(m.opts.WorkspacesDir, req.Name)
	if req.Workspace != want {
		return "", fmt.Errorf("workspace %q is not the one prepared for session %s (%s); let clauderon create --repo prepare it: %w", req.Workspace, req.Name, want, api.ErrInvalid)
	}
	if err := checkRootOwnedPath(m.opts.WorkspacesDir); err != nil {
		return "", err
	}
	fi, err := os.Lstat(want)
	if errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("workspace %s does not exist; let clauderon create --repo prepare it: %w", want, api.ErrInvalid)
	}
	if err != nil {
		return "", fmt.Errorf("workspace %s: %w", want, err)
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !fi.IsDir() || !ok || st.Uid == 0 {
		return "", fmt.Errorf("workspace %s must be a directory owned by a non-root user: %w", want, api.ErrInvalid)
	}
	// The caller's own (PrepareWorkspace made it for them): another
	// user's directory under this name would run the caller's session,
	// with the caller's profile, on content that user controls and reads.
	uid, _, err := m.workspaceOwner(ctx)
	if err != nil {
		return "", err
	}
	if int(st.Uid) != uid {
		return "", fmt.Errorf("workspace %s belongs to uid %d, not to the caller (uid %d); let clauderon create --repo prepare it: %w", want, st.Uid, uid, api.ErrInvalid)
	}
	if _, err := os.Lstat(filepath.Join(want, ".git")); err != nil {
		return "", fmt.Errorf("workspace %s holds no git repository (clone failed?): %w", want, api.ErrInvalid)
	}
	if req.Branch != "" && req.Branch != BranchName(req.Name) {
		return "", fmt.Errorf("branch %q: repository sessions work on %s: %w", req.Branch, BranchName(req.Name), api.ErrInvalid)
	}
	return strconv.Itoa(int(st.Uid)) + ":" + strconv.Itoa(int(st.Gid)), nil
}

// BranchName is the branch a repository session works on.
func BranchName(session string) string { return "clauderon/" + session }

// removeWorkspace deletes WorkspacesDir/<name> (never following a symlink
// out of it). A missing directory is fine.
func (m *Manager) removeWorkspace(name string) {
	if m.opts.WorkspacesDir == "" || strings.ContainsAny(name, "/\x00") || name == "" {
		return
	}
	root, err := os.OpenRoot(m.opts.WorkspacesDir)
	if err != nil {
		if !errors.Is(err, fs.ErrNotExist) {
			m.log.Warn("removing workspace", "session", name, "err", err)
		}
		return
	}
	defer root.Close()
	if err := root.RemoveAll(name); err != nil {
		m.log.Warn("removing workspace", "session", name, "err", err)
	}
}
