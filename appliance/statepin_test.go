package appliance

import (
	"context"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

func TestSwappableBy(t *testing.T) {
	base := t.TempDir()
	safe := filepath.Join(base, "safe", "state")
	os.MkdirAll(safe, 0o700)
	os.Chmod(filepath.Dir(safe), 0o755)
	if why := swappableBy(safe, os.Geteuid()); why != "" {
		t.Errorf("a path of our own directories: %q", why)
	}
	open := filepath.Join(base, "open")
	os.Mkdir(open, 0o777)
	os.Chmod(open, 0o777)
	os.Mkdir(filepath.Join(open, "state"), 0o700)
	if why := swappableBy(filepath.Join(open, "state"), os.Geteuid()); !strings.Contains(why, "writable by group or others") {
		t.Errorf("under a world-writable parent: %q", why)
	}
	if os.Geteuid() == 0 {
		home := filepath.Join(base, "home-alice")
		os.Mkdir(home, 0o755)
		os.Chown(home, 4242, 4242)
		os.Mkdir(filepath.Join(home, ".clauderon"), 0o700)
		if why := swappableBy(filepath.Join(home, ".clauderon"), 0); !strings.Contains(why, "uid 4242") {
			t.Errorf("under a user's home (the sudo default): %q", why)
		}
	}
}

// TestStatePin_SwapStopsTheDaemon: renaming the state dir away and putting
// another in its place is noticed, and the watcher returns an error (the
// daemon stops, fail closed).
func TestStatePin_SwapStopsTheDaemon(t *testing.T) {
	base := t.TempDir()
	dir := filepath.Join(base, "state")
	os.Mkdir(dir, 0o700)
	pin, err := pinStateDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	defer pin.f.Close()
	if err := pin.replaced(); err != nil {
		t.Fatalf("untouched: %v", err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- pin.watch(ctx, 10*time.Millisecond) }()
	os.Rename(dir, dir+".old")
	os.Mkdir(dir, 0o700) // the attacker's
	select {
	case err := <-done:
		if err == nil || !strings.Contains(err.Error(), "was replaced") {
			t.Fatalf("watch = %v, want the swap reported", err)
		}
	case <-time.After(10 * time.Second):
		t.Fatal("the swap was not noticed within 10s")
	}
}

// TestStatePin_SwapBeforePinIsRefused: the path is checked
// (prepareStateDir), then pinned; a user who owns a parent swaps their own
// directory in between. The pin must not hold theirs (it would, for good:
// the watcher compares the path with the pin only).
func TestStatePin_SwapBeforePinIsRefused(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to make a directory of another user")
	}
	home := filepath.Join(t.TempDir(), "home-alice")
	os.Mkdir(home, 0o755)
	os.Chown(home, 4242, 4242)
	dir := filepath.Join(home, ".clauderon")
	if err := prepareStateDir(dir); err != nil {
		t.Fatal(err)
	}
	// alice, owning home, renames the checked directory away and puts hers.
	if err := os.Rename(dir, dir+".root"); err != nil {
		t.Fatal(err)
	}
	os.Mkdir(dir, 0o700)
	os.Chown(dir, 4242, 4242)
	pin, err := pinStateDir(dir)
	if err == nil {
		pin.f.Close()
		t.Fatal("pinned a state dir another user swapped in after the check")
	}
	if !strings.Contains(err.Error(), "uid 4242") {
		t.Errorf("err = %v, want it to name the owner", err)
	}
}
