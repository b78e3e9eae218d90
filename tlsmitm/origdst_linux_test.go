package tlsmitm

import (
	"net"
	"net/netip"
	"os"
	"os/exec"
	"runtime"
	"testing"

	"golang.org/x/sys/unix"

	"github.com/clauderon/clauderond/netfilter/nftest"
)

// TestOriginalDst_AfterNftRedirect redirects 127.0.0.2:443 to a listener in
// a throwaway network namespace and checks that SO_ORIGINAL_DST reports the
// address the client dialled, and that a direct connection falls back to
// the local address.
func TestOriginalDst_AfterNftRedirect(t *testing.T) {
	nftest.RequireRoot(t)
	if _, err := exec.LookPath("nft"); err != nil {
		t.Skip("nft not installed")
	}
	runtime.LockOSThread() // namespace changes are per thread; restored below on this thread
	orig, err := os.Open("/proc/thread-self/ns/net")
	if err != nil {
		runtime.UnlockOSThread()
		t.Fatal(err)
	}
	defer orig.Close()
	if err := unix.Unshare(unix.CLONE_NEWNET); err != nil {
		runtime.UnlockOSThread()
		t.Skipf("unshare(CLONE_NEWNET): %v", err)
	}
	defer func() {
		if err := unix.Setns(int(orig.Fd()), unix.CLONE_NEWNET); err != nil {
			t.Errorf("restoring network namespace: %v; leaving this thread locked so it dies", err)
			return
		}
		runtime.UnlockOSThread()
	}()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	port := ln.Addr().(*net.TCPAddr).Port
	for _, args := range [][]string{
		{"ip", "link", "set", "lo", "up"},
		{"nft", "add table ip clauderon_test"},
		{"nft", "add chain ip clauderon_test out { type nat hook output priority -100 ; }"},
		{"nft", "add rule ip clauderon_test out ip daddr 127.0.0.2 tcp dport 443 redirect to :" + itoa(port)},
	} {
		if out, err := exec.Command(args[0], args[1:]...).CombinedOutput(); err != nil {
			t.Fatalf("%v: %v\n%s", args, err, out)
		}
	}
	check := func(dial string, want netip.AddrPort) {
		c, err := net.Dial("tcp", dial)
		if err != nil {
			t.Fatal(err)
		}
		defer c.Close()
		s, err := ln.Accept()
		if err != nil {
			t.Fatal(err)
		}
		defer s.Close()
		if got := originalDst(s); got != want {
			t.Errorf("dialled %s: originalDst = %s, want %s", dial, got, want)
		}
	}
	check("127.0.0.2:443", netip.MustParseAddrPort("127.0.0.2:443"))
	direct := netip.MustParseAddrPort(ln.Addr().String())
	check(direct.String(), direct)
}
