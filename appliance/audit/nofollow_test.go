package audit

import (
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// TestOpen_NeverWritesThroughWhatWasPlanted: the root daemon must not
// append to or chmod a file it is pointed at from the state dir: a symlink
// (audit.jsonl → /etc/shadow), a hard link, or a FIFO (which would block)
// at the audit path is refused and the target left as it was.
func TestOpen_NeverWritesThroughWhatWasPlanted(t *testing.T) {
	tests := []struct {
		name    string
		plant   func(t *testing.T, path, target string)
		wantMsg string
	}{
		{"symlink", func(t *testing.T, path, target string) {
			if err := os.Symlink(target, path); err != nil {
				t.Fatal(err)
			}
		}, "symbolic link"},
		{"hard_link", func(t *testing.T, path, target string) {
			if err := os.Link(target, path); err != nil {
				t.Fatal(err)
			}
		}, "hard links"},
		{"fifo", func(t *testing.T, path, _ string) {
			if err := syscall.Mkfifo(path, 0o600); err != nil {
				t.Fatal(err)
			}
		}, ""}, // ENXIO (no reader) or "not a regular file"
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			target := filepath.Join(dir, "shadow")
			if err := os.WriteFile(target, []byte("root:secret:\n"), 0o640); err != nil {
				t.Fatal(err)
			}
			path := filepath.Join(dir, "audit.jsonl")
			tt.plant(t, path, target)
			done := make(chan error, 1)
			go func() {
				w, err := Open(path, Options{})
				if err == nil {
					w.Write(sample(1))
					w.Close()
				}
				done <- err
			}()
			var err error
			select {
			case err = <-done:
			case <-time.After(5 * time.Second):
				t.Fatal("Open blocked")
			}
			if err == nil || !strings.Contains(err.Error(), tt.wantMsg) {
				t.Errorf("Open = %v, want a refusal mentioning %q", err, tt.wantMsg)
			}
			got, _ := os.ReadFile(target)
			fi, _ := os.Stat(target)
			if string(got) != "root:secret:\n" || fi.Mode().Perm() != 0o640 {
				t.Errorf("target changed: %q mode %#o", got, fi.Mode().Perm())
			}
		})
	}
}

// TestRotation_DoesNotFollowPlantedBackups: a symlink planted at a backup
// name is renamed or removed as a link; its target is never written,
// truncated or removed.
func TestRotation_DoesNotFollowPlantedBackups(t *testing.T) {
	dir := t.TempDir()
	target := filepath.Join(dir, "victim")
	if err := os.WriteFile(target, []byte("keep\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "audit.jsonl")
	for _, i := range []int{1, 2} {
		if err := os.Symlink(target, backupName(path, i)); err != nil {
			t.Fatal(err)
		}
	}
	w, err := Open(path, Options{MaxBytes: 600, MaxBackups: 2})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 20 {
		w.Write(sample(i))
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if w.Stats().Rotations == 0 {
		t.Fatal("no rotation happened; the test proves nothing")
	}
	got, err := os.ReadFile(target)
	fi, _ := os.Stat(target)
	if err != nil || string(got) != "keep\n" || fi.Mode().Perm() != 0o644 {
		t.Errorf("target after rotations: %q, %v", got, err)
	}
}

// TestTail_DoesNotFollowPlantedSymlink: the audit API never serves a file a
// planted link points at.
func TestTail_DoesNotFollowPlantedSymlink(t *testing.T) {
	dir := t.TempDir()
	target := filepath.Join(dir, "elsewhere.jsonl")
	w, err := Open(target, Options{})
	if err != nil {
		t.Fatal(err)
	}
	w.Write(sample(7))
	w.Close()
	path := filepath.Join(dir, "audit.jsonl")
	if err := os.Symlink(target, path); err != nil {
		t.Fatal(err)
	}
	if got, err := Tail(path, 10, Filter{}); err == nil || len(got) != 0 {
		t.Errorf("Tail through a symlink = %d records, %v; want an error", len(got), err)
	}
}

// TestOpen_ForeignFileRefused: an audit.jsonl another user owns is not
// appended to or chmodded (needs root to make one).
func TestOpen_ForeignFileRefused(t *testing.T) {
	if os.Geteuid() != 0 {
		if os.Getenv("CLAUDERON_REQUIRE_ROOT_TESTS") == "1" {
			t.Fatal("root required (CLAUDERON_REQUIRE_ROOT_TESTS=1)")
		}
		t.Skip("needs root")
	}
	path := filepath.Join(t.TempDir(), "audit.jsonl")
	if err := os.WriteFile(path, nil, 0o644); err != nil {
		t.Fatal(err)
	}
	if err := os.Chown(path, 1000, 1000); err != nil {
		t.Fatal(err)
	}
	if _, err := Open(path, Options{}); err == nil || !strings.Contains(err.Error(), "belongs to uid 1000") {
		t.Errorf("Open(foreign) = %v, want a refusal", err)
	}
	if fi, _ := os.Stat(path); fi.Mode().Perm() != 0o644 {
		t.Errorf("foreign file chmodded to %#o", fi.Mode().Perm())
	}
}
