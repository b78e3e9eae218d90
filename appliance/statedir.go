package appliance

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"

	"github.com/clauderon/clauderond/tlsmitm/localca"
)

// prepareStateDir creates the state dir (0700) and secrets/ (0700) if
// missing, and refuses to start when the daemon could be steered by someone
// else through them, naming the command that fixes it:
//
//   - the state dir must belong to the daemon's user (root when it runs as
//     root) and not be writable by group or others: the daemon creates,
//     appends to, chmods and renames files in it (audit.jsonl, its
//     rotations, session files), so whoever may add entries there could
//     plant a symlink and have root write through it;
//   - secrets/ and the CA key must belong to the daemon's user and be
//     private (no group or other access at all).
//
// Under sudo the default state_dir is SUDO_USER's ~/.clauderon. When
// missing it is created here by the daemon, so it is root's, mode 0700;
// one created earlier by that user is refused until it is chowned to root.
// Group or other read/search on the state dir is allowed (the API socket
// lives in it and may be shared with socket.group), write is not.
func prepareStateDir(dir string) error {
	if dir == "" {
		return errors.New("state_dir is empty; set state_dir in the config or CLAUDERON_STATE_DIR")
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("creating state dir %s: %w", dir, err)
	}
	if err := checkStateDirOwner(dir, os.Geteuid()); err != nil {
		return err
	}
	secrets := filepath.Join(dir, "secrets")
	if err := os.Mkdir(secrets, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("creating %s: %w", secrets, err)
	}
	for _, p := range []string{secrets, filepath.Join(dir, localca.KeyFile)} {
		if err := checkPrivate(p, os.Geteuid()); err != nil {
			return err
		}
	}
	return nil
}

// checkStateDirOwner refuses dir unless uid owns it and neither group nor
// others may write it.
func checkStateDirOwner(dir string, uid int) error {
	fi, err := os.Stat(dir)
	if err != nil {
		return fmt.Errorf("checking state dir %s: %w", dir, err)
	}
	if !fi.IsDir() {
		return fmt.Errorf("state dir %s is not a directory", dir)
	}
	if owner, ok := fileOwner(fi); ok && owner != uid {
		return fmt.Errorf("state dir %s belongs to uid %d, not to the daemon's user (uid %d), who could steer the daemon's writes there through symlinks; "+
			"run `sudo chown %s %s` (or point state_dir elsewhere, e.g. /var/lib/clauderon), then start clauderond again",
			dir, owner, uid, userSpec(uid), dir)
	}
	if fi.Mode().Perm()&0o022 != 0 {
		return fmt.Errorf("state dir %s is writable by group or others (mode %#o); run `chmod go-w %s`, then start clauderond again",
			dir, fi.Mode().Perm(), dir)
	}
	return nil
}

// checkPrivate refuses p when it is not uid's or group or others have any
// access to it. A missing file is fine (it is created 0600 later). A
// symlink is judged by itself, never followed.
func checkPrivate(p string, uid int) error {
	fi, err := os.Lstat(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("checking %s: %w", p, err)
	}
	if fi.Mode()&fs.ModeSymlink != 0 {
		return fmt.Errorf("%s is a symbolic link; the daemon only uses a real file or directory there: replace it with what it points to, then start clauderond again", p)
	}
	if owner, ok := fileOwner(fi); ok && owner != uid {
		return fmt.Errorf("%s belongs to uid %d, not to the daemon's user (uid %d); run `sudo chown -R %s %s`, then start clauderond again",
			p, owner, uid, userSpec(uid), p)
	}
	if fi.Mode().Perm()&0o077 == 0 {
		return nil
	}
	want := "600"
	if fi.IsDir() {
		want = "700"
	}
	return fmt.Errorf("%s is accessible by group or others (mode %#o); run `chmod %s %s`, then start clauderond again",
		p, fi.Mode().Perm(), want, p)
}

func fileOwner(fi fs.FileInfo) (int, bool) {
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return 0, false
	}
	return int(st.Uid), true
}

// userSpec is what chown should be given for uid.
func userSpec(uid int) string {
	if uid == 0 {
		return "root:root"
	}
	return fmt.Sprint(uid)
}
