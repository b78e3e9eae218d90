package session

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"log/slog"
	"path/filepath"
	"strings"
	"time"

	"github.com/clauderon/clauderond/appliance/internal/keyfile"
	"github.com/clauderon/clauderond/injector"
)

// Per-container placeholders (honeytokens).
//
// Every container the manager creates (a session) or prepares (`clauderon
// run`) gets placeholder values of its own: the reference values with "-"
// and a suffix appended (injector.WithPlaceholderSuffix), the suffix being
// the first 5 bytes, in hex, of HMAC-SHA256(placeholder.key, identity). A
// run's identity is its run id; a session's is its container name, so a
// session keeps its values across restarts and a session re-created under
// the same name gets the same ones. The manager keeps suffix → owner in
// its provenance index, so a placeholder seen where it does not belong
// (another container's request, a DNS name, a server name) names the
// container it was handed to (PlaceholderOwner).
//
// The key, state_dir/placeholder.key (0600, created on first use), only
// makes the suffixes unpredictable: nobody can mint a suffix that points at
// another tenant's container without it. It is never logged and never
// mounted into a container; a key that is a symbolic link, not a regular
// file of the daemon's user, or readable by others is refused.

// PlaceholderKeyName is the per-container placeholder key in the state dir.
const PlaceholderKeyName = "placeholder.key"

const placeholderKeySize = 32

// placeholderKey is the MAC key; it prints as [REDACTED].
type placeholderKey struct{ b []byte }

func (placeholderKey) String() string       { return "[REDACTED]" }
func (placeholderKey) GoString() string     { return "session.placeholderKey{[REDACTED]}" }
func (placeholderKey) LogValue() slog.Value { return slog.StringValue("[REDACTED]") }

// suffix is the per-container suffix for identity.
func (k *placeholderKey) suffix(identity string) string {
	mac := hmac.New(sha256.New, k.b)
	mac.Write([]byte(identity))
	return hex.EncodeToString(mac.Sum(nil)[:injector.PlaceholderSuffixLen/2])
}

// loadOrCreatePlaceholderKey reads the key at path, creating it
// (placeholderKeySize random bytes, 0600) when missing. Like audit.key, it
// refuses a symbolic link, anything but a regular singly linked file of the
// daemon's user, a mode that lets others read it, and a wrong size, each
// with what to do.
func loadOrCreatePlaceholderKey(path string) (*placeholderKey, error) {
	b, err := keyfile.LoadOrCreate(path, keyfile.Spec{Name: "placeholder key", Size: placeholderKeySize,
		Exposed: "could mint placeholders that point at other containers",
		Reset:   "containers made from then on get new placeholders"})
	if err != nil {
		return nil, err
	}
	return &placeholderKey{b: b}, nil
}

// Identities the suffix is computed over (domain-separated).
// sessionIdentity names a session by its container and its owner: another
// tenant's session of the same name gets other values (a placeholder
// learnt from one cannot frame the other).
func sessionIdentity(name, owner string) string {
	return "session\x00" + ContainerName(name) + "\x00" + owner
}
func runIdentity(runID string) string { return "run\x00" + runID }

// placeholderSuffixFor is the suffix of a recorded container: its
// session's when p names one, else its run's.
func (m *Manager) placeholderSuffixFor(p Provenance, runID string) string {
	if p.Session != "" {
		return m.prov.key.suffix(sessionIdentity(p.Session, p.Owner))
	}
	return m.prov.key.suffix(runIdentity(runID))
}

// placeholderEnv is the placeholder environment for a container with
// suffix.
func (m *Manager) placeholderEnv(suffix string) map[string]string {
	return injector.WithPlaceholderSuffix(m.opts.Placeholders, suffix)
}

// PlaceholderOwner is what the manager knows about the container a
// per-container placeholder suffix was handed to.
type PlaceholderOwner struct {
	Provenance
	// ContainerID is the container's ID; "" for a run whose container has
	// not shown up yet.
	ContainerID string
	// Container is the container's name: clauderon-<session>, or a run's
	// name as Docker reports it (looked up once; "container <short ID>"
	// when Docker no longer knows it); "" for a run not yet started.
	Container string
}

// Display names the owner for an audit line: the container name when
// known, else the session or the run's owner. Never a run id.
func (o PlaceholderOwner) Display() string {
	switch {
	case o.Container != "":
		return o.Container
	case o.Session != "":
		return ContainerName(o.Session)
	case o.ContainerID != "":
		return "container " + shortID(o.ContainerID)
	}
	return "run of " + o.Owner + " (no container yet)"
}

func shortID(id string) string {
	if len(id) > 12 {
		return id[:12]
	}
	return id
}

// PlaceholderOwner returns who the per-container placeholder suffix was
// handed to; ok is false for a suffix the manager never issued (or whose
// session was forgotten across a restart). A run's container name is
// looked up from Docker the first time it is asked for.
func (m *Manager) PlaceholderOwner(ctx context.Context, suffix string) (PlaceholderOwner, bool) {
	if !injector.IsPlaceholderSuffix(suffix) {
		return PlaceholderOwner{}, false
	}
	m.prov.mu.RLock()
	o, ok := m.prov.bySuffix[suffix]
	m.prov.mu.RUnlock()
	if !ok || o.Container != "" || o.Session != "" || o.ContainerID == "" {
		return o, ok
	}
	ictx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	// Looked up once: a container already removed is named by its ID
	// (no Docker call per request for a placeholder sent over and over).
	o.Container = "container " + shortID(o.ContainerID)
	in, err := m.opts.Docker.ContainerInspect(ictx, o.ContainerID)
	if err == nil && in.ContainerJSONBase != nil && strings.TrimPrefix(in.Name, "/") != "" {
		o.Container = strings.TrimPrefix(in.Name, "/")
	}
	m.prov.mu.Lock()
	if cur, ok := m.prov.bySuffix[suffix]; ok && cur.ContainerID == o.ContainerID {
		cur.Container = o.Container
		m.prov.bySuffix[suffix] = cur
	}
	m.prov.mu.Unlock()
	return o, true
}

// notePlaceholder records suffix → owner; the caller holds m.prov.mu.
func (p *provenance) notePlaceholder(pr Provenance, containerID string) {
	if pr.Placeholder == "" {
		return
	}
	o := PlaceholderOwner{Provenance: pr, ContainerID: containerID}
	if pr.Session != "" {
		o.Container = ContainerName(pr.Session)
	}
	p.bySuffix[pr.Placeholder] = o
}

// placeholderKeyPath is where the key lives.
func placeholderKeyPath(stateDir string) string { return filepath.Join(stateDir, PlaceholderKeyName) }
