// Package keyfile reads and creates the daemon's small secret key files in
// the state dir (audit.key, placeholder.key). A key file is created with
// random bytes, 0600, never over an existing file; it is read without
// following a symlink or blocking on a FIFO, and refused — with what to do —
// when it is not a regular singly linked file of the daemon's user, when
// group or others may read it (whoever read it holds the secret), or when it
// has the wrong size. It only handles bytes: the callers own what the key
// means and how it hides when printed.
package keyfile

import (
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"syscall"
)

// Spec describes a key file for its checks and messages.
type Spec struct {
	Name    string // e.g. "audit key"
	Size    int    // bytes
	Exposed string // what someone who read it could do, e.g. "could forge audit lines"
	Reset   string // what removing it does, e.g. "a new chain starts, visibly"
}

// LoadOrCreate reads the key at path, creating it when missing (a file
// another process created meanwhile is read instead).
func LoadOrCreate(path string, s Spec) ([]byte, error) {
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	if errors.Is(err, fs.ErrNotExist) {
		b, err := create(path, s)
		if errors.Is(err, fs.ErrExist) {
			return LoadOrCreate(path, s)
		}
		return b, err
	}
	if errors.Is(err, syscall.ELOOP) {
		return nil, fmt.Errorf("%s %s is a symbolic link; remove it (clauderond creates the key itself)", s.Name, path)
	}
	if err != nil {
		return nil, fmt.Errorf("opening %s: %w", s.Name, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err == nil {
		err = CheckOwnFile(path, fi)
	}
	if err != nil {
		return nil, fmt.Errorf("opening %s: %w", s.Name, err)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("%s %s has mode %v: others may have read it and %s; remove it (%s) or `chmod 600 %s` if you are sure it was not read",
			s.Name, path, fi.Mode().Perm(), s.Exposed, s.Reset, path)
	}
	b := make([]byte, s.Size+1)
	n, err := io.ReadFull(f, b)
	if n != s.Size || (err != io.ErrUnexpectedEOF && err != nil) {
		return nil, fmt.Errorf("%s %s is not %d bytes; remove it (%s)", s.Name, path, s.Size, s.Reset)
	}
	return b[:s.Size], nil
}

func create(path string, s Spec) ([]byte, error) {
	b := make([]byte, s.Size)
	if _, err := rand.Read(b); err != nil {
		return nil, fmt.Errorf("creating %s: %w", s.Name, err)
	}
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		return nil, fmt.Errorf("creating %s: %w", s.Name, err)
	}
	_, err = f.Write(b)
	if err == nil {
		err = f.Chmod(0o600) // whatever the umask
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
		return nil, fmt.Errorf("creating %s %s: %w", s.Name, path, err)
	}
	return b, nil
}

// CheckOwnFile accepts a regular file with one link owned by the daemon's
// user.
func CheckOwnFile(path string, fi fs.FileInfo) error {
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("%s is not a regular file (%v); remove it", path, fi.Mode().Type())
	}
	st, ok := fi.Sys().(*syscall.Stat_t)
	if !ok {
		return nil
	}
	if int(st.Uid) != os.Geteuid() {
		return fmt.Errorf("%s belongs to uid %d, not to the daemon's user (uid %d); remove it or `chown %d %s`", path, st.Uid, os.Geteuid(), os.Geteuid(), path)
	}
	if st.Nlink > 1 {
		return fmt.Errorf("%s has %d hard links (it may be another file); remove it", path, st.Nlink)
	}
	return nil
}
