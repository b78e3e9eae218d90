package appliance

import (
	"context"
	"fmt"
	"net/netip"
	"os/user"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"

	"github.com/clauderon/clauderond/appliance/api"
	"github.com/clauderon/clauderond/appliance/config"
	"github.com/clauderon/clauderond/appliance/identity"
	"github.com/clauderon/clauderond/appliance/session"
)

// Tenants on one host: who may use which profile (profiles.access), who
// administers (socket.admin_group, and root), and which containers the
// daemon made itself (session.Manager's provenance), so that a
// clauderon.profile label copied onto a container made some other way is
// worth nothing when profiles.trust_labels is off.

// peerAccount is a socket peer's user name and every group id it belongs to.
type peerAccount struct {
	uid    uint32
	name   string
	groups []string // gids, decimal
}

func accountOf(p api.Peer) peerAccount {
	a := peerAccount{uid: p.UID, name: strconv.FormatUint(uint64(p.UID), 10), groups: []string{strconv.FormatUint(uint64(p.GID), 10)}}
	if u, err := user.LookupId(a.name); err == nil {
		a.name = u.Username
		if gids, err := u.GroupIds(); err == nil {
			a.groups = append(a.groups, gids...)
		}
	}
	return a
}

// inGroup reports whether the account belongs to group (a name or gid).
func (a peerAccount) inGroup(group string) bool {
	gid := group
	if g, err := user.LookupGroup(group); err == nil {
		gid = g.Gid
	}
	return slices.Contains(a.groups, gid)
}

// multiTenant reports whether tenants are configured (profiles.access
// entries, or labels not trusted); on a single-tenant host every user of
// the socket sees everything, as before tenants existed.
func multiTenant(cfg *config.Config) bool {
	return len(cfg.Profiles.Access) > 0 || !cfg.Profiles.TrustLabels
}

// isAdmin: root, a member of socket.admin_group, or anyone on a
// single-tenant host.
func isAdmin(ctx context.Context, cfg *config.Config) bool {
	p, ok := api.PeerFrom(ctx)
	if !ok || p.UID == 0 || !multiTenant(cfg) {
		return true
	}
	return cfg.Socket.AdminGroup != "" && accountOf(p).inGroup(cfg.Socket.AdminGroup)
}

// authorizeProfile says whether the request's caller may use profile: a
// profile listed in profiles.access is for its users and groups (and
// administrators) only; one not listed is open.
func authorizeProfile(ctx context.Context, cfg *config.Config, profile string) error {
	if profile == "" {
		profile = "default"
	}
	i := slices.IndexFunc(cfg.Profiles.Access, func(a config.ProfileAccess) bool { return a.Profile == profile })
	if i < 0 || isAdmin(ctx, cfg) {
		return nil
	}
	acc := cfg.Profiles.Access[i]
	p, _ := api.PeerFrom(ctx)
	a := accountOf(p)
	uid := strconv.FormatUint(uint64(a.uid), 10)
	if slices.Contains(acc.Users, a.name) || slices.Contains(acc.Users, uid) ||
		slices.ContainsFunc(acc.Groups, a.inGroup) {
		return nil
	}
	return fmt.Errorf("profile %q is for %s only, and %s is not among them; ask an administrator to add you to profiles.access in the daemon's config: %w",
		profile, who(acc), a.name, api.ErrForbidden)
}

func who(a config.ProfileAccess) string {
	var parts []string
	if len(a.Users) > 0 {
		parts = append(parts, "users "+strings.Join(a.Users, ", "))
	}
	if len(a.Groups) > 0 {
		parts = append(parts, "groups "+strings.Join(a.Groups, ", "))
	}
	return strings.Join(parts, " and ")
}

// containerRecords answers which containers the daemon made, once the
// session manager exists (it may not: a fake Docker in tests, or a store
// that failed to open, and then nothing is vouched for).
type containerRecords struct {
	m atomic.Pointer[session.Manager]
}

func (r *containerRecords) vouch(id string) (session.Provenance, bool) {
	if r == nil || id == "" {
		return session.Provenance{}, false
	}
	m := r.m.Load()
	if m == nil {
		return session.Provenance{}, false
	}
	return m.Vouch(id)
}

func (r *containerRecords) bindRun(ctx context.Context, id string, labels map[string]string) {
	if m := r.m.Load(); m != nil {
		m.BindRun(ctx, id, labels)
	}
}

// profileFor decides the profile a container's request uses: the recorded
// one for a container the daemon made; else its label, unless labels are
// not trusted (profiles.trust_labels off), where a labelled container the
// daemon did not make is refused (reason non-empty).
func profileFor(records *containerRecords, trustLabels bool, id, name, label string) (profile, owner, reason string) {
	if p, ok := records.vouch(id); ok {
		return p.Profile, p.Owner, ""
	}
	if label != "" && !trustLabels {
		return "", "", fmt.Sprintf("container %q carries clauderon.profile=%s but was not created by clauderond (clauderon create or clauderon run); "+
			"profiles.trust_labels is off, so a label alone selects no profile", name, label)
	}
	return label, "", ""
}

// tableList is the identity table's containers, none before it exists.
func (d *daemon) tableList() []identity.Container {
	if d.table == nil {
		return nil
	}
	return d.table.List()
}

// ownerOf names who made a container through clauderond, by container ID
// or, for a DNS query that names none, by the address it came from.
func (d *daemon) ownerOf(id string, src netip.Addr) string {
	if id == "" && src.IsValid() && d.table != nil {
		if c, ok := d.table.Lookup(src); ok {
			id = c.ID
		}
	}
	p, _ := d.records.vouch(id)
	return p.Owner
}
