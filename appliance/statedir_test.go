package appliance

import (
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/clauderon/clauderond/netfilter/nftest"
)

// TestStateDir_RefusesDirOthersCanSteer: a state dir someone else owns or
// may write is refused with the fix, since root would follow whatever
// symlinks they plant there (audit.jsonl → /etc/shadow).
func TestStateDir_RefusesDirOthersCanSteer(t *testing.T) {
	uid := os.Geteuid()
	tests := []struct {
		name    string
		mode    os.FileMode
		uid     int // the daemon's uid given to the check
		wantMsg string
	}{
		{"owned_private", 0o700, uid, ""},
		{"owned_searchable_for_the_socket_group", 0o750, uid, ""},
		{"owned_by_another_user", 0o700, uid + 4242, "sudo chown "},
		{"group_writable", 0o770, uid, "chmod go-w "},
		{"world_writable", 0o777, uid, "chmod go-w "},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := filepath.Join(t.TempDir(), "state")
			if err := os.Mkdir(dir, 0o700); err != nil {
				t.Fatal(err)
			}
			if err := os.Chmod(dir, tt.mode); err != nil {
				t.Fatal(err)
			}
			err := checkStateDirOwner(dir, tt.uid)
			if tt.wantMsg == "" {
				if err != nil {
					t.Fatalf("checkStateDirOwner = %v, want ok", err)
				}
				return
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantMsg) || !strings.Contains(err.Error(), dir+"`") {
				t.Errorf("checkStateDirOwner = %v, want a refusal naming `%s%s`", err, tt.wantMsg, dir)
			}
		})
	}
}

// TestStateDir_UserOwnedDirRefusedUnderRoot is the real case: the sudo
// user's ~/.clauderon, owned by that user, refused by the root daemon.
func TestStateDir_UserOwnedDirRefusedUnderRoot(t *testing.T) {
	nftest.RequireRoot(t)
	dir := filepath.Join(t.TempDir(), ".clauderon")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(dir, 1000, 1000); err != nil {
		t.Fatal(err)
	}
	err := prepareStateDir(dir)
	if err == nil || !strings.Contains(err.Error(), "sudo chown root:root "+dir) {
		t.Fatalf("prepareStateDir(user-owned) = %v, want the chown root:root fix", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "secrets")); err == nil {
		t.Error("secrets/ was created in a refused state dir")
	}
}

// TestStateDir_CreatedPrivate: a missing state dir is created 0700 and the
// daemon's own.
func TestStateDir_CreatedPrivate(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "home", ".clauderon")
	if err := prepareStateDir(dir); err != nil {
		t.Fatal(err)
	}
	for _, p := range []string{dir, filepath.Join(dir, "secrets")} {
		fi, err := os.Stat(p)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm() != 0o700 {
			t.Errorf("%s mode %#o, want 0700", p, fi.Mode().Perm())
		}
		if owner, _ := fileOwner(fi); owner != os.Geteuid() {
			t.Errorf("%s owner %d, want %d", p, owner, os.Geteuid())
		}
	}
}

// TestStateDir_SecretsAndKeyNotFollowedOrForeign: secrets/ or the CA key as
// a symlink, or owned by someone else, are refused.
func TestStateDir_SecretsAndKeyNotFollowedOrForeign(t *testing.T) {
	dir := t.TempDir()
	target := t.TempDir()
	if err := os.Symlink(target, filepath.Join(dir, "secrets")); err != nil {
		t.Fatal(err)
	}
	if err := prepareStateDir(dir); err == nil || !strings.Contains(err.Error(), "symbolic link") {
		t.Errorf("secrets/ symlink: %v, want a refusal", err)
	}
	os.Remove(filepath.Join(dir, "secrets"))
	if err := os.Symlink(filepath.Join(target, "key"), filepath.Join(dir, "proxy-ca-key.pem")); err != nil {
		t.Fatal(err)
	}
	if err := prepareStateDir(dir); err == nil || !strings.Contains(err.Error(), "symbolic link") {
		t.Errorf("CA key symlink: %v, want a refusal", err)
	}
	os.Remove(filepath.Join(dir, "proxy-ca-key.pem"))
	if err := checkPrivate(filepath.Join(dir, "secrets"), os.Geteuid()+4242); err == nil || !strings.Contains(err.Error(), "chown -R") {
		t.Errorf("foreign secrets/: %v, want the chown fix", err)
	}
}
