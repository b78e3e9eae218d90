package injector

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// maxSecretFileSize bounds what Reload reads from one secrets file.
const maxSecretFileSize = 64 << 10

// treeSignature summarizes the secrets tree (two levels of profiles) so a
// change of any file's name, size, mode or mtime changes it.
func treeSignature(dir string) string {
	var b strings.Builder
	if dir == "" {
		return ""
	}
	_ = filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil {
			fmt.Fprintf(&b, "%s!%v\n", path, errors.Is(err, fs.ErrNotExist))
			return nil
		}
		if strings.Count(strings.TrimPrefix(path, dir), string(filepath.Separator)) > 3 {
			return fs.SkipDir
		}
		fi, err := os.Stat(path) // follow symlinks: the target's change matters
		if err != nil {
			fmt.Fprintf(&b, "%s?\n", path)
			return nil
		}
		fmt.Fprintf(&b, "%s %d %o %d\n", path, fi.Size(), fi.Mode(), fi.ModTime().UnixNano())
		return nil
	})
	return b.String()
}

// profileFiles holds the credential files of one directory.
type profileFiles struct {
	dir, display string
	files        map[string]string // file name → value (trailing newline trimmed)
}

// readSecretsDir reads secrets/ and secrets/profiles/<P>/. It refuses a
// directory or file that group or others can access.
func readSecretsDir(dir string) (map[string]*profileFiles, error) {
	out := map[string]*profileFiles{}
	if dir == "" {
		return out, nil
	}
	def, err := readCredentialDir(dir, DefaultProfile)
	if err != nil || def == nil {
		return out, err
	}
	out[""] = def
	pdir := filepath.Join(dir, "profiles")
	ents, err := readPrivateDir(pdir)
	if err != nil || ents == nil {
		return out, err
	}
	for _, de := range ents {
		name := de.Name()
		if strings.HasPrefix(name, ".") {
			continue
		}
		if err := ValidateProfileName(name); err != nil || name == DefaultProfile {
			return nil, fmt.Errorf("secrets profile directory %s: not a valid profile name (want [a-z0-9][a-z0-9_.-]*, not %q)", filepath.Join(pdir, name), DefaultProfile)
		}
		pf, err := readCredentialDir(filepath.Join(pdir, name), name)
		if err != nil {
			return nil, err
		}
		if prev, dup := out[profileKey(name)]; dup && pf != nil {
			return nil, fmt.Errorf("secrets profile directories %s and %s name the same profile (they share the environment prefix %s%s_); remove one",
				prev.dir, pf.dir, ProfileEnvPrefix, profileKey(name))
		}
		if pf != nil {
			out[profileKey(name)] = pf
		}
	}
	return out, nil
}

// readPrivateDir lists dir after checking it is a 0700-or-stricter
// directory. A missing dir yields (nil, nil).
func readPrivateDir(dir string) ([]os.DirEntry, error) {
	fi, err := os.Stat(dir)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	if err != nil {
		return nil, fmt.Errorf("reading secrets directory: %w", err)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("secrets directory %s is not a directory", dir)
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return nil, fmt.Errorf("secrets directory %s has mode %04o, open to group or others; run: chmod 700 %s", dir, fi.Mode().Perm(), dir)
	}
	ents, err := os.ReadDir(dir)
	if err != nil {
		return nil, fmt.Errorf("reading secrets directory: %w", err)
	}
	return ents, nil
}

func readCredentialDir(dir, display string) (*profileFiles, error) {
	ents, err := readPrivateDir(dir)
	if err != nil || ents == nil {
		return nil, err
	}
	pf := &profileFiles{dir: dir, display: display, files: map[string]string{}}
	for _, de := range ents {
		name := de.Name()
		if strings.HasPrefix(name, ".") || name == "profiles" || validateCredentialName(name) != nil {
			continue
		}
		v, ok, err := readSecretFile(filepath.Join(dir, name))
		if err != nil {
			return nil, err
		}
		if ok {
			pf.files[name] = v
		}
	}
	return pf, nil
}

// readSecretFile reads one credential file. Non-regular files (after
// following symlinks) are skipped; group- or world-accessible ones are
// refused.
func readSecretFile(path string) (string, bool, error) {
	f, err := os.Open(path)
	if err != nil {
		return "", false, fmt.Errorf("reading secrets file: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return "", false, fmt.Errorf("reading secrets file: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return "", false, nil
	}
	if fi.Mode().Perm()&0o077 != 0 {
		return "", false, fmt.Errorf("secrets file %s has mode %04o, open to group or others; run: chmod 600 %s", path, fi.Mode().Perm(), path)
	}
	b, err := io.ReadAll(io.LimitReader(f, maxSecretFileSize+1))
	if err != nil {
		return "", false, fmt.Errorf("reading secrets file %s: %w", path, err)
	}
	if len(b) > maxSecretFileSize {
		return "", false, fmt.Errorf("secrets file %s is larger than %d bytes; it does not hold one credential", path, maxSecretFileSize)
	}
	return strings.TrimRight(string(b), "\r\n"), true, nil
}
