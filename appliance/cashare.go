package appliance

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/clauderon/clauderond/appliance/config"
	"github.com/clauderon/clauderond/tlsmitm/localca"
)

// A CA shared by several nodes (node mode): `clauderond ca init --out DIR`
// makes a root once; the operator stores DIR's proxy-ca.pem and
// proxy-ca-key.pem in a Secret, and each node's `clauderond ca install
// --from <the Secret's mount>` (the DaemonSet's init container) puts them
// in its state dir. Each node keeps its own intermediate, signed by the
// shared root, so one trust bundle serves pods on every node.

// InitCA creates a new CA root in dir (which must not hold one), constrained
// to cfg's rule hosts, and returns what to tell the operator.
func InitCA(cfg *config.Config, dir string) (string, error) {
	if _, err := os.Stat(filepath.Join(dir, localca.CertFile)); err == nil {
		return "", fmt.Errorf("%s already holds a CA (%s); use another directory", dir, localca.CertFile)
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", fmt.Errorf("creating %s: %w", dir, err)
	}
	ca, err := localca.LoadOrCreateWith(dir, localca.Options{Hosts: interceptedHosts(cfg)})
	if err != nil {
		return "", err
	}
	return fmt.Sprintf("new CA root in %s\n  sha256 %s\nnext: kubectl -n clauderon-system create secret generic clauderon-ca --from-file=%s --from-file=%s\n"+
		"and in every workload namespace: kubectl -n NAMESPACE create configmap clauderon-ca --from-file=%s\n",
		dir, ca.Fingerprint(), filepath.Join(dir, localca.CertFile), filepath.Join(dir, localca.KeyFile), filepath.Join(dir, localca.CertFile)), nil
}

// InstallCA puts the root in from (a Secret's mount: files may be
// symlinks) into cfg's state dir, replacing a different root and its
// intermediate (re-made from the new root at start). An empty or missing
// from installs nothing: the node keeps (or makes) its own CA.
func InstallCA(cfg *config.Config, from string) (string, error) {
	cert, certErr := os.ReadFile(filepath.Join(from, localca.CertFile))
	key, keyErr := os.ReadFile(filepath.Join(from, localca.KeyFile))
	switch {
	case errors.Is(certErr, fs.ErrNotExist) && errors.Is(keyErr, fs.ErrNotExist):
		return fmt.Sprintf("no CA in %s; this node keeps its own in %s\n", from, cfg.StateDir), nil
	case certErr != nil:
		return "", fmt.Errorf("reading the shared CA: %w", certErr)
	case keyErr != nil:
		return "", fmt.Errorf("reading the shared CA: %w", keyErr)
	}
	if err := prepareStateDir(cfg.StateDir); err != nil {
		return "", err
	}
	curCert, _ := os.ReadFile(filepath.Join(cfg.StateDir, localca.CertFile))
	curKey, _ := os.ReadFile(filepath.Join(cfg.StateDir, localca.KeyFile))
	if bytes.Equal(curCert, cert) && bytes.Equal(curKey, key) {
		return fmt.Sprintf("the shared CA is already installed in %s\n", cfg.StateDir), nil
	}
	// Check the pair in a scratch directory before touching the state dir.
	tmp, err := os.MkdirTemp(cfg.StateDir, ".ca-install-")
	if err != nil {
		return "", fmt.Errorf("creating a scratch directory: %w", err)
	}
	defer os.RemoveAll(tmp)
	if err := os.WriteFile(filepath.Join(tmp, localca.CertFile), cert, 0o644); err != nil {
		return "", err
	}
	if err := os.WriteFile(filepath.Join(tmp, localca.KeyFile), key, 0o600); err != nil {
		return "", err
	}
	ca, err := localca.LoadWith(tmp, localca.Options{Hosts: interceptedHosts(cfg)})
	if err != nil {
		return "", fmt.Errorf("the CA in %s is not usable: %w", from, err)
	}
	for _, f := range []string{localca.IntermediateCertFile, localca.IntermediateKeyFile} {
		if err := os.Remove(filepath.Join(cfg.StateDir, f)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			return "", fmt.Errorf("removing the previous intermediate: %w", err)
		}
	}
	// Key first: a crash between the renames leaves a mismatched pair,
	// which the daemon refuses (never a silent new CA).
	for _, f := range []string{localca.KeyFile, localca.CertFile} {
		if err := os.Rename(filepath.Join(tmp, f), filepath.Join(cfg.StateDir, f)); err != nil {
			return "", fmt.Errorf("installing %s: %w", f, err)
		}
	}
	return fmt.Sprintf("installed the shared CA root in %s (sha256 %s)\n", cfg.StateDir, ca.Fingerprint()), nil
}
