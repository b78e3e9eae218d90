//go:build e2e

package e2e

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"net"
	"net/http"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"time"

	"github.com/clauderon/clauderond/scripts/fakeapi"
)

// Addresses and names of the suite's world.
const (
	networkName = prefix           // docker network managed by the daemon
	bridgeName  = "clauderon-e2e0" // its Linux bridge
	subnet      = "10.233.71.0/24" // its subnet
	gateway     = "10.233.71.1"    // the daemon's listeners
	spoofIP     = "10.233.71.250"  // forged source in the spoofing test
	nftTable    = "clauderon"      // the daemon's nft table (inet family)
	tlsPort     = 8443             // listen.tls_port
	dnsPort     = 8053             // listen.dns_port
	gitMarker   = "clauderon-e2e git marker 7f3a"
	echoHost    = "api.openai.com" // intercepted host: the OpenAI fake for Codex's paths, the echo fake for the rest
	passHost    = "passthrough.clauderon-e2e.test"
	deniedHost  = "denied.clauderon-e2e.test"
	placeholder = "sk-ant-oat01-clauderon-proxy-placeholder"
)

// suite is the shared world of one test run.
type suite struct {
	root    string // repository root
	tmp     string // scratch dir: config, CA, state, logs
	bin     string // bin/ with clauderond, clauderon
	hostBin string // host build of e2etool (recorder in the outside netns)

	scratchImage, debianImage string

	tokens  map[string]string // credential name → real test value
	log     *fakeapi.Log
	servers []*fakeapi.Server
	caFile  string // fake upstreams' CA (daemon trusts it for upstreams)

	config  string
	state   string
	daemon  *daemon
	outside *outsideHost
}

func randomHex(n int) string {
	b := make([]byte, n)
	if _, err := rand.Read(b); err != nil {
		panic(err)
	}
	return hex.EncodeToString(b)
}

func newSuite() (s *suite, err error) {
	s = &suite{log: &fakeapi.Log{}}
	defer func() {
		if err != nil {
			s.close()
		}
	}()
	_, file, _, _ := runtime.Caller(0)
	s.root = filepath.Clean(filepath.Join(filepath.Dir(file), "..", ".."))
	if s.tmp, err = os.MkdirTemp("", prefix+"-"); err != nil {
		return s, err
	}
	s.tokens = map[string]string{
		"anthropic": "sk-ant-oat01-E2E-REAL-" + randomHex(16),
		"github":    "ghp_E2EREAL" + randomHex(16),
		"openai":    "sk-proj-E2E-REAL-" + randomHex(16),
	}
	steps := []struct {
		name string
		f    func() error
	}{
		{"building bin/clauderond and bin/clauderon", s.buildBinaries},
		{"building the test images", s.images},
		{"starting the fake upstreams", s.startUpstreams},
		{"creating the outside host", s.startOutside},
		{"checking no other clauderond owns the nft table", checkTableFree},
		{"writing the daemon config", s.writeConfig},
		{"starting the daemon", func() error { return s.startDaemon(context.Background()) }},
	}
	for _, st := range steps {
		start := time.Now()
		if err := st.f(); err != nil {
			return s, fmt.Errorf("%s: %w", st.name, err)
		}
		fmt.Fprintf(os.Stderr, "e2e: %s (%.1fs)\n", st.name, time.Since(start).Seconds())
	}
	return s, nil
}

func (s *suite) buildBinaries() error {
	s.bin = filepath.Join(s.root, "bin")
	s.hostBin = filepath.Join(s.tmp, "hostbin")
	for _, b := range []struct{ out, pkg []string }{
		{[]string{"-o", s.bin + "/"}, []string{"./cmd/clauderond", "./cmd/clauderon"}},
		{[]string{"-o", s.hostBin + "/"}, []string{"./scripts/e2e/e2etool"}},
	} {
		args := append(append([]string{"build", "-trimpath", "-buildvcs=false"}, b.out...), b.pkg...)
		cmd := exec.Command("go", args...)
		cmd.Dir = s.root
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			return fmt.Errorf("go %s: %w\n%s", strings.Join(args, " "), err, out)
		}
	}
	return nil
}

// images takes the image tags from the environment (scripts/test.sh exports
// them) or runs scripts/images.sh. A missing image is a failure, never a skip.
func (s *suite) images() error {
	s.scratchImage = os.Getenv("CLAUDERON_E2E_SCRATCH_IMAGE")
	s.debianImage = os.Getenv("CLAUDERON_E2E_DEBIAN_IMAGE")
	if s.scratchImage == "" || s.debianImage == "" {
		cmd := exec.Command("bash", filepath.Join(s.root, "scripts/images.sh"), "all")
		cmd.Stderr = os.Stderr
		out, err := cmd.Output()
		if err != nil {
			return fmt.Errorf("scripts/images.sh: %w", err)
		}
		for _, l := range lines(string(out)) {
			k, v, _ := strings.Cut(l, "=")
			switch k {
			case "CLAUDERON_E2E_SCRATCH_IMAGE":
				s.scratchImage = v
			case "CLAUDERON_E2E_DEBIAN_IMAGE":
				s.debianImage = v
			}
		}
	}
	for _, img := range []string{s.scratchImage, s.debianImage} {
		if img == "" {
			return errors.New("scripts/images.sh printed no image tag")
		}
		if out, err := exec.Command("docker", "image", "inspect", "--format", "{{.Id}}", img).CombinedOutput(); err != nil {
			return fmt.Errorf("image %s missing: %s", img, out)
		}
	}
	return nil
}

// startUpstreams starts the fakes for api.anthropic.com, github.com,
// api.openai.com (the OpenAI fake for /v1/responses and /v1/models, the
// echo for its other paths) and an echo server for the other intercepted
// and passthrough hosts.
func (s *suite) startUpstreams() error {
	ca, err := fakeapi.NewCA("clauderon e2e upstream CA")
	if err != nil {
		return err
	}
	s.caFile = filepath.Join(s.tmp, "upstream-ca.pem")
	if err := ca.WriteFile(s.caFile); err != nil {
		return err
	}
	gitRoot := filepath.Join(s.tmp, "git")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := fakeapi.CreateRepo(ctx, gitRoot, "acme", "private", gitMarker+"\n"); err != nil {
		return err
	}
	for _, u := range []struct {
		h     http.Handler
		names []string
	}{
		{&fakeapi.Anthropic{OAuthToken: s.tokens["anthropic"], Log: s.log}, []string{"api.anthropic.com"}},
		{&fakeapi.Git{Root: gitRoot, Token: s.tokens["github"], Log: s.log}, []string{"github.com"}},
		{&fakeapi.Echo{Name: "echo", Secrets: s.tokens, Log: s.log}, []string{"api.github.com", "registry.npmjs.org", passHost}},
		{(&fakeapi.OpenAI{APIKey: s.tokens["openai"], Log: s.log}).WithFallback(&fakeapi.Echo{Name: "echo", Secrets: s.tokens, Log: s.log}),
			[]string{"api.openai.com"}},
	} {
		cfg, err := ca.ServerTLS(false, u.names...)
		if err != nil {
			return err
		}
		srv, err := fakeapi.Serve(u.h, cfg)
		if err != nil {
			return err
		}
		s.servers = append(s.servers, srv)
	}
	return nil
}

func (s *suite) upstreamAddr(host string) string {
	switch host {
	case "api.anthropic.com":
		return s.servers[0].Addr
	case "github.com":
		return s.servers[1].Addr
	case "api.openai.com":
		return s.servers[3].Addr
	}
	return s.servers[2].Addr
}

// close tears everything down: daemon (with teardown of its network and
// rules), outside host, fakes.
func (s *suite) close() {
	if s.daemon != nil {
		// The final status (counters show what the rules dropped during the run).
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		out, _ := s.cli(ctx, "status")
		cancel()
		fmt.Fprintf(os.Stderr, "e2e: final `clauderon status`:\n%s\n", out)
		s.daemon.stop()
		s.teardown()
	}
	if s.outside != nil {
		s.outside.close()
	}
	for _, srv := range s.servers {
		_ = srv.Close()
	}
	if s.tmp != "" && !*keep {
		_ = os.RemoveAll(s.tmp)
	} else if s.tmp != "" {
		fmt.Fprintf(os.Stderr, "e2e: kept %s\n", s.tmp)
	}
}

// checkTableFree refuses to run next to another clauderond: the daemon's
// nft table name is fixed (inet clauderon), so the suite would take over
// (and finally tear down) a production daemon's rules. A table left by an
// earlier run of this suite (it names our bridge) is removed.
func checkTableFree() error {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out, err := exec.CommandContext(ctx, "nft", "list", "table", "inet", nftTable).CombinedOutput()
	if err != nil {
		return nil // no such table
	}
	if !strings.Contains(string(out), `"`+bridgeName+`"`) {
		return fmt.Errorf("table inet %s already exists and is not ours (another clauderond on this host?); stop it or run the suite elsewhere", nftTable)
	}
	fmt.Fprintf(os.Stderr, "e2e: removing table inet %s left by an earlier run\n", nftTable)
	if out, err := exec.CommandContext(ctx, "nft", "delete", "table", "inet", nftTable).CombinedOutput(); err != nil {
		return fmt.Errorf("deleting leftover table: %w: %s", err, out)
	}
	return nil
}

// hostAddrs are the host's own IPv4 addresses (for the host-services test).
func hostAddrs() []string {
	var out []string
	addrs, _ := net.InterfaceAddrs()
	for _, a := range addrs {
		if ipn, ok := a.(*net.IPNet); ok && ipn.IP.To4() != nil && !ipn.IP.IsLoopback() {
			out = append(out, ipn.IP.String())
		}
	}
	return out
}
