package audit

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"

	"github.com/clauderon/clauderond/appliance/internal/keyfile"
)

// openFlags never follow a symlink at the audit path (the daemon runs as
// root in a directory its operator's user may once have owned) and never
// block on a FIFO planted there.
const openFlags = os.O_WRONLY | os.O_APPEND | os.O_CREATE | syscall.O_NOFOLLOW | syscall.O_NONBLOCK

// openLocked opens w.path for append with mode 0600. It refuses anything
// but a regular file of the daemon's own with a single link: a symlink
// (O_NOFOLLOW), a FIFO or device, a hard link to some other file, or a file
// someone else owns, so the daemon never appends to or chmods a file it was
// pointed at.
func (w *Writer) openLocked() error {
	if fi, err := os.Stat(filepath.Dir(w.path)); err != nil || !fi.IsDir() {
		return fmt.Errorf("opening audit log: directory %s does not exist", filepath.Dir(w.path))
	}
	f, err := os.OpenFile(w.path, openFlags, 0o600)
	if errors.Is(err, syscall.ELOOP) {
		return fmt.Errorf("opening audit log: %s is a symbolic link; remove it (clauderond creates the file itself)", w.path)
	}
	if err != nil {
		return fmt.Errorf("opening audit log: %w", err)
	}
	fi, err := f.Stat()
	if err == nil {
		err = keyfile.CheckOwnFile(w.path, fi)
	}
	if err == nil && fi.Mode().Perm() != 0o600 {
		err = f.Chmod(0o600)
	}
	if err != nil {
		f.Close()
		return fmt.Errorf("opening audit log %s: %w", w.path, err)
	}
	w.f, w.size = f, fi.Size()+int64(len(w.buf))
	return nil
}

// rotateLocked closes the current file and shifts path → path.1 → … →
// path.N (each step an atomic rename; path.N is removed), then opens a
// fresh path.
func (w *Writer) rotateLocked() error {
	if err := w.syncLocked(); err != nil {
		return err
	}
	if err := w.f.Close(); err != nil {
		return fmt.Errorf("closing audit log for rotation: %w", err)
	}
	shiftErr := w.shiftBackups()
	if err := w.openLocked(); err != nil {
		return errors.Join(shiftErr, err)
	}
	if shiftErr == nil {
		prev := ""
		if w.opts.MaxBackups >= 0 {
			prev = filepath.Base(backupName(w.path, 1))
		}
		w.chainStartLocked(ChainStartRotation, prev, "")
		w.rotations.Add(1)
		w.logger.Info("audit log rotated", "path", w.path, "backups", max(w.opts.MaxBackups, 0))
	}
	return shiftErr
}

func (w *Writer) shiftBackups() error {
	if w.opts.MaxBackups < 0 {
		return ignoreNotExist(os.Remove(w.path))
	}
	n := w.opts.MaxBackups
	if err := ignoreNotExist(os.Remove(backupName(w.path, n))); err != nil {
		return fmt.Errorf("rotating audit log: %w", err)
	}
	for i := n - 1; i >= 1; i-- {
		if err := ignoreNotExist(os.Rename(backupName(w.path, i), backupName(w.path, i+1))); err != nil {
			return fmt.Errorf("rotating audit log: %w", err)
		}
	}
	if err := os.Rename(w.path, backupName(w.path, 1)); err != nil {
		return fmt.Errorf("rotating audit log: %w", err)
	}
	return nil
}

func backupName(path string, i int) string { return fmt.Sprintf("%s.%d", path, i) }

func ignoreNotExist(err error) error {
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	return err
}

// reopenIfMovedLocked starts a new file at path when the open one was
// renamed or removed behind the writer's back (logrotate, an operator), so
// later records land where readers look. The old file is fsynced first.
func (w *Writer) reopenIfMovedLocked() {
	cur, err := os.Stat(w.path)
	if err == nil {
		if open, ferr := w.f.Stat(); ferr == nil && os.SameFile(cur, open) {
			return
		}
	} else if !errors.Is(err, fs.ErrNotExist) {
		return
	}
	if err := w.syncLocked(); err != nil {
		w.logIOError("syncing moved audit log", err)
	}
	old := w.f
	if err := w.openLocked(); err != nil {
		w.logIOError("reopening moved audit log", err)
		return
	}
	old.Close()
	w.chainStartLocked(ChainStartMoved, "", filepath.Base(w.path)+" was moved or removed while the daemon ran; the lines before this one are not in this file")
	w.logger.Info("audit log was moved or removed; writing a new one", "path", w.path)
}
