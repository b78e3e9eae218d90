package session

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"fmt"
	"os/user"
	"strconv"
	"sync"

	"github.com/clauderon/clauderond/appliance/api"
)

// Owners and provenance.
//
// Every session and every `clauderon run` belongs to the Unix user on the
// other end of the daemon's socket (SO_PEERCRED, api.PeerFrom): a caller
// sees, follows, stops and removes only its own sessions unless
// Options.IsAdmin says it is an administrator. A caller may ask only for a
// profile Options.Authorize allows it.
//
// The manager also keeps, in memory and in db.sqlite, which containers it
// made and for whom, so the appliance can tell its own containers (and
// their profile) from a container that merely copied a label: a session's
// container is known by its ID; a `clauderon run` container by the label
// clauderon.run=<random id> the daemon handed out, bound to the first
// container that shows it (a copy of the label on a later container is
// worth nothing).

// LabelRun carries a `clauderon run` container's run id.
const LabelRun = "clauderon.run"

// Provenance is what the daemon recorded about a container it made.
type Provenance struct {
	Owner   string // the owner's user name (uid when unnamed)
	Profile string
	Session string // the session's name; "" for a `clauderon run`
	// Placeholder is the suffix of the container's own placeholders (see
	// placeholder.go).
	Placeholder string
}

// caller is the socket peer of a request.
type caller struct {
	uid   string // "" for an in-process call (no socket)
	name  string
	admin bool
}

func (m *Manager) callerOf(ctx context.Context) caller {
	p, ok := api.PeerFrom(ctx)
	if !ok {
		return caller{admin: true}
	}
	uid := strconv.FormatUint(uint64(p.UID), 10)
	c := caller{uid: uid, name: uid, admin: p.UID == 0}
	if u, err := user.LookupId(uid); err == nil {
		c.name = u.Username
	}
	if !c.admin && m.opts.IsAdmin != nil {
		c.admin = m.opts.IsAdmin(ctx)
	}
	return c
}

// sees reports whether c may see (and act on) se.
func (c caller) sees(se api.Session) bool {
	return c.admin || se.OwnerUID == "" || se.OwnerUID == c.uid
}

// authorize checks that the caller may use profile.
func (m *Manager) authorize(ctx context.Context, profile string) error {
	if m.opts.Authorize == nil {
		return nil
	}
	return m.opts.Authorize(ctx, profile)
}

// notYours is how another owner's session looks: it does not exist.
func notYours(name string) error {
	return fmt.Errorf("session %q: %w", name, api.ErrNotFound)
}

// visible returns the named session if the caller may see it.
func (m *Manager) visible(ctx context.Context, name string) (api.Session, error) {
	se, err := m.st.get(ctx, name)
	if err != nil {
		return se, err
	}
	if !m.callerOf(ctx).sees(se) {
		return api.Session{}, notYours(name)
	}
	return se, nil
}

// provenance is the in-memory index of the containers the daemon made.
type provenance struct {
	mu          sync.RWMutex
	byContainer map[string]Provenance // container ID → provenance
	pendingRuns map[string]Provenance // run id → provenance, until a container shows it
	mounts      map[string][]string   // run id → the host paths clauderond itself mounts for it
	// claimed holds the pending run ids a container create already used
	// (ClaimRun): the token is in the container's labels, visible to
	// anyone who can list containers or follow Docker's events.
	claimed map[string]bool
	// bySuffix maps each per-container placeholder suffix to the container
	// it was handed to. Entries outlive their container (a leaked
	// placeholder still names where it came from), not a restart for
	// sessions removed before it.
	bySuffix map[string]PlaceholderOwner
	key      *placeholderKey // state_dir/placeholder.key, loaded by loadProvenance
}

func newProvenance() *provenance {
	return &provenance{byContainer: map[string]Provenance{}, pendingRuns: map[string]Provenance{}, bySuffix: map[string]PlaceholderOwner{},
		mounts: map[string][]string{}, claimed: map[string]bool{}}
}

// Vouch returns what the daemon recorded about the container with this
// ID; ok is false for a container it did not make.
func (m *Manager) Vouch(containerID string) (Provenance, bool) {
	m.prov.mu.RLock()
	defer m.prov.mu.RUnlock()
	p, ok := m.prov.byContainer[containerID]
	return p, ok
}

// BindRun ties a `clauderon run` container to its run record the first
// time the container shows the record's id in its LabelRun; later
// containers with the same id get nothing.
func (m *Manager) BindRun(ctx context.Context, containerID string, labels map[string]string) {
	id := labels[LabelRun]
	if id == "" {
		return
	}
	m.prov.mu.Lock()
	p, ok := m.prov.pendingRuns[id]
	if ok {
		delete(m.prov.pendingRuns, id)
		delete(m.prov.mounts, id)
		delete(m.prov.claimed, id)
		m.prov.byContainer[containerID] = p
		m.prov.notePlaceholder(p, containerID)
	}
	m.prov.mu.Unlock()
	if !ok {
		return
	}
	if err := m.st.bindRun(ctx, id, containerID); err != nil {
		m.log.Warn("recording a run's container", "run", id, "err", err)
	}
}

// newRun records a `clauderon run` for the caller and profile and returns
// its id and provenance (with its placeholder suffix).
func (m *Manager) newRun(ctx context.Context, c caller, profile string) (string, Provenance, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", Provenance{}, fmt.Errorf("naming a run: %w", err)
	}
	id := hex.EncodeToString(b[:])
	p := Provenance{Owner: c.name, Profile: profile}
	p.Placeholder = m.placeholderSuffixFor(p, id)
	if err := m.st.insertRun(ctx, id, c.uid, p); err != nil {
		return "", Provenance{}, err
	}
	m.prov.mu.Lock()
	m.prov.pendingRuns[id] = p
	m.prov.notePlaceholder(p, "")
	m.prov.mu.Unlock()
	return id, p, nil
}

// loadProvenance loads (or creates) the placeholder key and fills the
// index from the database.
func (m *Manager) loadProvenance(ctx context.Context) error {
	key, err := loadOrCreatePlaceholderKey(placeholderKeyPath(m.opts.StateDir))
	if err != nil {
		return err
	}
	m.prov.mu.Lock()
	m.prov.key = key
	m.prov.mu.Unlock()
	ss, err := m.st.list(ctx)
	if err != nil {
		return err
	}
	runs, err := m.st.listRuns(ctx)
	if err != nil {
		return err
	}
	m.prov.mu.Lock()
	defer m.prov.mu.Unlock()
	for _, r := range runs {
		r.prov.Placeholder = m.placeholderSuffixFor(r.prov, r.id)
		if r.containerID != "" {
			m.prov.byContainer[r.containerID] = r.prov
		} else {
			m.prov.pendingRuns[r.id] = r.prov
		}
		m.prov.notePlaceholder(r.prov, r.containerID)
	}
	for _, se := range ss {
		if se.ContainerID != "" {
			p := m.sessionProvenance(se)
			m.prov.byContainer[se.ContainerID] = p
			m.prov.notePlaceholder(p, se.ContainerID)
		}
	}
	return nil
}

func (m *Manager) sessionProvenance(se api.Session) Provenance {
	p := Provenance{Owner: se.Owner, Profile: se.Profile, Session: se.Name}
	p.Placeholder = m.placeholderSuffixFor(p, "")
	return p
}

func (m *Manager) recordSessionContainer(se api.Session) {
	p := m.sessionProvenance(se)
	m.prov.mu.Lock()
	defer m.prov.mu.Unlock()
	m.prov.byContainer[se.ContainerID] = p
	m.prov.notePlaceholder(p, se.ContainerID)
}

func (m *Manager) forgetContainer(id string) {
	m.prov.mu.Lock()
	defer m.prov.mu.Unlock()
	delete(m.prov.byContainer, id)
}

// expectRun registers a one-time run token for a container clauderond is
// about to create itself.
func (m *Manager) expectRun(p Provenance) (string, error) {
	var b [16]byte
	if _, err := rand.Read(b[:]); err != nil {
		return "", fmt.Errorf("naming a run: %w", err)
	}
	id := hex.EncodeToString(b[:])
	if p.Placeholder == "" {
		p.Placeholder = m.placeholderSuffixFor(p, id)
	}
	m.prov.mu.Lock()
	m.prov.pendingRuns[id] = p
	if p.Session == "" { // a session's suffix is noted with its container
		m.prov.notePlaceholder(p, "")
	}
	m.prov.mu.Unlock()
	return id, nil
}

// ExpectsRun reports whether token is a run token clauderond handed out
// and no container has claimed yet (for Docker's authorization plugin).
func (m *Manager) ExpectsRun(token string) bool {
	m.prov.mu.RLock()
	defer m.prov.mu.RUnlock()
	_, ok := m.prov.pendingRuns[token]
	return ok
}

// ClaimRun marks a pending run token as used by one container create
// (Docker's authorization plugin admits one create per token): false when
// the token is unknown or already claimed.
func (m *Manager) ClaimRun(token string) bool {
	m.prov.mu.Lock()
	defer m.prov.mu.Unlock()
	if _, ok := m.prov.pendingRuns[token]; !ok || m.prov.claimed[token] {
		return false
	}
	m.prov.claimed[token] = true
	return true
}

// ReleaseRun undoes ClaimRun when dockerd did not create the container
// (e.g. the image was missing and the client pulls and retries).
func (m *Manager) ReleaseRun(token string) {
	m.prov.mu.Lock()
	defer m.prov.mu.Unlock()
	delete(m.prov.claimed, token)
}

// setMounts records the host paths clauderond mounts into the container of
// run token, for Docker's authorization plugin: they lie in the state dir,
// which the plugin otherwise refuses to mount.
func (m *Manager) setMounts(token string, sources []string) {
	m.prov.mu.Lock()
	defer m.prov.mu.Unlock()
	m.prov.mounts[token] = sources
}

// OwnMounts returns the host paths clauderond itself mounts for the
// container carrying run token (nil for an unknown token).
func (m *Manager) OwnMounts(token string) []string {
	m.prov.mu.RLock()
	defer m.prov.mu.RUnlock()
	return m.prov.mounts[token]
}

// ProbeToken registers a run token for a container the daemon makes for
// itself (the doctor's probe) with the default profile and the given
// mounts.
func (m *Manager) ProbeToken(mounts []string) (string, error) {
	tok, err := m.expectRun(Provenance{Owner: "clauderond", Profile: "default"})
	if err != nil {
		return "", err
	}
	m.setMounts(tok, mounts)
	return tok, nil
}
