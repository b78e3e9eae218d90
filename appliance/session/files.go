package session

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"time"
)

func (m *Manager) bundlePath() string     { return filepath.Join(m.opts.StateDir, "ca-bundle.pem") }
func (m *Manager) claudeJSONPath() string { return filepath.Join(m.opts.StateDir, "claude.json") }
func (m *Manager) sessionDir(name string) string {
	return filepath.Join(m.opts.StateDir, "sessions", name)
}
func (m *Manager) runDir() string   { return filepath.Join(m.opts.StateDir, "run") }
func (m *Manager) codexDir() string { return filepath.Join(m.opts.StateDir, "codex") }
func (m *Manager) uploadsDir(name string) string {
	return filepath.Join(m.opts.StateDir, "uploads", name)
}

// ClaudeJSONContent is written when claude.json is missing: it skips the
// onboarding screen that would otherwise ask for a login.
const ClaudeJSONContent = `{"hasCompletedOnboarding": true}` + "\n"

// codexConfig makes Codex use the (placeholder) API key from the environment;
// the proxy replaces it on the way to api.openai.com.
const codexConfig = `# Written by clauderond. Codex authenticates with OPENAI_API_KEY, a placeholder
# that clauderond replaces with the real key on the way to api.openai.com.
preferred_auth_method = "apikey"
`

// ensureSharedFiles writes the combined trust bundle and creates claude.json
// and the Codex config when missing. The CA certificate must exist.
func (m *Manager) ensureSharedFiles() error {
	if err := m.writeBundle(); err != nil {
		return err
	}
	if err := m.ensureClaudeJSON(); err != nil {
		return err
	}
	return m.ensureCodex()
}

// writeBundle writes state_dir/ca-bundle.pem = host system bundle + our CA,
// atomically, so a running container never reads half a file... (a bind
// mount pins the old inode; new sessions see the new one).
func (m *Manager) writeBundle() error {
	ca, err := os.ReadFile(m.opts.CAPath)
	if err != nil {
		return fmt.Errorf("reading CA certificate %s (is clauderond fully started?): %w", m.opts.CAPath, err)
	}
	if !bytes.Contains(ca, []byte("-----BEGIN CERTIFICATE-----")) {
		return fmt.Errorf("CA certificate %s holds no PEM certificate", m.opts.CAPath)
	}
	sys, err := os.ReadFile(m.opts.SystemBundle)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("reading system trust bundle %s: %w", m.opts.SystemBundle, err)
	}
	var buf bytes.Buffer
	buf.Write(sys)
	if len(sys) > 0 && !bytes.HasSuffix(sys, []byte("\n")) {
		buf.WriteByte('\n')
	}
	buf.WriteString("# clauderon local CA\n")
	buf.Write(ca)
	if old, err := os.ReadFile(m.bundlePath()); err == nil && bytes.Equal(old, buf.Bytes()) {
		return nil
	}
	return writeAtomic(m.bundlePath(), buf.Bytes(), 0o644)
}

func writeAtomic(path string, data []byte, mode os.FileMode) error {
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	defer os.Remove(tmp.Name())
	if _, err := tmp.Write(data); err != nil {
		tmp.Close()
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := tmp.Chmod(mode); err != nil {
		tmp.Close()
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := tmp.Close(); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return fmt.Errorf("writing %s: %w", path, err)
	}
	return nil
}

// ensureClaudeJSON creates the template state_dir/claude.json when missing.
// The template is never mounted into a container: each session and each
// `clauderon run` gets its own copy written fresh from ClaudeJSONContent
// (writePrivateClaudeJSON), because a claude.json shared read-write lets one
// container plant mcpServers commands that the next one, maybe with another
// profile's credentials, would run.
func (m *Manager) ensureClaudeJSON() error {
	p := m.claudeJSONPath()
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, 0o600)
	switch {
	case err == nil:
		_, werr := f.WriteString(ClaudeJSONContent)
		if cerr := f.Close(); werr == nil {
			werr = cerr
		}
		if werr != nil {
			return fmt.Errorf("writing %s: %w", p, werr)
		}
	case !errors.Is(err, fs.ErrExist):
		return fmt.Errorf("creating %s: %w", p, err)
	}
	// Still handed to the session user, as the doctor's "claude.json
	// writable" step expects; harmless since no container mounts it.
	return m.chownToUser(p)
}

// writePrivateClaudeJSON replaces dir (a directory only this container's
// claude.json lives in) with a fresh one holding ClaudeJSONContent, owned
// by the numeric session user, and returns the file's path. Whatever a
// previous container left in dir is discarded.
func (m *Manager) writePrivateClaudeJSON(dir string) (string, error) {
	if err := os.RemoveAll(dir); err != nil {
		return "", fmt.Errorf("clearing %s: %w", dir, err)
	}
	if err := os.MkdirAll(filepath.Dir(dir), 0o700); err != nil {
		return "", fmt.Errorf("creating %s: %w", filepath.Dir(dir), err)
	}
	if err := os.Mkdir(dir, 0o700); err != nil {
		return "", fmt.Errorf("creating %s: %w", dir, err)
	}
	p := filepath.Join(dir, "claude.json")
	f, err := os.OpenFile(p, os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		return "", fmt.Errorf("creating %s: %w", p, err)
	}
	_, werr := f.WriteString(ClaudeJSONContent)
	if cerr := f.Close(); werr == nil {
		werr = cerr
	}
	if werr != nil {
		return "", fmt.Errorf("writing %s: %w", p, werr)
	}
	return p, m.chownToUser(p)
}

// newRunClaudeJSON writes a fresh claude.json for one `clauderon run` in
// state_dir/run/<random>/. The daemon never learns when that container
// ends; cleanRunFiles removes such files once they are older than
// runFileMaxAge (a running container keeps its bind-mounted inode).
func (m *Manager) newRunClaudeJSON() (string, error) {
	var b [12]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("naming a run directory: %w", err)
	}
	return m.writePrivateClaudeJSON(filepath.Join(m.runDir(), hex.EncodeToString(b[:])))
}

// runFileMaxAge is how long a `clauderon run` claude.json is kept.
const runFileMaxAge = 24 * time.Hour

// cleanRunFiles removes state_dir/run/* entries last modified before
// now-maxAge. Errors are logged: stale files are clutter, not a hazard.
func (m *Manager) cleanRunFiles(now time.Time, maxAge time.Duration) {
	ents, err := os.ReadDir(m.runDir())
	if err != nil {
		if !errors.Is(err, fs.ErrNotExist) {
			m.log.Warn("listing run files for cleanup", "dir", m.runDir(), "err", err)
		}
		return
	}
	for _, e := range ents {
		fi, err := e.Info()
		if err != nil || now.Sub(fi.ModTime()) < maxAge {
			continue
		}
		if err := os.RemoveAll(filepath.Join(m.runDir(), e.Name())); err != nil {
			m.log.Warn("removing old run files", "dir", e.Name(), "err", err)
		}
	}
}

// chownToUser gives path to the numeric session user when running as root.
func (m *Manager) chownToUser(path string) error {
	uid, gid, ok := numericIDs(m.opts.User)
	if !ok || os.Geteuid() != 0 {
		return nil
	}
	if err := os.Lchown(path, uid, gid); err != nil {
		return fmt.Errorf("giving %s to session user %s: %w", path, m.opts.User, err)
	}
	return nil
}

func (m *Manager) ensureCodex() error {
	dir := m.codexDir()
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return fmt.Errorf("creating %s: %w", dir, err)
	}
	p := filepath.Join(dir, "config.toml")
	if _, err := os.Stat(p); err == nil {
		return nil
	}
	return writeAtomic(p, []byte(codexConfig), 0o644)
}

// ensureUploads creates the session's uploads directory for the session user.
func (m *Manager) ensureUploads(name string) error {
	dir := m.uploadsDir(name)
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("creating uploads dir: %w", err)
	}
	return m.chownToUser(dir)
}
