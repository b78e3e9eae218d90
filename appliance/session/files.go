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

// Names inside the state dir. Every file operation below goes through
// Manager.root (an os.Root on the state dir, opened once): a symlink
// planted there cannot make the root daemon create, chown or remove
// anything outside it, and renaming the state dir away and putting another
// in its place (its parent is the sudo user's home) does not redirect the
// daemon's writes.
const (
	bundleName     = "ca-bundle.pem"
	claudeJSONName = "claude.json"
	sessionsName   = "sessions"
	runName        = "run"
	codexName      = "codex"
	uploadsName    = "uploads"
)

// abs is the host path of a state dir name, for bind mount sources.
func (m *Manager) abs(name string) string { return filepath.Join(m.opts.StateDir, name) }

func (m *Manager) bundlePath() string            { return m.abs(bundleName) }
func (m *Manager) codexDir() string              { return m.abs(codexName) }
func sessionDir(name string) string              { return filepath.Join(sessionsName, name) }
func uploadsDir(name string) string              { return filepath.Join(uploadsName, name) }
func (m *Manager) uploadsDir(name string) string { return m.abs(uploadsDir(name)) }

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
	if old, err := m.root.ReadFile(bundleName); err == nil && bytes.Equal(old, buf.Bytes()) {
		return nil
	}
	return m.writeAtomic(bundleName, buf.Bytes(), 0o644)
}

// writeAtomic writes name (relative to the state dir) through a fresh
// temporary file and a rename.
func (m *Manager) writeAtomic(name string, data []byte, mode os.FileMode) error {
	var b [8]byte
	if _, err := rand.Read(b[:]); err != nil {
		return fmt.Errorf("writing %s: %w", m.abs(name), err)
	}
	tmp := filepath.Join(filepath.Dir(name), "."+filepath.Base(name)+".tmp"+hex.EncodeToString(b[:]))
	f, err := m.root.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		return fmt.Errorf("writing %s: %w", m.abs(name), err)
	}
	defer m.root.Remove(tmp)
	_, err = f.Write(data)
	if err == nil {
		err = f.Chmod(mode)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = m.root.Rename(tmp, name)
	}
	if err != nil {
		return fmt.Errorf("writing %s: %w", m.abs(name), err)
	}
	return nil
}

// createExclusive writes content to a new file name, failing if it exists.
func (m *Manager) createExclusive(name, content string) error {
	f, err := m.root.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL|syscall.O_NOFOLLOW, 0o600)
	if err != nil {
		return err
	}
	_, werr := f.WriteString(content)
	if cerr := f.Close(); werr == nil {
		werr = cerr
	}
	if werr != nil {
		return fmt.Errorf("writing %s: %w", m.abs(name), werr)
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
	if err := m.createExclusive(claudeJSONName, ClaudeJSONContent); err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("creating %s: %w", m.abs(claudeJSONName), err)
	}
	// Still handed to the session user, as the doctor's "claude.json
	// writable" step expects; harmless since no container mounts it.
	return m.chownToUser(claudeJSONName)
}

// writePrivateClaudeJSON replaces dir (a state dir name for a directory only
// this container's claude.json lives in) with a fresh one holding
// ClaudeJSONContent, owned by the numeric session user, and returns the
// file's host path. Whatever a previous container left in dir is discarded.
func (m *Manager) writePrivateClaudeJSON(dir string) (string, error) {
	if err := m.root.RemoveAll(dir); err != nil {
		return "", fmt.Errorf("clearing %s: %w", m.abs(dir), err)
	}
	if err := m.root.MkdirAll(filepath.Dir(dir), 0o700); err != nil {
		return "", fmt.Errorf("creating %s: %w", m.abs(filepath.Dir(dir)), err)
	}
	if err := m.root.Mkdir(dir, 0o700); err != nil {
		return "", fmt.Errorf("creating %s: %w", m.abs(dir), err)
	}
	p := filepath.Join(dir, claudeJSONName)
	if err := m.createExclusive(p, ClaudeJSONContent); err != nil {
		return "", fmt.Errorf("creating %s: %w", m.abs(p), err)
	}
	return m.abs(p), m.chownToUser(p)
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
	return m.writePrivateClaudeJSON(filepath.Join(runName, hex.EncodeToString(b[:])))
}

// runFileMaxAge is how long a `clauderon run` claude.json is kept.
const runFileMaxAge = 24 * time.Hour

// cleanRunFiles removes state_dir/run/* entries last modified before
// now-maxAge. Errors are logged: stale files are clutter, not a hazard.
func (m *Manager) cleanRunFiles(now time.Time, maxAge time.Duration) {
	ents, err := fs.ReadDir(m.root.FS(), runName)
	if err != nil {
		if !errors.Is(err, fs.ErrNotExist) {
			m.log.Warn("listing run files for cleanup", "dir", m.abs(runName), "err", err)
		}
		return
	}
	for _, e := range ents {
		fi, err := e.Info()
		if err != nil || now.Sub(fi.ModTime()) < maxAge {
			continue
		}
		if err := m.root.RemoveAll(filepath.Join(runName, e.Name())); err != nil {
			m.log.Warn("removing old run files", "dir", e.Name(), "err", err)
		}
	}
}

// removeSessionDir deletes state_dir/sessions/<name> (the session's
// claude.json); a failure is logged, the next Create of that name starts
// from a fresh file anyway.
func (m *Manager) removeSessionDir(name string) {
	if err := m.root.RemoveAll(sessionDir(name)); err != nil {
		m.log.Warn("removing session files", "session", name, "err", err)
	}
}

// chownToUser gives name (in the state dir) to the numeric session user
// when running as root.
func (m *Manager) chownToUser(name string) error {
	uid, gid, ok := numericIDs(m.opts.User)
	if !ok || os.Geteuid() != 0 {
		return nil
	}
	if err := m.root.Lchown(name, uid, gid); err != nil {
		return fmt.Errorf("giving %s to session user %s: %w", m.abs(name), m.opts.User, err)
	}
	return nil
}

func (m *Manager) ensureCodex() error {
	if err := m.root.MkdirAll(codexName, 0o755); err != nil {
		return fmt.Errorf("creating %s: %w", m.codexDir(), err)
	}
	p := filepath.Join(codexName, "config.toml")
	if _, err := m.root.Lstat(p); err == nil {
		return nil
	}
	return m.writeAtomic(p, []byte(codexConfig), 0o644)
}

// ensureUploads creates the session's uploads directory for the session user.
func (m *Manager) ensureUploads(name string) error {
	dir := uploadsDir(name)
	if err := m.root.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("creating uploads dir: %w", err)
	}
	return m.chownToUser(dir)
}
