package main

import (
	"context"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/clauderon/clauderond/appliance/api"
)

// evilBackend is a fake daemon another user runs on a socket path root's
// CLI might pick (under sudo, ~SUDO_USER/.clauderon/clauderond.sock).
type evilBackend struct{ fakeBackend }

func (e *evilBackend) RunArgs(context.Context, api.RunRequest) (api.RunArgs, error) {
	return api.RunArgs{Args: []string{"--privileged", "-v", "/:/host", "alpine", "chroot", "/host", "sh", "-c", "id > /root/owned"}}, nil
}

// listenAs listens on sock with the calling thread's effective uid set to
// uid, so the socket's SO_PEERCRED names uid (the kernel records the
// listener's credentials at listen). Needs root.
func listenAs(t *testing.T, sock string, uid int) net.Listener {
	t.Helper()
	type res struct {
		ln  net.Listener
		err error
	}
	ch := make(chan res)
	go func() {
		runtime.LockOSThread() // never unlocked: the thread dies with the goroutine
		if _, _, e := syscall.RawSyscall(syscall.SYS_SETRESUID, ^uintptr(0), uintptr(uid), ^uintptr(0)); e != 0 {
			ch <- res{nil, e}
			return
		}
		ln, err := net.Listen("unix", sock)
		ch <- res{ln, err}
	}()
	r := <-ch
	if r.err != nil {
		t.Fatal(r.err)
	}
	return r.ln
}

// TestAttack_RootCLIRefusesAnotherUsersDaemon: a local user plants a fake
// daemon on the socket path root's CLI falls back to (the invoking user's
// ~/.clauderon). `sudo clauderon run IMAGE` must not exec `docker run` with
// the flags that daemon returns (--privileged -v /:/host … : root's shell).
func TestAttack_RootCLIRefusesAnotherUsersDaemon(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("needs root to serve a socket as another uid")
	}
	home := t.TempDir()
	for _, d := range []string{filepath.Dir(home), home} {
		if err := os.Chmod(d, 0o777); err != nil {
			t.Fatal(err)
		}
	}
	sockDir := filepath.Join(home, ".clauderon")
	if err := os.Mkdir(sockDir, 0o777); err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(sockDir, 0o777); err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(sockDir, "clauderond.sock")
	ln := listenAs(t, sock, 65534)
	eb := &evilBackend{fakeBackend{status: readyStatus, wsRoot: t.TempDir()}}
	srv := &http.Server{Handler: api.NewHandler(eb, nil), ReadHeaderTimeout: 5 * time.Second}
	done := make(chan struct{})
	go func() { defer close(done); _ = srv.Serve(ln) }()
	t.Cleanup(func() { _ = srv.Close(); <-done })

	var execs [][]string
	ex := func(a []string, _ []string) error { execs = append(execs, a); return nil }
	var out, errOut strings.Builder
	code := run(context.Background(), []string{"run", "--rm", "myimage"}, strings.NewReader(""), &out, &errOut,
		[]string{"HOME=" + home}, ex)
	if len(execs) != 0 {
		t.Fatalf("root's CLI exec'd docker with another user's daemon's flags: %q", execs)
	}
	if code == 0 || !strings.Contains(errOut.String(), "uid 65534") {
		t.Errorf("exit %d, stderr %q; want a refusal naming uid 65534", code, errOut.String())
	}
}

func TestDaemonPeerAllowed(t *testing.T) {
	for _, tt := range []struct {
		peer, self int
		want       bool
	}{{0, 0, true}, {0, 1000, true}, {1000, 1000, true}, {1000, 0, false}, {1001, 1000, false}} {
		if got := daemonPeerAllowed(tt.peer, tt.self); got != tt.want {
			t.Errorf("daemonPeerAllowed(%d, %d) = %v", tt.peer, tt.self, got)
		}
	}
}
