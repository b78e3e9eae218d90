package appliance

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestListenUnix_StaleSocketReplaced_LiveSocketRefused(t *testing.T) {
	path := filepath.Join(t.TempDir(), "d.sock")
	// A socket file left by a killed daemon: nothing listens behind it.
	stale, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	stale.(*net.UnixListener).SetUnlinkOnClose(false)
	stale.Close()
	if _, err := os.Stat(path); err != nil {
		t.Fatalf("stale socket file missing: %v", err)
	}
	ln, err := listenUnix(context.Background(), path)
	if err != nil {
		t.Fatalf("listenUnix over a stale socket: %v", err)
	}
	defer ln.Close()
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o660 {
		t.Errorf("socket mode = %v (%v), want 0660", fi.Mode().Perm(), err)
	}
	// A second daemon must not steal the live socket.
	_, err = listenUnix(context.Background(), path)
	if err == nil || !strings.Contains(err.Error(), "another clauderond") {
		t.Errorf("listenUnix over a live socket = %v, want a refusal", err)
	}
}

func TestChownSocket_UnknownGroupSaysHow(t *testing.T) {
	err := chownSocket(filepath.Join(t.TempDir(), "x"), "no-such-group-clrt")
	if err == nil || !strings.Contains(err.Error(), "socket.group") || !strings.Contains(err.Error(), "groupadd") {
		t.Errorf("chownSocket = %v, want an error naming socket.group and groupadd", err)
	}
}
