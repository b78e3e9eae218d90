package clauderond_test

import (
	"os/exec"
	"strings"
	"testing"
)

const module = "github.com/clauderon/clauderond"

// boundary is one package's forbidden dependencies and why they are.
type boundary struct {
	deps []string // module-relative ("/tlsmitm") or full third-party paths
	why  string
}

const (
	viper     = "github.com/spf13/viper"
	docker    = "github.com/docker/docker"
	nftables  = "github.com/google/nftables"
	certmagic = "github.com/caddyserver/certmagic"
	miekgDNS  = "github.com/miekg/dns"
	k8s       = "k8s.io"
)

// forbidden lists, for each package, the imports it must never depend on,
// directly or transitively, with the reason (DESIGN.md's package table:
// data flows one way, cmd → appliance → parts, and the parts never import
// each other).
var forbidden = map[string]boundary{
	"injector": {[]string{"/appliance", "/tlsmitm", "/dnsredir", "/netfilter", viper, docker, nftables, certmagic, miekgDNS},
		"the credential rules are pure policy: tlsmitm asks them through an interface the appliance fills"},
	"tlsmitm": {[]string{"/injector", "/dnsredir", "/netfilter", "/appliance", viper, docker, nftables},
		"the terminator gets identity, policy and credentials through small interfaces, so it is tested without them"},
	"tlsmitm/localca": {[]string{"/tlsmitm", "/injector", "/dnsredir", "/netfilter", "/appliance", viper, docker},
		"the CA is files and x509 only; the CLI, the daemon and the tests load it alike"},
	"dnsredir": {[]string{"/netfilter", "/tlsmitm", "/injector", "/appliance", viper, docker, nftables, certmagic},
		"the DNS shim decides nothing itself: the appliance hands it a Policy and a Resolver"},
	"netfilter": {[]string{"/dnsredir", "/tlsmitm", "/injector", "/appliance", viper, docker, certmagic, miekgDNS},
		"the ruleset enforces a Spec and never decides policy or follows Docker"},
	"appliance/api": {[]string{"/netfilter", "/dnsredir", "/tlsmitm", "/injector", viper, docker, nftables, certmagic, miekgDNS},
		"the CLI imports the API types: they must not drag the daemon's parts into it"},
	"appliance/audit": {[]string{"/netfilter", "/dnsredir", "/tlsmitm", "/injector", viper, docker, nftables, certmagic},
		"the audit log is read by the CLI and verified offline; it knows records, not parts"},
	"appliance/config": {[]string{"/netfilter", "/dnsredir", "/tlsmitm", docker, nftables, certmagic},
		"configuration is values: the appliance converts them into each part's options"},
	"appliance/bridge": {[]string{"/netfilter", "/tlsmitm", "/dnsredir", "/injector"},
		"the network (Docker's, or the CNI's) is separate from the rules that confine it"},
	"appliance/identity": {[]string{"/netfilter", "/tlsmitm", "/dnsredir", "/injector", "/appliance/kubepods", nftables, k8s},
		"who holds an address (Docker) never enforces anything; callers fail closed on unknown"},
	"appliance/kubepods": {[]string{"/netfilter", "/tlsmitm", "/dnsredir", "/injector", "/appliance/config", nftables, viper, k8s},
		"who holds an address (Kubernetes) never enforces anything; a bounded list+watch of its own, no client-go " +
			"(Docker's types come in only through identity.Container, the value both sources return)"},
	"appliance/envvars": {[]string{"/netfilter", "/dnsredir", "/tlsmitm", "/injector", "/appliance/api", "/appliance/config", viper, docker, nftables, certmagic, miekgDNS},
		"an environment reader shared by the config loader and the CLI: it knows strings, not settings"},
	"appliance/ratelog": {[]string{"/netfilter", "/dnsredir", "/tlsmitm", "/injector", "/appliance/config", viper, docker, nftables, certmagic, miekgDNS},
		"a slog.Handler and nothing else: the appliance hands loggers built on it to the parts, which never import it"},
	"cmd/clauderon": {[]string{"/netfilter", "/dnsredir", "/tlsmitm", "/injector", "/appliance/config", "/appliance/bridge", viper, docker, nftables, certmagic, miekgDNS},
		"the CLI only talks to the daemon's socket; a group member needs no privilege and no part"},
	"cmd/clauderond": {[]string{"/netfilter", "/dnsredir", "/tlsmitm", "/injector"},
		"the daemon's main reaches every part through appliance, the only package that knows them all"},
}

// testOnly packages may never be imported by production code.
var testOnly = []string{"/appliance/bridge/bridgetest", "/appliance/internal/dockertest", "/appliance/internal/testutil", "/netfilter/nftest", "/dnsredir/dnstest", "/tlsmitm/tlstest"}

// direct lists packages whose rule is about their own imports only: the
// daemon's main reaches every part through appliance, but must not import
// the parts itself.
var direct = map[string]bool{"cmd/clauderond": true}

func deps(t *testing.T, pkg string) []string {
	t.Helper()
	args := []string{"list", "-deps", "-f", "{{.ImportPath}}", module + "/" + pkg}
	if direct[pkg] {
		args = []string{"list", "-f", `{{join .Imports "\n"}}`, module + "/" + pkg}
	}
	out, err := exec.Command("go", args...).Output()
	if err != nil {
		t.Fatalf("go list -deps %s: %v", pkg, err)
	}
	return strings.Fields(string(out))
}

func TestDeps_PackageBoundaries(t *testing.T) {
	for pkg, rule := range forbidden {
		t.Run(pkg, func(t *testing.T) {
			for _, d := range deps(t, pkg) {
				for _, b := range rule.deps {
					full := b
					if strings.HasPrefix(b, "/") {
						full = module + b
					}
					self := module + "/" + pkg
					if d == self || strings.HasPrefix(d, self+"/") {
						continue // a package's own subtree is not a forbidden edge
					}
					if d == full || strings.HasPrefix(d, full+"/") {
						t.Errorf("%s depends on %s, which it must not: %s", pkg, d, rule.why)
					}
				}
			}
		})
	}
}

func TestDeps_TestHelpersStayInTests(t *testing.T) {
	out, err := exec.Command("go", "list", "-f", "{{.ImportPath}}", module+"/...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	for _, pkg := range strings.Fields(string(out)) {
		if pkg == module || strings.Contains(pkg, "test") {
			continue
		}
		for _, d := range deps(t, strings.TrimPrefix(pkg, module+"/")) {
			for _, h := range testOnly {
				if d == module+h {
					t.Errorf("production package %s imports test helper %s", pkg, d)
				}
			}
		}
	}
}

// TestDeps_NamedPackagesExist keeps the table honest: a rule about a
// package that was renamed or removed would silently check nothing.
func TestDeps_NamedPackagesExist(t *testing.T) {
	out, err := exec.Command("go", "list", module+"/...").Output()
	if err != nil {
		t.Fatalf("go list: %v", err)
	}
	have := map[string]bool{}
	for _, p := range strings.Fields(string(out)) {
		have[p] = true
	}
	for pkg, rule := range forbidden {
		if !have[module+"/"+pkg] {
			t.Errorf("forbidden names %s, which is not a package of the module any more", pkg)
		}
		for _, d := range rule.deps {
			if strings.HasPrefix(d, "/") && !have[module+d] {
				t.Errorf("forbidden[%s] names %s, which is not a package of the module any more", pkg, d)
			}
		}
	}
	for _, h := range testOnly {
		if !have[module+h] {
			t.Errorf("testOnly names %s, which is not a package of the module any more", h)
		}
	}
}
