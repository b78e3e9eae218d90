package appliance

import (
	"fmt"
	"strings"
	"time"

	"github.com/clauderon/clauderond/appliance/config"
	"github.com/clauderon/clauderond/tlsmitm/localca"
)

// DefaultCARotationGrace is how long `clauderond ca rotate` keeps the
// replaced root trusted.
const DefaultCARotationGrace = localca.DefaultRotationGrace

// interceptedHosts are the rule hosts (exact names and "*.suffix"
// patterns): the names the local CA must be allowed to sign for.
func interceptedHosts(cfg *config.Config) []string {
	rules := convertRules(cfg)
	hosts := make([]string, 0, len(rules))
	for _, r := range rules {
		hosts = append(hosts, r.Host)
	}
	return hosts
}

// loadCA loads or creates the local CA constrained to cfg's rule hosts and
// warns when it is not name-constrained (an older or an operator's CA).
func (d *daemon) loadCA() (*localca.CA, error) {
	ca, err := localca.LoadOrCreateWith(d.cfg.StateDir, localca.Options{Hosts: interceptedHosts(d.cfg)})
	if err != nil {
		return nil, err
	}
	if n := ca.Notice(); n != "" {
		d.log.Warn(n)
	}
	d.log.Info("local CA", "root", ca.CertPath(), "sha256", ca.Fingerprint(), "permitted_domains", strings.Join(ca.PermittedDNSDomains(), ","),
		"intermediate", ca.Intermediate() != nil, "previous_roots", len(ca.Previous()))
	return ca, nil
}

// checkCAHosts refuses a configuration whose rule hosts the running CA
// may not sign for (the error names them and says to rotate).
func (d *daemon) checkCAHosts(cfg *config.Config) error {
	if d.ca == nil {
		return nil
	}
	return d.ca.CheckHosts(interceptedHosts(cfg))
}

// RotateCA replaces the local CA root in cfg's state dir with one
// constrained to cfg's rule hosts; the replaced root stays in proxy-ca.pem
// (trusted by new sessions) for grace. It returns what to tell the operator.
func RotateCA(cfg *config.Config, grace time.Duration) (string, error) {
	if err := cfg.Validate(); err != nil {
		return "", fmt.Errorf("invalid configuration: %w", err)
	}
	if err := prepareStateDir(cfg.StateDir); err != nil {
		return "", err
	}
	res, err := localca.Rotate(cfg.StateDir, localca.Options{Hosts: interceptedHosts(cfg), Grace: grace})
	if err != nil {
		return "", fmt.Errorf("rotating the local CA in %s: %w", cfg.StateDir, err)
	}
	var b strings.Builder
	fmt.Fprintf(&b, "new local CA root %s/%s\n  sha256 %s\n  permits %s (and their subdomains); no IP addresses\n",
		cfg.StateDir, localca.CertFile, res.Fingerprint, strings.Join(res.PermittedDomains, ", "))
	if res.PreviousFingerprint == "" {
		return b.String(), nil
	}
	fmt.Fprintf(&b, "previous root sha256 %s: its key is gone; it stays in %s (trusted by sessions created from now on) until %s\n",
		res.PreviousFingerprint, localca.CertFile, res.GraceUntil.Local().Format(time.RFC3339))
	b.WriteString("next: restart clauderond (e.g. `sudo systemctl restart clauderond`) so it signs with the new root, " +
		"and recreate sessions started before the rotation (their trust bundle holds only the previous root)\n")
	return b.String(), nil
}
