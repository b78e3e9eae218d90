package session

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/clauderon/clauderond/appliance/api"
)

// TestOwners_EachSeesAndTouchesOnlyTheirOwn: tenant A's session is
// invisible to tenant B (list, logs, stop, rm), visible to root and to an
// administrator.
func TestOwners_EachSeesAndTouchesOnlyTheirOwn(t *testing.T) {
	d := newFakeDocker()
	m := newManager(t, d, stateDir(t))
	admins := map[uint32]bool{3000: true}
	m.opts.IsAdmin = func(ctx context.Context) bool { p, _ := api.PeerFrom(ctx); return admins[p.UID] }
	alice, bob, admin, root := asPeer(2001, 2001), asPeer(2002, 2002), asPeer(3000, 3000), asPeer(0, 0)
	se, err := m.Create(alice, api.CreateRequest{Name: "a-job", Prompt: "p"})
	if err != nil {
		t.Fatal(err)
	}
	if se.OwnerUID != "2001" || se.Owner == "" || se.ContainerID == "" {
		t.Fatalf("session = %+v, want alice as owner and the container ID", se)
	}
	for who, ctx := range map[string]context.Context{"alice": alice, "admin": admin, "root": root} {
		if ss, _ := m.List(ctx); len(ss) != 1 {
			t.Errorf("%s sees %d sessions, want 1", who, len(ss))
		}
	}
	if ss, _ := m.List(bob); len(ss) != 0 {
		t.Errorf("bob sees %+v", ss)
	}
	if err := m.Logs(bob, "a-job", false, io.Discard); !errors.Is(err, api.ErrNotFound) {
		t.Errorf("bob reads alice's logs: %v", err)
	}
	if _, err := m.Control(bob, "a-job", api.ActionStop); !errors.Is(err, api.ErrNotFound) {
		t.Errorf("bob stops alice's session: %v", err)
	}
	if err := m.Remove(bob, "a-job"); !errors.Is(err, api.ErrNotFound) {
		t.Errorf("bob removes alice's session: %v", err)
	}
	if _, err := m.Control(alice, "a-job", api.ActionStop); err != nil {
		t.Errorf("alice stops her own session: %v", err)
	}
	if err := m.Remove(admin, "a-job"); err != nil {
		t.Errorf("an administrator removes it: %v", err)
	}
}

// TestOwners_ProfileAuthorization: a profile the caller may not use is
// refused for sessions and runs alike, before anything is made.
func TestOwners_ProfileAuthorization(t *testing.T) {
	d := newFakeDocker()
	m := newManager(t, d, stateDir(t))
	m.opts.Authorize = func(ctx context.Context, profile string) error {
		if p, _ := api.PeerFrom(ctx); profile == "team-b" && p.UID != 2002 {
			return fmt.Errorf("profile %q is not yours: %w", profile, api.ErrForbidden)
		}
		return nil
	}
	alice := asPeer(2001, 2001)
	if _, err := m.Create(alice, api.CreateRequest{Name: "steal", Prompt: "p", Profile: "team-b"}); !errors.Is(err, api.ErrForbidden) {
		t.Errorf("alice creates with team-b's profile: %v", err)
	}
	if _, err := m.RunArgs(alice, api.RunRequest{Profile: "team-b"}); !errors.Is(err, api.ErrForbidden) {
		t.Errorf("alice runs with team-b's profile: %v", err)
	}
	if len(d.containers) != 0 {
		t.Errorf("containers were made: %d", len(d.containers))
	}
	if _, err := m.Create(asPeer(2002, 2002), api.CreateRequest{Name: "ok", Prompt: "p", Profile: "team-b"}); err != nil {
		t.Errorf("bob uses his own profile: %v", err)
	}
}

// TestProvenance_OwnContainersByIDAndRunLabel: the manager vouches for the
// containers it made — sessions by container ID, runs by the run label
// bound to the first container that shows it — across a restart; a copied
// label is worth nothing.
func TestProvenance_OwnContainersByIDAndRunLabel(t *testing.T) {
	d := newFakeDocker()
	dir := stateDir(t)
	m := newManager(t, d, dir)
	alice := asPeer(2001, 2001)
	se, err := m.Create(alice, api.CreateRequest{Name: "s", Prompt: "p", Profile: "work"})
	if err != nil {
		t.Fatal(err)
	}
	if p, ok := m.Vouch(se.ContainerID); !ok || p.Profile != "work" || p.Session != "s" {
		t.Errorf("Vouch(session container) = %+v %v", p, ok)
	}
	ra, err := m.RunArgs(alice, api.RunRequest{Profile: "work"})
	if err != nil {
		t.Fatal(err)
	}
	var runID string
	for _, a := range ra.Args {
		if v, ok := strings.CutPrefix(a, LabelRun+"="); ok {
			runID = v
		}
	}
	labels := map[string]string{LabelRun: runID, LabelProfile: "work"}
	m.BindRun(context.Background(), "run-container-1", labels)
	m.BindRun(context.Background(), "copycat-container", labels)
	if p, ok := m.Vouch("run-container-1"); !ok || p.Profile != "work" || p.Session != "" {
		t.Errorf("Vouch(run container) = %+v %v", p, ok)
	}
	if p, ok := m.Vouch("copycat-container"); ok {
		t.Errorf("a second container with the same run label was vouched for: %+v", p)
	}
	if _, ok := m.Vouch("stranger"); ok {
		t.Error("a container the daemon did not make was vouched for")
	}
	m.Close()
	m2, err := New(context.Background(), m.opts)
	if err != nil {
		t.Fatal(err)
	}
	defer m2.Close()
	for _, id := range []string{se.ContainerID, "run-container-1"} {
		if _, ok := m2.Vouch(id); !ok {
			t.Errorf("after a restart %s is no longer vouched for", id)
		}
	}
	if err := m2.Remove(context.Background(), "s"); err != nil {
		t.Fatal(err)
	}
	if _, ok := m2.Vouch(se.ContainerID); ok {
		t.Error("a removed session's container is still vouched for")
	}
}

// TestCodexConfig_OldDefaultIsReplaced: a state dir seeded by an earlier
// version (whose Codex config made Codex send no key) gets the current
// one; an operator's edited file is kept.
func TestCodexConfig_OldDefaultIsReplaced(t *testing.T) {
	dir := stateDir(t)
	if err := os.MkdirAll(filepath.Join(dir, "codex"), 0o755); err != nil {
		t.Fatal(err)
	}
	p := filepath.Join(dir, "codex", "config.toml")
	os.WriteFile(p, []byte(oldCodexConfig), 0o644)
	m := newManager(t, newFakeDocker(), dir)
	if _, err := m.Create(context.Background(), api.CreateRequest{Name: "c", Prompt: "p", Agent: "codex"}); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(p); string(got) != codexConfig {
		t.Errorf("the old default was not replaced:\n%s", got)
	}
	os.WriteFile(p, []byte("model = \"mine\"\n"), 0o644)
	if _, err := m.Create(context.Background(), api.CreateRequest{Name: "d", Prompt: "p", Agent: "codex"}); err != nil {
		t.Fatal(err)
	}
	if got, _ := os.ReadFile(p); string(got) != "model = \"mine\"\n" {
		t.Errorf("the operator's config was overwritten:\n%s", got)
	}
}
