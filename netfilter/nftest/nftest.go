// Package nftest holds test-only helpers for real-kernel netfilter tests:
// root-or-skip with the CI switch, throwaway network namespaces entered on
// a locked thread, and `nft list table` output for golden comparison.
// Production code must never import it (the root deps test enforces it).
package nftest

import (
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"os"
	"os/exec"
	"regexp"
	"runtime"
	"testing"

	"github.com/vishvananda/netlink"
	"github.com/vishvananda/netns"
)

// RequireRoot skips t without root, unless CLAUDERON_REQUIRE_ROOT_TESTS=1,
// in which case the missing root is a failure.
func RequireRoot(t testing.TB) {
	t.Helper()
	if os.Geteuid() == 0 {
		return
	}
	if os.Getenv("CLAUDERON_REQUIRE_ROOT_TESTS") == "1" {
		t.Fatal("root required (CLAUDERON_REQUIRE_ROOT_TESTS=1 forbids skipping)")
	}
	t.Skip("needs root (set CLAUDERON_REQUIRE_ROOT_TESTS=1 to make this a failure)")
}

// Suffix returns a short random hex string for unique names.
func Suffix() string {
	b := make([]byte, 3)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}

// InNetNS locks the calling goroutine to its thread, creates a fresh
// network namespace, switches the thread into it and brings lo up. It
// returns the new namespace and a restore func that the caller must defer
// on the same goroutine: it switches back, closes both handles and
// unlocks the thread. (Not t.Cleanup: cleanups run on another goroutine.)
func InNetNS(t testing.TB) (netns.NsHandle, func()) {
	t.Helper()
	RequireRoot(t)
	runtime.LockOSThread()
	orig, err := netns.Get()
	if err != nil {
		runtime.UnlockOSThread()
		t.Fatalf("netns.Get: %v", err)
	}
	ns, err := netns.New() // also switches this thread into it
	if err != nil {
		orig.Close()
		runtime.UnlockOSThread()
		t.Fatalf("netns.New: %v", err)
	}
	restore := func() {
		if err := netns.Set(orig); err != nil {
			// The thread is stuck in the test namespace: never unlock it,
			// so the runtime retires it instead of reusing it.
			t.Errorf("restoring network namespace: %v", err)
			return
		}
		ns.Close()
		orig.Close()
		runtime.UnlockOSThread()
	}
	lo, err := netlink.LinkByName("lo")
	if err == nil {
		err = netlink.LinkSetUp(lo)
	}
	if err != nil {
		restore()
		t.Fatalf("bringing lo up: %v", err)
	}
	return ns, restore
}

// NFTList returns `nft -s list table FAMILY NAME` run inside ns (stateless:
// no counter values), with the table name replaced by "TABLE" so goldens
// do not depend on per-test names.
func NFTList(t testing.TB, ns netns.NsHandle, family, name string) string {
	t.Helper()
	out, err := InNS(ns, func() ([]byte, error) {
		return exec.Command("nft", "-s", "list", "table", family, name).CombinedOutput()
	})
	if err != nil {
		t.Fatalf("nft list table %s %s: %v\n%s", family, name, err, out)
	}
	re := regexp.MustCompile(`\b` + regexp.QuoteMeta(name) + `\b`)
	return string(re.ReplaceAll(out, []byte("TABLE")))
}

// InNS runs f on a locked thread switched into ns (or left in the
// current namespace if ns is netns.None()) and switches the thread back
// afterwards, even if f moved it. Child processes that f starts inherit
// the namespace.
func InNS[T any](ns netns.NsHandle, f func() (T, error)) (T, error) {
	type result struct {
		v   T
		err error
	}
	ch := make(chan result, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := netns.Get()
		if err != nil {
			runtime.UnlockOSThread()
			ch <- result{err: err}
			return
		}
		defer orig.Close()
		if ns.IsOpen() {
			if err := netns.Set(ns); err != nil {
				runtime.UnlockOSThread()
				ch <- result{err: err}
				return
			}
		}
		v, err := f()
		if netns.Set(orig) == nil {
			runtime.UnlockOSThread()
		} // else: leave the thread locked so the runtime discards it
		ch <- result{v, err}
	}()
	r := <-ch
	return r.v, r.err
}

// Run runs a command inside ns and returns its combined output.
func Run(ns netns.NsHandle, name string, args ...string) (string, error) {
	out, err := InNS(ns, func() ([]byte, error) {
		var b bytes.Buffer
		cmd := exec.Command(name, args...)
		cmd.Stdout, cmd.Stderr = &b, &b
		err := cmd.Run()
		return b.Bytes(), err
	})
	return string(out), err
}

// MustRun runs a command on the host and fails the test with its output if
// it fails.
func MustRun(t testing.TB, args ...string) {
	t.Helper()
	if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
		t.Fatalf("%v: %v\n%s", args, err, out)
	}
}
