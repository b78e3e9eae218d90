package session

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
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

// ClaudeJSONContent is the template state_dir/claude.json written when it
// is missing: it skips the onboarding screen that would otherwise ask for a
// login. Each container's own claude.json is made from the template (see
// claudeJSONFor), with what keeps an interactive
// --dangerously-skip-permissions session out of confirmation dialogs.
const ClaudeJSONContent = `{"hasCompletedOnboarding": true}` + "\n"

// claudeJSONFor builds a container's claude.json from the operator's
// template: the template's keys are kept, and onboarding, the
// bypass-permissions confirmation and the trust dialog for workdir (the key
// under "projects" is the working directory) are marked done unless the
// template says otherwise. A template that is not a JSON object is ignored
// (and reported).
func claudeJSONFor(template []byte, workdir string) ([]byte, error) {
	doc := map[string]any{}
	var tplErr error
	if len(bytes.TrimSpace(template)) > 0 {
		if err := json.Unmarshal(template, &doc); err != nil {
			doc, tplErr = map[string]any{}, fmt.Errorf("claude.json template is not a JSON object (%v); using the defaults", err)
		}
	}
	setDefault(doc, "hasCompletedOnboarding", true)
	setDefault(doc, "bypassPermissionsModeAccepted", true)
	projects, ok := doc["projects"].(map[string]any)
	if !ok {
		projects = map[string]any{}
		doc["projects"] = projects
	}
	project, ok := projects[workdir].(map[string]any)
	if !ok {
		project = map[string]any{}
		projects[workdir] = project
	}
	setDefault(project, "hasTrustDialogAccepted", true)
	setDefault(project, "hasCompletedProjectOnboarding", true)
	out, err := json.MarshalIndent(doc, "", "  ")
	if err != nil {
		return nil, fmt.Errorf("encoding claude.json: %w", err)
	}
	return append(out, '\n'), tplErr
}

func setDefault(m map[string]any, k string, v any) {
	if _, ok := m[k]; !ok {
		m[k] = v
	}
}

// codexConfig makes Codex use the (placeholder) API key from the environment;
// the proxy replaces it on the way to api.openai.com. Codex (0.171) ignores
// OPENAI_API_KEY with its built-in OpenAI provider (it wants CODEX_API_KEY
// or `codex login`, and tries a WebSocket to /v1/responses first), so the
// config names a provider of its own: the same endpoint, the key from
// OPENAI_API_KEY, HTTPS streaming only. Analytics, feedback and the update
// check would only reach hosts clauderond denies; the plugin marketplace
// sync would fetch github.com/openai/plugins with the operator's GitHub
// credential (and ask the denied chatgpt.com).
const codexConfig = `# Written by clauderond; edit it to change every new session's Codex settings.
# Codex authenticates with OPENAI_API_KEY, a placeholder that clauderond
# replaces with the real key on the way to api.openai.com.
model_provider = "clauderon"
check_for_update_on_startup = false

[model_providers.clauderon]
name = "OpenAI through clauderond"
base_url = "https://api.openai.com/v1"
env_key = "OPENAI_API_KEY"
wire_api = "responses"
supports_websockets = false

[analytics]
enabled = false

[feedback]
enabled = false

# The curated plugin marketplace is synced from github.com/openai/plugins
# (clauderond would add your GitHub credential) and chatgpt.com (denied).
[features]
plugins = false
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
// this container's claude.json lives in) with a fresh one holding the
// claude.json made from the template, owned by user, and returns the
// file's host path. Whatever a previous container left in dir is discarded.
func (m *Manager) writePrivateClaudeJSON(dir, user string) (string, error) {
	if err := m.root.RemoveAll(dir); err != nil {
		return "", fmt.Errorf("clearing %s: %w", m.abs(dir), err)
	}
	if err := m.root.MkdirAll(filepath.Dir(dir), 0o700); err != nil {
		return "", fmt.Errorf("creating %s: %w", m.abs(filepath.Dir(dir)), err)
	}
	if err := m.root.Mkdir(dir, 0o700); err != nil {
		return "", fmt.Errorf("creating %s: %w", m.abs(dir), err)
	}
	tpl, err := m.root.ReadFile(claudeJSONName)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return "", fmt.Errorf("reading the claude.json template %s: %w", m.abs(claudeJSONName), err)
	}
	content, err := claudeJSONFor(tpl, m.opts.Workdir)
	if err != nil {
		m.log.Warn("claude.json template unusable", "path", m.abs(claudeJSONName), "err", err)
	}
	p := filepath.Join(dir, claudeJSONName)
	if err := m.createExclusive(p, string(content)); err != nil {
		return "", fmt.Errorf("creating %s: %w", m.abs(p), err)
	}
	if err := m.chownTo(dir, user); err != nil {
		return "", err
	}
	return m.abs(p), m.chownTo(p, user)
}

// newRunClaudeJSON writes a fresh claude.json for one `clauderon run` in
// state_dir/run/<random>/. The daemon never learns when that container
// ends; cleanRunFiles removes such files once they are older than
// runFileMaxAge (a running container keeps its bind-mounted inode).
func (m *Manager) newRunClaudeJSON(user string) (string, error) {
	var b [12]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("naming a run directory: %w", err)
	}
	return m.writePrivateClaudeJSON(filepath.Join(runName, hex.EncodeToString(b[:])), user)
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
// (sessions.user) when running as root.
func (m *Manager) chownToUser(name string) error { return m.chownTo(name, m.opts.User) }

// chownTo gives name (in the state dir) to user ("uid[:gid]") when running
// as root; a user name is left alone.
func (m *Manager) chownTo(name, user string) error {
	uid, gid, ok := numericIDs(user)
	if !ok || os.Geteuid() != 0 {
		return nil
	}
	if err := m.root.Lchown(name, uid, gid); err != nil {
		return fmt.Errorf("giving %s to session user %s: %w", m.abs(name), user, err)
	}
	return nil
}

func (m *Manager) ensureCodex() error {
	if err := m.root.MkdirAll(codexName, 0o755); err != nil {
		return fmt.Errorf("creating %s: %w", m.codexDir(), err)
	}
	p := filepath.Join(codexName, "config.toml")
	if old, err := m.root.ReadFile(p); err == nil && string(old) != oldCodexConfig {
		return nil // the operator's (or ours, current)
	}
	return m.writeAtomic(p, []byte(codexConfig), 0o644)
}

// oldCodexConfig is what earlier versions wrote; Codex ignores its one
// setting and then sends no key, so it is replaced (an edited file is
// left alone).
const oldCodexConfig = `# Written by clauderond. Codex authenticates with OPENAI_API_KEY, a placeholder
# that clauderond replaces with the real key on the way to api.openai.com.
preferred_auth_method = "apikey"
`

// ensureUploads creates the session's uploads directory for its user.
func (m *Manager) ensureUploads(name, user string) error {
	dir := uploadsDir(name)
	if err := m.root.MkdirAll(dir, 0o700); err != nil {
		return fmt.Errorf("creating uploads dir: %w", err)
	}
	return m.chownTo(dir, user)
}

// sessionCodexDir is the session's own, writable ~/.codex, seeded from the
// shared dummy config: Codex writes its sessions and history there.
func sessionCodexDir(name string) string { return filepath.Join(sessionDir(name), codexName) }

// seedCodex creates sessionCodexDir with a copy of the shared config.toml,
// owned by user. sessionDir(name) must exist.
func (m *Manager) seedCodex(name, user string) error {
	dir := sessionCodexDir(name)
	if err := m.root.Mkdir(dir, 0o700); err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("creating %s: %w", m.abs(dir), err)
	}
	cfg, err := m.root.ReadFile(filepath.Join(codexName, "config.toml"))
	if err != nil {
		return fmt.Errorf("reading the Codex config: %w", err)
	}
	p := filepath.Join(dir, "config.toml")
	if err := m.createExclusive(p, string(cfg)); err != nil && !errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("creating %s: %w", m.abs(p), err)
	}
	if err := m.chownTo(dir, user); err != nil {
		return err
	}
	return m.chownTo(p, user)
}
