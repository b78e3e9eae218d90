package clauderond_test

import (
	"os/exec"
	"strings"
	"testing"
)

const module = "github.com/clauderon/clauderond"

// forbidden lists, for each package pattern, the imports (module-relative for
// our own packages, full paths for third-party modules) it must never
// depend on, directly or transitively. It is the table in STYLE.md's layout.
var forbidden = map[string][]string{
	"injector":         {"/appliance", "/tlsmitm", "/dnsredir", "/netfilter", "github.com/spf13/viper", "github.com/docker/docker", "github.com/google/nftables", "github.com/caddyserver/certmagic", "github.com/miekg/dns"},
	"tlsmitm":          {"/injector", "/dnsredir", "/netfilter", "/appliance", "github.com/spf13/viper", "github.com/docker/docker", "github.com/google/nftables"},
	"tlsmitm/localca":  {"/tlsmitm", "/injector", "/dnsredir", "/netfilter", "/appliance", "github.com/spf13/viper", "github.com/docker/docker"},
	"dnsredir":         {"/netfilter", "/tlsmitm", "/injector", "/appliance", "github.com/spf13/viper", "github.com/docker/docker", "github.com/google/nftables", "github.com/caddyserver/certmagic"},
	"netfilter":        {"/dnsredir", "/tlsmitm", "/injector", "/appliance", "github.com/spf13/viper", "github.com/docker/docker", "github.com/caddyserver/certmagic", "github.com/miekg/dns"},
	"appliance/api":    {"/netfilter", "/dnsredir", "/tlsmitm", "/injector", "github.com/spf13/viper", "github.com/docker/docker", "github.com/google/nftables", "github.com/caddyserver/certmagic", "github.com/miekg/dns"},
	"appliance/audit":  {"/netfilter", "/dnsredir", "/tlsmitm", "/injector", "github.com/spf13/viper", "github.com/docker/docker", "github.com/google/nftables", "github.com/caddyserver/certmagic"},
	"appliance/config": {"/netfilter", "/dnsredir", "/tlsmitm", "github.com/docker/docker", "github.com/google/nftables", "github.com/caddyserver/certmagic"},
	"appliance/bridge": {"/netfilter", "/tlsmitm", "/dnsredir", "/injector"},
	"cmd/clauderon":    {"/netfilter", "/dnsredir", "/tlsmitm", "/injector", "/appliance/config", "/appliance/bridge", "github.com/spf13/viper", "github.com/docker/docker", "github.com/google/nftables", "github.com/caddyserver/certmagic", "github.com/miekg/dns"},
	"cmd/clauderond":   {"/netfilter", "/dnsredir", "/tlsmitm", "/injector"},
}

// testOnly packages may never be imported by production code.
var testOnly = []string{"/appliance/bridge/bridgetest", "/netfilter/nftest", "/dnsredir/dnstest", "/tlsmitm/tlstest"}

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
	for pkg, bad := range forbidden {
		t.Run(pkg, func(t *testing.T) {
			for _, d := range deps(t, pkg) {
				for _, b := range bad {
					full := b
					if strings.HasPrefix(b, "/") {
						full = module + b
					}
					self := module + "/" + pkg
					if d == self || strings.HasPrefix(d, self+"/") {
						continue // a package's own subtree is not a forbidden edge
					}
					if d == full || strings.HasPrefix(d, full+"/") {
						t.Errorf("%s depends on %s (forbidden by the layout table)", pkg, d)
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
