//go:build e2e

// Package e2e is clauderond's end-to-end suite. It drives the product only
// from the outside, like an operator: it builds bin/clauderond and
// bin/clauderon, writes a YAML config, runs the daemon as a subprocess, and
// uses real Docker containers with real clients (curl, git, Python, Node,
// the Claude Code CLI) against fake upstreams on loopback. It imports only
// the standard library, appliance/api and the scripts/fakeapi fakes — never
// the product's internals.
//
// Run it as root with Docker: `bash scripts/test.sh e2e` (which also builds
// the images), or `go test -tags e2e -v ./scripts/e2e/` with the
// CLAUDERON_E2E_*_IMAGE variables from scripts/images.sh. Every container,
// network, namespace and nft table it creates carries the prefix
// "clauderon-e2e" and is removed by name at the end and swept at the start.
package e2e

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"strings"
	"sync"
	"testing"
	"time"
)

// prefix names everything the suite creates.
const prefix = "clauderon-e2e"

var keep = flag.Bool("keep", false, "keep the daemon state dir and logs after the run (for debugging)")

func TestMain(m *testing.M) {
	flag.Parse()
	if os.Geteuid() != 0 {
		fmt.Fprintln(os.Stderr, "e2e: must run as root (Docker, nftables, network namespaces); FAIL")
		os.Exit(1)
	}
	sweep()
	code := m.Run()
	if s := current; s != nil {
		s.close()
	}
	sweep()
	os.Exit(code)
}

// sweep removes leftovers of an earlier run, by name prefix only.
func sweep() {
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	if ids := lines(run(ctx, "docker", "ps", "-aq", "--filter", "name=^/"+prefix)); len(ids) > 0 {
		run(ctx, "docker", append([]string{"rm", "-f"}, ids...)...)
	}
	for _, n := range lines(run(ctx, "docker", "network", "ls", "--format", "{{.Name}}")) {
		if strings.HasPrefix(n, prefix) {
			run(ctx, "docker", "network", "rm", n)
		}
	}
	for _, n := range lines(run(ctx, "ip", "netns", "list")) {
		if name := strings.Fields(n)[0]; strings.HasPrefix(name, prefix) {
			run(ctx, "ip", "netns", "delete", name)
		}
	}
	for _, l := range lines(run(ctx, "ip", "-o", "link", "show")) {
		if f := strings.Fields(l); len(f) > 1 {
			if name := strings.Split(strings.TrimSuffix(f[1], ":"), "@")[0]; strings.HasPrefix(name, vethPrefix) {
				run(ctx, "ip", "link", "delete", name)
			}
		}
	}
}

// run executes a command and returns its combined output, ignoring errors
// (for cleanup paths).
func run(ctx context.Context, name string, args ...string) string {
	out, _ := exec.CommandContext(ctx, name, args...).CombinedOutput()
	return string(out)
}

func lines(s string) []string {
	var out []string
	for _, l := range strings.Split(s, "\n") {
		if l = strings.TrimSpace(l); l != "" {
			out = append(out, l)
		}
	}
	return out
}

var (
	currentOnce sync.Once
	current     *suite
	currentErr  error
)

// env returns the shared suite (daemon, fakes, outside host), setting it up
// on first use. A setup failure fails every test that needs it, loudly.
func env(t testing.TB) *suite {
	t.Helper()
	currentOnce.Do(func() {
		current, currentErr = newSuite()
	})
	if currentErr != nil {
		t.Fatalf("e2e setup failed: %v", currentErr)
	}
	return current
}
