package appliance

import (
	"context"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"time"
)

// The state dir's parents. A state dir is only as safe as the path to it:
// whoever may write a directory on that path can rename the state dir (or
// a parent) away and put a directory of their own in its place, and later
// opens by path would land there. The default under sudo,
// ~SUDO_USER/.clauderon, is such a path (SUDO_USER owns their home). The
// daemon therefore pins the state dir it checked at start (an open
// descriptor) and, when the path is swappable, compares the two every
// second: a swap stops the daemon, and the rules stay in place (fail
// closed) until someone looks. /var/lib/clauderon has no such parent.

// swappableBy returns why dir could be replaced by someone other than the
// daemon's user (uid), or "" when every directory above it is the
// daemon's or root's and writable by nobody else (sticky directories such
// as /tmp are fine when the entry below them is ours).
func swappableBy(dir string, uid int) string {
	dir = filepath.Clean(dir)
	for d := filepath.Dir(dir); ; d = filepath.Dir(d) {
		fi, err := os.Stat(d)
		if err != nil {
			return fmt.Sprintf("%s cannot be checked: %v", d, err)
		}
		owner, _ := fileOwner(fi)
		perm := fi.Mode().Perm()
		sticky := fi.Mode()&fs.ModeSticky != 0
		switch {
		case owner != 0 && owner != uid:
			return fmt.Sprintf("%s belongs to uid %d, who can rename what is in it", d, owner)
		case perm&0o022 != 0 && !sticky:
			return fmt.Sprintf("%s is writable by group or others (mode %#o)", d, perm)
		}
		if d == "/" {
			return ""
		}
	}
}

// statePin holds the state dir checked at start.
type statePin struct {
	dir string
	f   *os.File
}

// pinStateDir opens dir and checks what it opened (not the path, which
// prepareStateDir checked a moment earlier and which could have been
// swapped since): it must be the daemon's user's and writable by nobody
// else, or the pin would hold the swapped-in directory for good.
func pinStateDir(dir string) (*statePin, error) {
	f, err := os.OpenFile(dir, os.O_RDONLY|syscall.O_DIRECTORY|syscall.O_NOFOLLOW, 0)
	if err != nil {
		return nil, fmt.Errorf("opening state dir %s: %w", dir, err)
	}
	fi, err := f.Stat()
	if err != nil {
		f.Close()
		return nil, fmt.Errorf("opening state dir %s: %w", dir, err)
	}
	uid := os.Geteuid()
	if owner, ok := fileOwner(fi); !ok || owner != uid || fi.Mode().Perm()&0o022 != 0 {
		f.Close()
		return nil, fmt.Errorf("state dir %s changed while the daemon checked it: it now belongs to uid %d (mode %#o), not to the daemon's user (uid %d); "+
			"someone may have swapped it. Check who did it, then point state_dir at a path only root can change, e.g. /var/lib/clauderon",
			dir, owner, fi.Mode().Perm(), uid)
	}
	return &statePin{dir: dir, f: f}, nil
}

// replaced reports whether the path no longer names the pinned directory.
func (p *statePin) replaced() error {
	pinned, err := p.f.Stat()
	if err != nil {
		return fmt.Errorf("state dir %s: %w", p.dir, err)
	}
	cur, err := os.Lstat(p.dir)
	if err != nil || !os.SameFile(pinned, cur) {
		return fmt.Errorf("state dir %s was replaced or removed while the daemon ran (someone renamed it or a parent); "+
			"stopping so that nothing is written to or read from the new one; the rules stay in place. "+
			"Check who did it, then point state_dir at a path only root can change, e.g. /var/lib/clauderon", p.dir)
	}
	return nil
}

// watch checks the pin every interval until ctx ends; a swap is an error
// that stops the daemon.
func (p *statePin) watch(ctx context.Context, interval time.Duration) error {
	return everyTick(ctx, interval, nil, func() (bool, error) { return false, p.replaced() })
}

// everyTick calls f every interval, and whenever kick receives (a nil kick
// never does), until ctx ends (nil), f says it is done (nil) or f fails
// (its error).
func everyTick(ctx context.Context, interval time.Duration, kick <-chan struct{}, f func() (done bool, err error)) error {
	t := time.NewTicker(interval)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-t.C:
		case <-kick:
		}
		if done, err := f(); done || err != nil {
			return err
		}
	}
}
