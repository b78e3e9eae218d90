package appliance

import (
	"context"
	"encoding/json"
	"errors"
	"net"
	"os/user"
	"path/filepath"
	"strings"
	"testing"

	"github.com/clauderon/clauderond/appliance/api"
	"github.com/clauderon/clauderond/appliance/audit"
	"github.com/clauderon/clauderond/appliance/config"
)

func peerCtx(uid, gid uint32) context.Context {
	return api.WithPeer(context.Background(), api.Peer{UID: uid, GID: gid, PID: 1})
}

// TestAuthorizeProfile: a listed profile is for its users and groups (by
// name or id) and administrators; an unlisted one is open.
func TestAuthorizeProfile(t *testing.T) {
	cfg := config.Default()
	cfg.Socket.AdminGroup = "4000"
	cfg.Profiles.Access = []config.ProfileAccess{
		{Profile: "team-a", Users: []string{"2001"}},
		{Profile: "team-b", Groups: []string{"3002"}},
	}
	for _, tc := range []struct {
		name    string
		ctx     context.Context
		profile string
		allowed bool
	}{
		{"listed user", peerCtx(2001, 2001), "team-a", true},
		{"other user", peerCtx(2002, 2002), "team-a", false},
		{"group member by primary gid", peerCtx(2002, 3002), "team-b", true},
		{"not in the group", peerCtx(2001, 2001), "team-b", false},
		{"admin group", peerCtx(2009, 4000), "team-a", true},
		{"root", peerCtx(0, 0), "team-b", true},
		{"in-process", context.Background(), "team-b", true},
		{"unlisted profile", peerCtx(2002, 2002), "default", true},
		{"empty means default", peerCtx(2002, 2002), "", true},
	} {
		err := authorizeProfile(tc.ctx, cfg, tc.profile)
		if (err == nil) != tc.allowed {
			t.Errorf("%s: err = %v, want allowed=%v", tc.name, err, tc.allowed)
		}
		if err != nil && (!errors.Is(err, api.ErrForbidden) || !strings.Contains(err.Error(), "profiles.access")) {
			t.Errorf("%s: the refusal %q should be ErrForbidden and say where to fix it", tc.name, err)
		}
	}
	if u, err := user.Current(); err == nil && u.Uid == "0" {
		if !isAdmin(peerCtx(0, 0), cfg) || isAdmin(peerCtx(2001, 2001), cfg) {
			t.Error("isAdmin: root is, a plain user is not")
		}
	}
	single := config.Default()
	if !isAdmin(peerCtx(2001, 2001), single) {
		t.Error("on a single-tenant host (no profiles.access, labels trusted) every socket user sees everything")
	}
}

// TestProfileFor_LabelsTrustedOnlyWhenConfigured: with trust_labels off a
// labelled container the daemon did not make gets no profile (refused),
// an unlabelled one keeps the default, and with it on the label counts.
func TestProfileFor_LabelsTrustedOnlyWhenConfigured(t *testing.T) {
	var recs containerRecords // no session manager: vouches for nothing
	if p, _, reason := profileFor(&recs, false, "id1", "intruder", "team-b"); reason == "" || p != "" ||
		!strings.Contains(reason, "trust_labels") {
		t.Errorf("hardened, labelled, not ours: profile %q reason %q; want a refusal", p, reason)
	}
	if p, _, reason := profileFor(&recs, false, "id2", "ci", ""); reason != "" || p != "" {
		t.Errorf("hardened, unlabelled: profile %q reason %q; want the default profile", p, reason)
	}
	if p, _, reason := profileFor(&recs, true, "id3", "dev", "team-b"); reason != "" || p != "team-b" {
		t.Errorf("trusting labels: profile %q reason %q", p, reason)
	}
	if p, _, reason := profileFor(nil, true, "id4", "dev", "x"); reason != "" || p != "x" {
		t.Errorf("no records at all: profile %q reason %q", p, reason)
	}
}

// TestAudit_TenantSeesOnlyOwnLines: the audit lines of a container carry
// its owner, and a non-admin caller's query returns only its own.
func TestAudit_TenantSeesOnlyOwnLines(t *testing.T) {
	path := filepath.Join(t.TempDir(), "audit.jsonl")
	w, err := audit.Open(path, audit.Options{})
	if err != nil {
		t.Fatal(err)
	}
	w.Write(audit.Record{Container: "a-job", Owner: "alice", Host: "api.anthropic.com", Decision: "intercept"})
	w.Write(audit.Record{Container: "b-job", Owner: "bob", Host: "api.anthropic.com", Decision: "intercept"})
	w.Write(audit.Record{Container: "plain", Host: "api.anthropic.com", Decision: "intercept"})
	w.Close()
	for owner, want := range map[string][]string{"alice": {"a-job"}, "bob": {"b-job"}, "": {"a-job", "b-job", "plain"}} {
		var out strings.Builder
		if err := tailAudit(context.Background(), path, api.AuditQuery{}, owner, &out); err != nil {
			t.Fatal(err)
		}
		var got []string
		for _, l := range strings.Split(strings.TrimSpace(out.String()), "\n") {
			var r audit.Record
			if json.Unmarshal([]byte(l), &r) == nil && r.Container != "" {
				got = append(got, r.Container)
			}
		}
		if strings.Join(got, ",") != strings.Join(want, ",") {
			t.Errorf("owner %q sees %v, want %v", owner, got, want)
		}
	}
}

// TestPeerCred_FailsClosed: a connection whose peer the kernel cannot
// name is nobody, not an in-process (administrator) caller.
func TestPeerCred_FailsClosed(t *testing.T) {
	a, b := net.Pipe()
	defer a.Close()
	defer b.Close()
	p, ok := api.PeerFrom(withPeerCred(context.Background(), a))
	if !ok || p.UID != nobodyID {
		t.Fatalf("peer of a connection without credentials = %+v %v, want nobody", p, ok)
	}
	cfg := config.Default()
	cfg.Profiles.TrustLabels = false
	if isAdmin(withPeerCred(context.Background(), a), cfg) {
		t.Error("an unnamed peer is an administrator")
	}
}
