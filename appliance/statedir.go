package appliance

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/clauderon/clauderond/tlsmitm/localca"
)

// prepareStateDir creates the state dir (0700) and secrets/ (0700) if
// missing, and refuses to start when secrets/ or the CA key can be read by
// group or others, naming the chmod that fixes it.
func prepareStateDir(dir string) error {
	if dir == "" {
		return errors.New("state_dir is empty; set state_dir in the config or CLAUDERON_STATE_DIR")
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("creating state dir %s: %w", dir, err)
	}
	secrets := filepath.Join(dir, "secrets")
	if err := os.Mkdir(secrets, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("creating %s: %w", secrets, err)
	}
	for _, p := range []string{secrets, filepath.Join(dir, localca.KeyFile)} {
		if err := checkPrivate(p); err != nil {
			return err
		}
	}
	return nil
}

// checkPrivate refuses p when group or others have any access to it. A
// missing file is fine (it is created 0600 later).
func checkPrivate(p string) error {
	fi, err := os.Stat(p)
	if errors.Is(err, fs.ErrNotExist) {
		return nil
	}
	if err != nil {
		return fmt.Errorf("checking %s: %w", p, err)
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
