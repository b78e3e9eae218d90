package injector

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"strconv"
	"strings"
	"syscall"
)

// maxCredentialsFileSize bounds what one read of the credentials file takes.
const maxCredentialsFileSize = 256 << 10

// readCredentialsFile reads a KEY=value file (systemd EnvironmentFile and
// shell syntax: blank lines, # comments, an optional `export `, values
// optionally in single or double quotes). A missing file is empty. It
// refuses a symbolic link, anything but a regular file, a file another user
// owns, and one that group or others can read or write — and says how to
// fix it. Errors name the file and the line, never a value.
func readCredentialsFile(path string) (map[string]string, error) {
	if path == "" {
		return nil, nil
	}
	f, err := os.OpenFile(path, os.O_RDONLY|syscall.O_NOFOLLOW|syscall.O_NONBLOCK, 0)
	switch {
	case errors.Is(err, fs.ErrNotExist):
		return nil, nil
	case errors.Is(err, syscall.ELOOP):
		return nil, fmt.Errorf("credentials file %s is a symbolic link; put the file itself there", path)
	case err != nil:
		return nil, fmt.Errorf("reading credentials file: %w", err)
	}
	defer f.Close()
	if err := checkPrivateFile(path, f); err != nil {
		return nil, err
	}
	data, err := io.ReadAll(io.LimitReader(f, maxCredentialsFileSize+1))
	if err != nil {
		return nil, fmt.Errorf("reading credentials file %s: %w", path, err)
	}
	if len(data) > maxCredentialsFileSize {
		return nil, fmt.Errorf("credentials file %s is larger than %d bytes", path, maxCredentialsFileSize)
	}
	return parseEnvFile(path, data)
}

// checkPrivateFile accepts a regular file owned by the daemon's user with
// no group or other permission bits.
func checkPrivateFile(path string, f *os.File) error {
	fi, err := f.Stat()
	if err != nil {
		return fmt.Errorf("reading credentials file: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return fmt.Errorf("credentials file %s is not a regular file (%v)", path, fi.Mode().Type())
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && int(st.Uid) != os.Geteuid() {
		return fmt.Errorf("credentials file %s belongs to uid %d, not to the daemon's user (uid %d); run: chown %d %s",
			path, st.Uid, os.Geteuid(), os.Geteuid(), path)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return fmt.Errorf("credentials file %s has mode %04o, open to group or others; run: chmod 600 %s", path, fi.Mode().Perm(), path)
	}
	return nil
}

// parseEnvFile parses KEY=value lines. Later lines win, as in systemd.
func parseEnvFile(path string, data []byte) (map[string]string, error) {
	out := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(data))
	sc.Buffer(make([]byte, 0, 4096), maxCredentialsFileSize)
	for n := 1; sc.Scan(); n++ {
		line := strings.TrimSpace(sc.Text())
		if line == "" || line[0] == '#' || line[0] == ';' {
			continue
		}
		line = strings.TrimPrefix(line, "export ")
		k, v, ok := strings.Cut(line, "=")
		k = strings.TrimSpace(k)
		if !ok || !validEnvName(k) {
			return nil, fmt.Errorf("credentials file %s line %d: want KEY=value with KEY made of A-Z, 0-9 and _", path, n)
		}
		v, err := unquote(strings.TrimSpace(v))
		if err != nil {
			return nil, fmt.Errorf("credentials file %s line %d (%s): %v", path, n, k, err)
		}
		out[k] = v
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("credentials file %s: %w", path, err)
	}
	return out, nil
}

func validEnvName(k string) bool {
	if k == "" || k[0] >= '0' && k[0] <= '9' {
		return false
	}
	for i := 0; i < len(k); i++ {
		c := k[i]
		if !(c == '_' || c >= 'A' && c <= 'Z' || c >= 'a' && c <= 'z' || c >= '0' && c <= '9') {
			return false
		}
	}
	return true
}

// unquote removes one pair of matching quotes; double quotes take Go/shell
// escapes. The error never quotes the value.
func unquote(v string) (string, error) {
	if len(v) < 2 || (v[0] != '"' && v[0] != '\'') {
		if len(v) > 0 && (v[0] == '"' || v[0] == '\'') {
			return "", errors.New("unterminated quote")
		}
		return v, nil
	}
	if v[len(v)-1] != v[0] {
		return "", errors.New("unterminated quote")
	}
	if v[0] == '\'' {
		return v[1 : len(v)-1], nil
	}
	s, err := strconv.Unquote(v)
	if err != nil {
		return "", errors.New("malformed double-quoted value")
	}
	return s, nil
}

// fileSignature changes when the file at path is replaced, edited, or
// changes mode or owner.
func fileSignature(path string) string {
	if path == "" {
		return ""
	}
	fi, err := os.Lstat(path)
	if err != nil {
		return "!" + strconv.FormatBool(errors.Is(err, fs.ErrNotExist))
	}
	var ino uint64
	var uid uint32
	if st, ok := fi.Sys().(*syscall.Stat_t); ok {
		ino, uid = st.Ino, st.Uid
	}
	return fmt.Sprintf("%d %d %o %d %d", ino, fi.Size(), fi.Mode(), fi.ModTime().UnixNano(), uid)
}
