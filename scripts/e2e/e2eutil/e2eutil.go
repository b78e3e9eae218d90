// Package e2eutil holds what the standalone end-to-end suites
// (scripts/e2e/install, tenants, authz) share: building the binaries,
// running the daemon as a subprocess until it answers, running commands as
// another Unix user, and small helpers. Each suite drives the product only
// from outside, like an operator; this package imports nothing of the
// product.
package e2eutil

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"
)

// RepoRoot is the repository root, from a suite's directory
// (scripts/e2e/<suite>).
func RepoRoot(t testing.TB) string {
	t.Helper()
	root, err := filepath.Abs("../../..")
	if err != nil {
		t.Fatal(err)
	}
	return root
}

// RootAndImage fails the test unless it runs as root, and returns the
// image named by the environment variable env (set by scripts/test.sh).
func RootAndImage(t testing.TB, env string) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Fatal("must run as root")
	}
	image := os.Getenv(env)
	if image == "" {
		t.Fatalf("%s is not set (scripts/images.sh prints it; scripts/test.sh exports it)", env)
	}
	return image
}

// BuildBinaries builds clauderond and clauderon (static) into dir/bin and
// returns that directory.
func BuildBinaries(t testing.TB, dir string) string {
	t.Helper()
	bin := filepath.Join(dir, "bin")
	MustRun(t, 5*time.Minute, RepoRoot(t), []string{"CGO_ENABLED=0"}, "go", "build", "-o", bin+"/", "./cmd/clauderond", "./cmd/clauderon")
	return bin
}

// MustRun runs name args in dir with extra environment, failing the test
// with the output on error, and returns the output.
func MustRun(t testing.TB, timeout time.Duration, dir string, env []string, name string, args ...string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, name, args...)
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), env...)
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
	return string(out)
}

// Daemon is a clauderond run by a test.
type Daemon struct {
	Cmd     *exec.Cmd
	LogPath string
	done    chan struct{}
}

// Log is everything the daemon wrote.
func (d *Daemon) Log() string { b, _ := os.ReadFile(d.LogPath); return string(b) }

// Tail is the daemon log's last n lines.
func (d *Daemon) Tail(n int) string {
	l := strings.Split(d.Log(), "\n")
	return strings.Join(l[max(0, len(l)-n):], "\n")
}

// Exited reports whether the daemon has exited.
func (d *Daemon) Exited() bool {
	select {
	case <-d.done:
		return true
	default:
		return false
	}
}

// StartDaemon runs argv (a clauderond command line, possibly wrapped in
// setpriv) with env as its whole environment, waits until ready() is true
// (e.g. `clauderon status` exits 0), and stops it with SIGTERM in the
// test's cleanup, printing the log tail when the test failed.
func StartDaemon(t testing.TB, argv, env []string, ready func() bool) *Daemon {
	t.Helper()
	d := &Daemon{LogPath: filepath.Join(t.TempDir(), "daemon.log"), done: make(chan struct{})}
	logf, err := os.Create(d.LogPath)
	if err != nil {
		t.Fatal(err)
	}
	d.Cmd = exec.Command(argv[0], argv[1:]...)
	d.Cmd.Env = env
	d.Cmd.Stdout, d.Cmd.Stderr = logf, logf
	if err := d.Cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { d.Cmd.Wait(); logf.Close(); close(d.done) }()
	t.Cleanup(func() {
		d.Cmd.Process.Signal(syscall.SIGTERM)
		select {
		case <-d.done:
		case <-time.After(30 * time.Second):
			d.Cmd.Process.Kill()
			<-d.done
		}
		if t.Failed() {
			t.Logf("daemon log tail:\n%s", d.Tail(30))
		}
	})
	deadline := time.Now().Add(90 * time.Second)
	for !ready() {
		select {
		case <-d.done:
			t.Fatalf("clauderond exited:\n%s", d.Tail(40))
		case <-time.After(200 * time.Millisecond):
		}
		if time.Now().After(deadline) {
			t.Fatalf("clauderond not ready within 90s:\n%s", d.Tail(40))
		}
	}
	return d
}

// AsUser runs args as the Unix user who (with its groups) and an empty
// environment; "root" runs them as is.
func AsUser(t testing.TB, who string, args ...string) (string, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if who == "root" {
		out, err := exec.CommandContext(ctx, args[0], args[1:]...).CombinedOutput()
		return string(out), err
	}
	u, err := user.Lookup(who)
	if err != nil {
		t.Fatal(err)
	}
	full := append([]string{"--reuid", u.Uid, "--regid", u.Gid, "--init-groups", "--", "env", "-i", "PATH=/usr/bin:/bin"}, args...)
	out, err := exec.CommandContext(ctx, "setpriv", full...).CombinedOutput()
	return string(out), err
}

// WaitFor polls cond until it holds, failing after limit.
func WaitFor(t testing.TB, what string, limit time.Duration, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(limit)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("%s: not within %s", what, limit)
		}
		time.Sleep(200 * time.Millisecond)
	}
}

// RandomHex is n random bytes in hex.
func RandomHex(n int) string {
	b := make([]byte, n)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// Teardown runs `clauderond --config cfg teardown` (the daemon must have
// stopped: a running daemon refuses) and fails the test if a clauderon
// nft table is left.
func Teardown(t testing.TB, bin, cfg string) {
	t.Helper()
	if out, err := exec.Command(filepath.Join(bin, "clauderond"), "--config", cfg, "teardown").CombinedOutput(); err != nil {
		t.Errorf("clauderond teardown: %v\n%s", err, out)
	}
	for _, fam := range []string{"inet", "bridge", "arp"} {
		if exec.Command("nft", "list", "table", fam, "clauderon").Run() == nil {
			t.Errorf("table %s clauderon is left after teardown", fam)
			exec.Command("nft", "delete", "table", fam, "clauderon").Run()
		}
	}
}
